"""The ``ranking`` sampler: draw many images, keep those the discriminator likes best.

The article's ``generate()`` draws 512 faces and saves the 64 its discriminator
scores highest. This does the same for any model with a ``discriminator_score``
(the :class:`~gentoolkit.DiscriminatorScored` capability), in batches, so memory
stays bounded however many candidates are drawn.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gentoolkit import DiscriminatorScored, GentoolError, LatentModel, Model, Sampler, Samples, eval_mode, phase
from gentoolkit_ranking.candidates import scored_candidates


class RankingSampler(Sampler):
    """Draw many candidates and keep the best by discriminator score."""

    name = "ranking"
    requires = (LatentModel, DiscriminatorScored)

    @dataclass
    class Config:
        candidates: int = 512  # images drawn; the n best of them are kept
        batch_size: int = 256  # candidates generated and scored at once; bounds memory

        def __post_init__(self) -> None:
            for key in ("candidates", "batch_size"):
                if getattr(self, key) <= 0:
                    raise ValueError(f"--{key.replace('_', '-')} must be a positive integer, got {getattr(self, key)}")

    def sample(self, model: Model, n: int, generator: torch.Generator, labels: torch.Tensor | None = None) -> Samples:
        """The ``n`` best of ``candidates`` images, best first, with their scores.

        A class-conditional model draws every candidate of the one class asked for, and its
        discriminator scores them as images of that class."""
        candidates = self.config.candidates
        if candidates < n:
            raise GentoolError(f"--candidates must be at least -n ({n}), got {candidates}: "
                               "the ranking sampler keeps the best n of its candidates.")
        if labels is not None and not bool((labels == labels[0]).all()):
            raise GentoolError("the ranking sampler keeps the best of one pool of candidates; ask for one --label.")
        label = None if labels is None else labels[0]
        images = scores = None
        with eval_mode(model), phase(f"ranking {candidates:,} candidates", total=candidates) as progress:
            for start in range(0, candidates, self.config.batch_size):
                count = min(self.config.batch_size, candidates - start)
                batch, batch_scores = scored_candidates(model, count, label, generator)
                progress.advance(count)
                if images is not None:
                    batch = torch.cat([images, batch])
                    batch_scores = torch.cat([scores, batch_scores])
                # A stable sort keeps earlier candidates first among equal scores, so the
                # result is the same as sorting all candidates at once.
                best = batch_scores.sort(descending=True, stable=True).indices[:n]
                images, scores = batch[best], batch_scores[best]
        return Samples(images=images, scores=scores)
