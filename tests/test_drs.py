"""The drs sampler: with a discriminator that knows the exact density ratio it draws the data
distribution, not the generator's; its gamma, budget, labels and seed behave as documented."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from gentoolkit import GentoolError, apply_overrides
from gentoolkit.registry import get_toolkit
from gentoolkit_ranking import DiscriminatorRejectionSampler, RankingSampler
from gentoolkit_ranking.drs import Gamma, acceptance_logits

MODES = (0.3, 0.7)  # the two modes of every mixture here, each N(mode, WIDTH^2)
WIDTH = 0.05


def mixture_log_density(x: Tensor, weight_high: Tensor) -> Tensor:
    """log of (1 - w) N(x; 0.3, WIDTH^2) + w N(x; 0.7, WIDTH^2), per value."""
    normal = torch.distributions.Normal(torch.tensor(MODES, dtype=torch.float64), WIDTH)
    log_modes = normal.log_prob(x.double()[:, None])  # N x 2
    log_weights = torch.stack([(1 - weight_high).log(), weight_high.log()], dim=1)  # N x 2
    return (log_modes + log_weights).logsumexp(1)


class Mixture(nn.Module):
    """One-pixel images from a two-mode mixture whose generator over-weights the low mode.

    The data's weight on the high mode is ``data_high[y]`` and the generator's
    ``model_high[y]``, for label y (a single label when the model is unconditional); the
    discriminator's logit is the exact log density ratio log p_data(x|y) / p_g(x|y), what an
    optimal, calibrated discriminator would give.
    """

    def __init__(self, data_high: tuple[float, ...] = (0.5,), model_high: tuple[float, ...] = (0.1,)):
        super().__init__()
        self.data_high = torch.tensor(data_high, dtype=torch.float64)
        self.model_high = torch.tensor(model_high, dtype=torch.float64)
        self.num_classes = len(data_high) if len(data_high) > 1 else 0
        self.drawn: list[Tensor] = []  # every candidate generated, in order

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return torch.stack([torch.rand(n, generator=generator), torch.randn(n, generator=generator)], dim=1)

    def weights(self, table: Tensor, labels: Tensor | None, n: int) -> Tensor:
        return table[labels] if labels is not None else table[0].expand(n)

    def generate(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        high = z[:, 0] < self.weights(self.model_high, labels, len(z))
        x = torch.where(high, MODES[1], MODES[0]) + WIDTH * z[:, 1]
        images = x.float().view(-1, 1, 1, 1)
        self.drawn.append(images)
        return images

    def discriminator_score(self, images: Tensor, labels: Tensor | None = None) -> Tensor:
        assert not self.training and not torch.is_grad_enabled()
        x, n = images.flatten(), len(images)
        return (mixture_log_density(x, self.weights(self.data_high, labels, n))
                - mixture_log_density(x, self.weights(self.model_high, labels, n))).float()


def drs(gamma: str = "80%", candidates: int = 100_000, batch_size: int = 256,
        burn_in: int = 1000) -> DiscriminatorRejectionSampler:
    return DiscriminatorRejectionSampler(DiscriminatorRejectionSampler.Config(
        gamma=gamma, candidates=candidates, batch_size=batch_size, burn_in=burn_in))


def high_share(images: Tensor) -> float:
    """The fraction of images in the high mode."""
    return (images.flatten() > 0.5).double().mean().item()


def draw(sampler, model: nn.Module, n: int, seed: int = 0, labels: Tensor | None = None):
    return sampler.sample(model, n, torch.Generator().manual_seed(seed), labels)


# ------------------------------------------------------------- the maths


def test_acceptance_is_exp_of_the_logit_gap_for_gamma_zero_and_shifts_with_gamma():
    """sigmoid(F) = exp(D - D_M) for gamma = 0 (up to eps), and
    e^a / (e^a + (1 - e^a) e^gamma) with a = D - D_M for any fixed gamma."""
    logits = torch.tensor([-0.5, -1.0, -3.0, -10.0])
    gap = logits.double() - 0.5
    exact = acceptance_logits(logits, 0.5, Gamma(0.0, percentile=False)).sigmoid()
    torch.testing.assert_close(exact, gap.exp(), rtol=1e-5, atol=0)
    for gamma in (-2.0, 1.5):
        shifted = acceptance_logits(logits, 0.5, Gamma(gamma, percentile=False)).sigmoid()
        closed = gap.exp() / (gap.exp() + (1 - gap.exp()) * math.exp(gamma))
        torch.testing.assert_close(shifted, closed, rtol=1e-5, atol=0)
    everything = acceptance_logits(logits, 0.5, Gamma(-math.inf, percentile=False)).sigmoid()
    assert torch.all(everything == 1)


def test_the_best_candidate_is_accepted_and_a_percentile_gamma_centres_the_batch():
    logits = torch.linspace(-5, 0, 101)
    f = acceptance_logits(logits, 0.0, Gamma(50.0, percentile=True))
    assert f.sigmoid()[-1] > 0.999  # the largest logit: log(1 - exp(-eps)) makes F large
    assert f[50].item() == pytest.approx(0.0, abs=1e-9)  # the median candidate gets probability 1/2


@pytest.mark.parametrize("text,expected", [("80%", Gamma(80.0, True)), ("0", Gamma(0.0, False)),
                                           ("-1.5", Gamma(-1.5, False)), ("-inf", Gamma(-math.inf, False))])
def test_gamma_is_a_percentile_or_a_number(text, expected):
    assert Gamma.parse(text) == expected


@pytest.mark.parametrize("assignment,message", [
    (("gamma", "high"), "--gamma must be a number or a percentile such as 80%, got 'high'"),
    (("gamma", "120%"), "--gamma as a percentile must lie between 0% and 100%"),
    (("gamma", "inf"), "--gamma must be a number below \\+inf"),
    (("candidates", "0"), "--candidates must be a positive integer"),
    (("burn_in", "-1"), "--burn-in must be a positive integer"),
])
def test_bad_options_are_one_line_errors_when_set(assignment, message):
    with pytest.raises(GentoolError, match=message):
        apply_overrides(DiscriminatorRejectionSampler.Config(), [assignment], "sampler 'drs'")


# ------------------------------------------------------- the distribution


def test_with_the_exact_density_ratio_drs_draws_the_data_distribution():
    """The generator puts 10% of its images in the high mode, the data 50%: exact rejection
    sampling (gamma 0) restores 50% and the default percentile shift part of the way, while
    ranking overshoots to its favourites (the best eighth: 80% high) and the prior keeps 10%."""
    n = 4000
    prior = high_share(draw(drs(gamma="-inf"), Mixture(), n).images)
    exact = draw(drs(gamma="0"), Mixture(), n).images
    shifted = high_share(draw(drs(), Mixture(), n).images)
    ranked = high_share(draw(RankingSampler(RankingSampler.Config(candidates=8 * n)), Mixture(), n).images)
    assert prior == pytest.approx(0.1, abs=0.015)
    assert high_share(exact) == pytest.approx(0.5, abs=0.025)  # 4 standard errors
    # each mode keeps its own shape: the accepted pixels spread around the mode as the data's do
    for mode in MODES:
        near = exact.flatten()[(exact.flatten() - mode).abs() < 0.2]
        assert near.mean().item() == pytest.approx(mode, abs=0.005)
        assert near.std().item() == pytest.approx(WIDTH, rel=0.05)
    assert 0.15 < shifted < 0.5 and ranked > 0.75


def test_gamma_minus_infinity_accepts_every_candidate_in_order():
    model = Mixture()
    samples = draw(drs(gamma="-inf", batch_size=64, burn_in=100), model, 150)
    everything = torch.cat(model.drawn)
    assert len(everything) == 192  # the burn-in's two batches, then one more
    assert torch.equal(samples.images, everything[:150])
    assert max(len(batch) for batch in model.drawn) <= 64


def test_a_higher_percentile_accepts_fewer():
    drawn = []
    for gamma in ("50%", "95%"):
        model = Mixture()
        draw(drs(gamma=gamma, burn_in=256), model, 500)
        drawn.append(len(torch.cat(model.drawn)))
    assert drawn[0] < drawn[1]


def test_an_exhausted_budget_is_a_one_line_error():
    with pytest.raises(GentoolError, match=r"^drs accepted \d+ of the 100 images asked for in the candidates its "
                                           r"budget left \(--candidates 500\); raise --candidates or lower --gamma\.$"):
        draw(drs(gamma="20", candidates=500, batch_size=128), Mixture(), 100)


def test_a_budget_smaller_than_the_burn_in_still_judges_its_candidates():
    model = Mixture()
    samples = draw(drs(gamma="-inf", candidates=300, burn_in=1000), model, 250)
    assert len(samples.images) == 250 and len(torch.cat(model.drawn)) == 300


def test_same_seed_same_images():
    first, again, other = (draw(drs(), Mixture(), 300, seed=seed) for seed in (3, 3, 4))
    assert torch.equal(first.images, again.images) and torch.equal(first.scores, again.scores)
    assert not torch.equal(first.images, other.images)


# ----------------------------------------------------------------- labels


def test_each_label_gets_its_own_distribution_with_labels_cycling():
    """Label 0: data 50% high, generator 10%; label 1: data 80%, generator 40%."""
    model = Mixture(data_high=(0.5, 0.8), model_high=(0.1, 0.4))
    labels = torch.arange(6000) % 2
    samples = draw(drs(gamma="0"), model, len(labels), labels=labels)
    assert high_share(samples.images[labels == 0]) == pytest.approx(0.5, abs=0.03)
    assert high_share(samples.images[labels == 1]) == pytest.approx(0.8, abs=0.03)
    with torch.no_grad():
        torch.testing.assert_close(samples.scores, model.eval().discriminator_score(samples.images, labels))


def test_one_label_draws_only_that_class():
    model = Mixture(data_high=(0.5, 0.8), model_high=(0.1, 0.4))
    samples = draw(drs(gamma="0"), model, 2000, labels=torch.full((2000,), 1))
    assert high_share(samples.images) == pytest.approx(0.8, abs=0.04)


def test_the_budget_counts_the_candidates_of_every_label():
    model = Mixture(data_high=(0.5, 0.8), model_high=(0.1, 0.4))
    with pytest.raises(GentoolError, match="drs accepted 0 of the 50 images of label 1 asked for"):
        draw(drs(gamma="-inf", candidates=60, batch_size=30, burn_in=30), model, 100, labels=torch.arange(100) % 2)


# ------------------------------------------------------------ the plugin


@pytest.mark.parametrize("training", [True, False])
def test_restores_the_models_mode(training):
    model = Mixture().train(training)
    draw(drs(burn_in=10), model, 5)
    assert model.training is training


def test_registered_as_drs_for_scored_latent_models():
    assert get_toolkit().samplers.get("drs") is DiscriminatorRejectionSampler
    assert DiscriminatorRejectionSampler.fits(Mixture())
    assert not DiscriminatorRejectionSampler.fits(nn.Linear(1, 1))
