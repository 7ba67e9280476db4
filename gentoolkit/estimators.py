"""Likelihood estimates for any :class:`~gentoolkit.VariationalModel`, shared by models and metrics.

A VAE declares the :class:`~gentoolkit.Likelihood` capability by calling
:func:`importance_weighted_log_prob`; the ``elbo`` metric draws its codes with
:func:`posterior_chunks`. Both work for any model with a Gaussian encoder and a
standard normal prior, whatever its decoder, so they live in the core.

Sums over samples run in float64: an NLL averages thousands of log-weights near
-100 nats, where float32 would lose the digits that matter.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import Tensor

from gentoolkit.interfaces import VariationalModel


def posterior_chunks(model: VariationalModel, x: Tensor, mu: Tensor, logvar: Tensor, k: int,
                     generator: torch.Generator, max_floats: int) -> Iterator[tuple[Tensor, Tensor]]:
    """Draw k codes per image from q(z|x) = N(mu, exp(logvar)), decoding S of them at a time so
    that S * batch * pixels stays under ``max_floats``; yield log p(x|z) and log p(z) - log q(z|x),
    both S x N in float64.

    Each sample index gets its own N x L draw, so the codes do not depend on S.
    """
    n = len(x)
    chunk = max(1, min(k, max_floats // (n * x[0].numel())))
    std = torch.exp(0.5 * logvar)
    for start in range(0, k, chunk):
        s = min(chunk, k - start)
        eps = torch.stack([torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
                           for _ in range(s)])  # S x N x L
        z = mu + std * eps  # S x N x L
        decoded = model.decode(z.flatten(0, 1))  # S*N x ...
        log_px = model.log_likelihood(x.expand(s, *x.shape).flatten(0, 1), decoded).view(s, n)  # S x N
        # log N(z; 0, I) - log N(z; mu, sigma^2): the 2 pi terms cancel and (z - mu) / sigma = eps
        log_ratio = 0.5 * (eps.double().square() + logvar.double() - z.double().square()).sum(-1)  # S x N
        yield log_px.double(), log_ratio


def importance_weighted_log_prob(model: VariationalModel, x: Tensor, k: int, generator: torch.Generator,
                                 max_floats: int) -> Tensor:
    """log p(x) per image, estimated with k importance samples from q(z|x) (Burda et al. 2015):
    log (1/k) sum_i p(x, z_i) / q(z_i|x), a lower bound that tightens as k grows. float64, shape N."""
    mu, logvar = model.encode(x)
    # log sum_k w_k over all chunks, as a running logsumexp
    log_sum = torch.full((len(x),), -math.inf, dtype=torch.float64, device=x.device)
    for log_px, log_ratio in posterior_chunks(model, x, mu, logvar, k, generator, max_floats):
        log_sum = torch.logaddexp(log_sum, (log_px + log_ratio).logsumexp(0))
    return log_sum - math.log(k)
