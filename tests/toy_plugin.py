"""A tiny but real plugin for testing the core: independent Bernoulli pixels on stripes."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from gentoolkit import (
    Dataset,
    ImageData,
    ImageSpec,
    Loss,
    Metric,
    Model,
    Objective,
    Recipe,
    hookimpl,
    to_unit,
)


class PixelBernoulli(Model):
    """Independent Bernoulli pixels: the smallest model that learns."""

    name = "pixels"
    family = "test"
    default_objective = "pixel-nll"
    recipe = Recipe(lr=0.1, batch_size=32, epochs=2)

    @dataclass
    class Config:
        init: float = 0.0  # initial logit of every pixel

    def __init__(self, config, spec: ImageSpec):
        super().__init__(config, spec)
        self.logits = nn.Parameter(torch.full(spec.shape, config.init))

    def prepare(self, batch, generator=None):
        return to_unit(batch)

    def sample_latent(self, n, generator=None):
        return torch.rand(n, *self.spec.shape, generator=generator, device=self.device)

    def generate(self, z):
        return (z < torch.sigmoid(self.logits)).float()


class PixelNLL(Objective):
    """Negative log-likelihood of independent Bernoulli pixels."""

    name = "pixel-nll"

    @dataclass
    class Config:
        scale: float = 1.0  # multiplies the loss; inf makes it blow up (for tests)

    def loss(self, model, x):
        logits = model.logits.expand_as(x)
        nll = F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)
        return Loss(nll.mean() * self.config.scale, {"nll": nll.mean().detach()})


class ExactNLL(Metric):
    """Exact NLL of the independent-pixel model, in nats per image."""

    name = "pixel-nll"

    def compute(self, model, images, *, k, batch_size, generator, data, sampler):
        x = to_unit(images)
        nll = F.binary_cross_entropy_with_logits(model.logits.expand_as(x), x, reduction="none")
        return {"nll": nll.flatten(1).sum(1).mean().item()}


class Stripes(Dataset):
    """Random horizontal and vertical stripes, 1 x 8 x 8."""

    name = "stripes"

    def load(self, options):
        g = torch.Generator().manual_seed(0)
        n = 320
        rows = torch.randint(0, 2, (n, 8, 1), generator=g).expand(n, 8, 8)
        vertical = torch.rand(n, generator=g) < 0.5
        images = torch.where(vertical[:, None, None], rows.transpose(1, 2), rows)
        images = (images * 255).to(torch.uint8).unsqueeze(1)
        return ImageData(train=images[:256], test=images[256:], spec=ImageSpec(1, 8, 8, binary=True))


@hookimpl
def register_models(register):
    register(PixelBernoulli, aliases=("px",))


@hookimpl
def register_objectives(register):
    register(PixelNLL)


@hookimpl
def register_datasets(register):
    register(Stripes)


@hookimpl
def register_metrics(register):
    register(ExactNLL)
