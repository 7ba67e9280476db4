"""The ``drs`` sampler: discriminator rejection sampling (Azadi et al. 2019, "Discriminator Rejection Sampling").

The optimal discriminator D*(x) = p_data(x) / (p_data(x) + p_g(x)) has the logit
D~(x) = log p_data(x) / p_g(x), the density ratio rejection sampling needs: accepting
a candidate x ~ p_g with probability exp(D~(x) - D~_M), D~_M being the largest
logit, draws from p_data exactly. The paper estimates D~_M from a burn-in of
candidates (and raises it whenever a larger logit turns up) and accepts with

    p(x) = sigmoid(F(x)),  F(x) = D~(x) - D~_M - log(1 - exp(D~(x) - D~_M - eps)) - gamma,

which is exp(D~(x) - D~_M) for gamma = 0 (up to eps, which keeps the log finite at the
best candidate). A larger gamma lowers every acceptance; gamma -> -inf accepts every
candidate (the plain prior). With gamma set per batch to a percentile of F, as in
the paper's experiments, acceptance is about proportional to the density ratio
for most candidates and saturates at 1 for the best ones, so the sampler corrects
the generator's distribution instead of keeping only its favourites (``ranking``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from gentoolkit import DiscriminatorScored, GentoolError, LatentModel, Model, Sampler, Samples, eval_mode
from gentoolkit_ranking.candidates import scored_candidates

EPS = 1e-6  # the paper's epsilon: log(1 - exp(-EPS)) = -13.8 for the candidate with the largest logit


@dataclass(frozen=True)
class Gamma:
    """The shift of F: a fixed value, or the given percentile of F over each batch of candidates."""

    value: float
    percentile: bool

    @classmethod
    def parse(cls, text: str) -> Gamma:
        """``"80%"``: the 80th percentile of F; ``"0"``, ``"-1.5"``, ``"-inf"``: that value."""
        number = text.strip().removesuffix("%")
        percentile = number != text.strip()
        try:
            value = float(number)
        except ValueError:
            raise ValueError(f"--gamma must be a number or a percentile such as 80%, got {text!r}") from None
        if percentile and not 0 <= value <= 100:
            raise ValueError(f"--gamma as a percentile must lie between 0% and 100%, got {text!r}")
        if math.isnan(value) or value == math.inf:
            raise ValueError(f"--gamma must be a number below +inf (which rejects every candidate), got {text!r}")
        return cls(value, percentile)

    def of(self, f: Tensor) -> Tensor | float:
        """gamma for a batch whose unshifted F values are ``f``."""
        return torch.quantile(f, self.value / 100) if self.percentile else self.value


def acceptance_logits(logits: Tensor, max_logit: float, gamma: Gamma) -> Tensor:
    """F(x) for candidates with discriminator logits ``logits`` (all at most ``max_logit``), float64."""
    delta = logits.double() - max_logit  # <= 0
    f = delta - torch.log(-torch.expm1(delta - EPS))
    return f - gamma.of(f)


class DiscriminatorRejectionSampler(Sampler):
    """Accept each candidate with the probability the discriminator's density-ratio estimate gives (DRS)."""

    name = "drs"
    requires = (LatentModel, DiscriminatorScored)

    @dataclass
    class Config:
        # the shift of the acceptance logit F: P% for the P-th percentile of F in each batch (the paper's
        # practical choice: a higher P accepts fewer), or a fixed number (0: exact rejection sampling)
        gamma: str = "80%"
        candidates: int = 100_000  # budget: the most candidates drawn before giving up with an error
        batch_size: int = 256  # candidates generated and scored at once
        burn_in: int = 1000  # candidates of each label scored to estimate the largest logit before any is judged

        def __post_init__(self) -> None:
            for key in ("candidates", "batch_size", "burn_in"):
                if getattr(self, key) <= 0:
                    raise ValueError(f"--{key.replace('_', '-')} must be a positive integer, got {getattr(self, key)}")
            Gamma.parse(self.gamma)

    def __init__(self, config: Config | None = None):
        super().__init__(config)
        self.gamma = Gamma.parse(self.config.gamma)

    def sample(self, model: Model, n: int, generator: torch.Generator, labels: Tensor | None = None) -> Samples:
        """``n`` accepted candidates with their discriminator logits as scores.

        A class-conditional model draws the candidates of each label asked for separately, with
        that label's own largest logit: the density ratio p_data(x|y) / p_g(x|y) has one bound
        per class. The budget ``candidates`` counts the candidates of all labels together.
        """
        with eval_mode(model):
            if labels is None:
                images, scores, _ = self.accept(model, n, None, generator, self.config.candidates)
                return Samples(images=images, scores=scores)
            images = scores = None
            drawn = 0
            for label in labels.unique():  # in increasing order, so the draws repeat for a seed
                where = (labels == label).nonzero().squeeze(1)
                chosen, logits, used = self.accept(model, len(where), label, generator, self.config.candidates - drawn)
                drawn += used
                if images is None:
                    images, scores = chosen.new_empty((n, *chosen.shape[1:])), logits.new_empty(n)
                images[where], scores[where] = chosen, logits
        return Samples(images=images, scores=scores)

    def accept(self, model: Model, n: int, label: Tensor | None, generator: torch.Generator,
               budget: int) -> tuple[Tensor, Tensor, int]:
        """``n`` candidates of one label (or of an unconditional model) that DRS accepts, their
        logits, and how many candidates it drew, at most ``budget``.

        The first ``burn_in`` candidates are held until their largest logit is known, then judged
        like every later one, so none is drawn in vain; memory holds at most ``burn_in +
        batch_size`` candidates.
        """
        kept: list[tuple[Tensor, Tensor]] = []
        pending: list[tuple[Tensor, Tensor]] = []  # scored, waiting for the burn-in's largest logit
        accepted = drawn = 0
        max_logit = -math.inf
        while accepted < n:
            if drawn == budget:
                what = "" if label is None else f" of label {int(label)}"
                raise GentoolError(f"drs accepted {accepted} of the {n} images{what} asked for in the candidates "
                                   f"its budget left (--candidates {self.config.candidates}); raise --candidates "
                                   "or lower --gamma.")
            images, logits = scored_candidates(model, min(self.config.batch_size, budget - drawn), label, generator)
            drawn += len(images)
            max_logit = max(max_logit, logits.max().item())  # D~_M: the burn-in's, raised when a larger one turns up
            pending.append((images, logits))
            if drawn < min(self.config.burn_in, budget):
                continue
            for images, logits in pending:
                chance = acceptance_logits(logits, max_logit, self.gamma).sigmoid()
                keep = torch.rand(len(logits), generator=generator, device=logits.device, dtype=chance.dtype) < chance
                kept.append((images[keep], logits[keep]))
                accepted += int(keep.sum())
            pending.clear()
        images = torch.cat([images for images, _ in kept])[:n]
        logits = torch.cat([logits for _, logits in kept])[:n]
        return images, logits, drawn
