"""Maximum likelihood, the objective of a flow: its log-likelihood is exact and differentiable."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor

from gentoolkit import Loss, Model, Objective
from gentoolkit_flow import maths


@runtime_checkable
class ExactLikelihood(Protocol):
    """A model of dequantised 8-bit pixels whose exact log-density can be differentiated."""

    def log_density(self, x: Tensor) -> Tensor:
        """log p(x) per prepared image, in nats."""


class MaximumLikelihood(Objective):
    """Maximum likelihood: minimise -log p(x) of the dequantised pixels, in bits per dimension."""

    name = "mle"
    requires = (ExactLikelihood,)

    def loss(self, model: Model, x: Tensor) -> Loss:
        """Bits per dimension rather than nats, so the loss reads the same for any image size
        and compares with published numbers; ``nll`` is the same in nats per image."""
        log_p = model.log_density(x)  # N
        bits = maths.bits_per_dim(log_p, model.spec.pixels).mean()
        return Loss(value=bits, metrics={"bits_per_dim": bits.detach(), "nll": -log_p.mean().detach()})
