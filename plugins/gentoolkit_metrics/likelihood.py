"""Likelihood metrics of variational models: elbo, nll (importance weighted) and recon.

All three prepare the images the same way: one image at a time on the CPU, with a
generator seeded by ``--seed`` alone. A Bernoulli VAE's binarised test set is then
the same for every model, metric, k, batch size and device: the numbers of two runs
compare, and elbo and nll bound log p(x) of the very same images.

Sums over images and samples run in float64: an NLL averages thousands of
log-weights near -100 nats, where float32 would lose the digits that matter.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from gentoolkit import BitsPerDim, ImageData, Metric, Model, VariationalModel, eval_mode, to_unit
from gentoolkit_metrics.checks import sample_count


def prepared_batches(model: Model, images: Tensor, batch_size: int,
                     generator: torch.Generator) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield each uint8 batch with its prepared version on the model's device.

    Images are prepared one by one with a CPU generator seeded from the seed of
    ``generator`` (plus one, so pixel noise and code noise never share a stream):
    batched draws would depend on the batch size, device draws on the device.
    """
    pixels = torch.Generator().manual_seed(generator.initial_seed() + 1)
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size]
        x = torch.cat([model.prepare(image[None], pixels) for image in batch.cpu()])
        yield batch, x.to(model.device)


def posterior_chunks(model: Model, x: Tensor, mu: Tensor, logvar: Tensor, k: int, generator: torch.Generator,
                     max_floats: int) -> Iterator[tuple[Tensor, Tensor]]:
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


def in_bits(model: Model, key: str, log_likelihood: float) -> dict[str, float]:
    """``{key: bits per dimension}`` where the model can state it, else nothing."""
    bits = model.bits_per_dim(log_likelihood) if isinstance(model, BitsPerDim) else None
    return {} if bits is None else {key: bits}


@dataclass
class LikelihoodConfig:
    # decoder outputs held at once (importance samples x batch x pixels): bounds memory for any k;
    # 1M floats (4 MB) measured fastest on CPU, where bigger blocks cost more in page faults than they save
    max_floats: int = 1 << 20


class ELBO(Metric):
    """Evidence lower bound in nats per image, with its KL and reconstruction terms (higher is better)."""

    name = "elbo"
    requires = (VariationalModel,)
    higher_is_better = True
    Config = LikelihoodConfig

    def compute(self, model: Model, images: Tensor, *, k: int | None, batch_size: int,
                generator: torch.Generator, data: ImageData) -> dict[str, Any]:
        k = sample_count(self.name, k, 1)
        recon_nll = kl = 0.0
        with eval_mode(model):
            for _, x in prepared_batches(model, images, batch_size, generator):
                mu, logvar = model.encode(x)
                mu64, logvar64 = mu.double(), logvar.double()
                # KL(N(mu, sigma^2) || N(0, I)) = 1/2 sum(mu^2 + sigma^2 - 1 - log sigma^2)
                kl += 0.5 * (mu64.square() + logvar64.exp() - 1 - logvar64).sum().item()
                chunks = posterior_chunks(model, x, mu, logvar, k, generator, self.config.max_floats)
                recon_nll -= sum(log_px.sum().item() for log_px, _ in chunks) / k
        n = len(images)
        elbo = -(recon_nll + kl) / n
        return {"elbo": elbo, "kl": kl / n, "recon_nll": recon_nll / n, **in_bits(model, "elbo_bits_per_dim", elbo)}


class NLL(Metric):
    """Negative log-likelihood in nats per image, importance weighted with k samples (Burda et al. 2015)."""

    name = "nll"
    requires = (VariationalModel,)
    Config = LikelihoodConfig

    def compute(self, model: Model, images: Tensor, *, k: int | None, batch_size: int,
                generator: torch.Generator, data: ImageData) -> dict[str, Any]:
        k = sample_count(self.name, k, 5000)
        log_px_total = 0.0
        with eval_mode(model):
            for _, x in prepared_batches(model, images, batch_size, generator):
                mu, logvar = model.encode(x)
                # log sum_k w_k over all chunks, as a running logsumexp
                log_sum = torch.full((len(x),), -math.inf, dtype=torch.float64, device=x.device)
                for log_px, log_ratio in posterior_chunks(model, x, mu, logvar, k, generator, self.config.max_floats):
                    log_sum = torch.logaddexp(log_sum, (log_px + log_ratio).logsumexp(0))
                log_px_total += (log_sum - math.log(k)).sum().item()
        nll = -log_px_total / len(images)
        return {"nll": nll, "nll_k": k, **in_bits(model, "nll_bits_per_dim", -nll)}


class Reconstruction(Metric):
    """Error between images and their reconstructions generate(mean of q(z|x)), per image (lower is better)."""

    name = "recon"
    requires = (VariationalModel,)

    def compute(self, model: Model, images: Tensor, *, k: int | None, batch_size: int,
                generator: torch.Generator, data: ImageData) -> dict[str, Any]:
        squared = cross_entropy = 0.0
        with eval_mode(model):
            for batch, x in prepared_batches(model, images, batch_size, generator):
                target = to_unit(batch).double()  # the grey levels, even where the model saw binarised pixels
                recon = model.generate(model.encode(x)[0]).double()
                squared += (recon - target).square().sum().item()
                # binary_cross_entropy clamps its logs at -100, so a pixel reconstructed as exactly 0 or 1 stays finite
                cross_entropy += F.binary_cross_entropy(recon, target, reduction="sum").item()
        n = len(images)
        return {"recon_mse": squared / n, "recon_bce": cross_entropy / n}
