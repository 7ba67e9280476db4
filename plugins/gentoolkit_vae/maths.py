"""The closed-form pieces of the evidence lower bound, in nats.

Sums over many terms run in float32, so a run under bf16 autocast still
reports an accurate bound.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

LOG_2PI = math.log(2 * math.pi)


def reparameterize(mu: Tensor, logvar: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """z = mu + sigma * eps with sigma = exp(logvar / 2) and eps ~ N(0, I).

    Writing the sample this way makes it differentiable in mu and logvar. (The
    source article computes 0.5 * exp(logvar), which is not the standard deviation.)
    """
    eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    return mu + torch.exp(0.5 * logvar) * eps


def normal_log_prob(x: Tensor, mean: Tensor, logvar: Tensor) -> Tensor:
    """log N(x; mean, exp(logvar)) element by element, constant included."""
    x, mean, logvar = x.float(), mean.float(), logvar.float()
    return -0.5 * (LOG_2PI + logvar + (x - mean).pow(2) * torch.exp(-logvar))


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) in closed form, summed over the last dimension.

    -KL = 1/2 * sum(1 + log sigma^2 - mu^2 - sigma^2).
    """
    mu, logvar = mu.float(), logvar.float()
    return -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(-1)


def sampled_kl(z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """log q(z|x) - log p(z) for codes z drawn from q: a one-sample estimate of the KL."""
    log_q = normal_log_prob(z, mu, logvar).sum(-1)
    log_p = normal_log_prob(z, torch.zeros_like(z), torch.zeros_like(z)).sum(-1)
    return log_q - log_p


def bernoulli_log_likelihood(x: Tensor, logits: Tensor) -> Tensor:
    """log p(x|z) of independent Bernoulli pixels, per image: minus the summed BCE."""
    bce = F.binary_cross_entropy_with_logits(logits.float(), x.float(), reduction="none")
    return -bce.flatten(1).sum(1)


def gaussian_log_likelihood(x: Tensor, mean: Tensor, log_sigma: Tensor) -> Tensor:
    """log N(x; mean, sigma^2 I) per image:
    -||x - mean||^2 / (2 sigma^2) - D/2 * log(2 pi sigma^2) when sigma is shared."""
    return normal_log_prob(x, mean, 2 * log_sigma).flatten(1).sum(1)


def bits_per_dim(log_likelihood: Tensor | float, dims: int, levels: int = 256) -> Tensor | float:
    """Bits per dimension of discrete data from a log-likelihood (or ELBO) in nats per image.

    For a density of data dequantised into [0, 1]^D, each of a pixel's ``levels``
    values owns a bin of width 1 / levels, so
    -log2 P(pixels) <= (-log p(x) + D log levels) / (D log 2). A probability of
    the discrete pixels themselves needs no bins: ``levels=1``.
    """
    return (-log_likelihood + dims * math.log(levels)) / (dims * math.log(2))
