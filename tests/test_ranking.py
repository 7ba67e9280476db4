"""The ranking sampler: the best n of many candidates, in bounded memory, for any scored model."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from gentoolkit import GentoolError, apply_overrides
from gentoolkit.registry import get_toolkit
from gentoolkit_ranking import RankingSampler


class Brightness(nn.Module):
    """A fake model: an image is its latent code and its score is its mean pixel."""

    def __init__(self):
        super().__init__()
        self.drawn: list[Tensor] = []  # every candidate generated, in order

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return torch.rand(n, 1, 4, 4, generator=generator)

    def generate(self, z: Tensor) -> Tensor:
        self.drawn.append(z)
        return z

    def discriminator_score(self, images: Tensor) -> Tensor:
        assert not self.training and not torch.is_grad_enabled()
        return images.mean((1, 2, 3))


class CoarseBrightness(Brightness):
    """Scores rounded to quarters, so many candidates tie."""

    def discriminator_score(self, images: Tensor) -> Tensor:
        return (super().discriminator_score(images) * 4).round() / 4


def sample(model: nn.Module, n: int, candidates: int, batch_size: int, seed: int = 0):
    sampler = RankingSampler(RankingSampler.Config(candidates=candidates, batch_size=batch_size))
    return sampler.sample(model, n, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("model_cls", [Brightness, CoarseBrightness])
@pytest.mark.parametrize("n,candidates,batch_size", [(7, 50, 16), (7, 50, 64), (10, 10, 3), (5, 33, 1), (20, 50, 8)])
def test_keeps_exactly_the_top_n_of_all_candidates(model_cls, n, candidates, batch_size):
    model = model_cls()
    samples = sample(model, n, candidates, batch_size)
    everything = torch.cat(model.drawn)
    assert len(everything) == candidates
    assert max(len(batch) for batch in model.drawn) <= batch_size  # memory is bounded by the batch
    with torch.no_grad():
        scores = model.eval().discriminator_score(everything)
    best = scores.sort(descending=True, stable=True).indices[:n]
    torch.testing.assert_close(samples.images, everything[best], rtol=0, atol=0)
    torch.testing.assert_close(samples.scores, scores[best], rtol=0, atol=0)
    assert torch.all(samples.scores[:-1] >= samples.scores[1:])  # best first


def test_same_seed_same_images():
    first = sample(Brightness(), 8, 40, 16, seed=3)
    again = sample(Brightness(), 8, 40, 16, seed=3)
    other = sample(Brightness(), 8, 40, 16, seed=4)
    assert torch.equal(first.images, again.images) and torch.equal(first.scores, again.scores)
    assert not torch.equal(first.images, other.images)


def test_fewer_candidates_than_images_is_a_clear_error():
    with pytest.raises(GentoolError, match="--candidates must be at least -n"):
        sample(Brightness(), 64, 32, 16)


def test_bad_options_are_caught_when_set():
    with pytest.raises(GentoolError, match="--batch-size must be a positive integer"):
        apply_overrides(RankingSampler.Config(), [("batch_size", "0")], "sampler 'ranking'")


@pytest.mark.parametrize("training", [True, False])
def test_restores_the_models_mode(training):
    model = Brightness().train(training)
    sample(model, 2, 4, 4)
    assert model.training is training


def test_fits_only_models_with_a_discriminator_score():
    class Unscored(nn.Module):
        def sample_latent(self, n, generator=None):
            return torch.rand(n, 1, 4, 4, generator=generator)

        def generate(self, z):
            return z

    assert RankingSampler.fits(Brightness())
    assert not RankingSampler.fits(Unscored())


def test_registered_as_ranking():
    assert get_toolkit().samplers.get("ranking") is RankingSampler
