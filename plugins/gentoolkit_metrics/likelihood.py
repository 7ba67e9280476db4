"""Likelihood metrics: nll for any model with a likelihood; elbo and recon for variational models.

All three prepare the images the same way: one image at a time on the CPU, with a
generator seeded by ``--seed`` alone. A Bernoulli VAE's binarised test set is then
the same for every model, metric, k, batch size and device: the numbers of two runs
compare, and elbo and nll bound log p(x) of the very same images.

Sums over images run in float64: an NLL averages log-likelihoods near -100 nats
per image over thousands of images, where float32 would lose the digits that matter.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from gentoolkit import (
    BitsPerDim,
    ImageData,
    LatentModel,
    Likelihood,
    Metric,
    Model,
    Sampler,
    VariationalModel,
    eval_mode,
    has_capability,
    phase,
    posterior_chunks,
    to_unit,
)
from gentoolkit_metrics.checks import sample_count


def prepared_batches(model: Model, images: Tensor, batch_size: int, generator: torch.Generator,
                     description: str) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield each uint8 batch with its prepared version on the model's device, as one progress
    phase with this ``description``, counting images.

    Images are prepared one by one with a CPU generator seeded from the seed of
    ``generator`` (plus one, so pixel noise and code noise never share a stream):
    batched draws would depend on the batch size, device draws on the device.
    """
    pixels = torch.Generator().manual_seed(generator.initial_seed() + 1)
    with phase(description, total=len(images)) as progress:
        for start in range(0, len(images), batch_size):
            batch = images[start:start + batch_size]
            x = torch.cat([model.prepare(image[None], pixels) for image in batch.cpu()])
            yield batch, x.to(model.device)
            progress.advance(len(batch))


def in_bits(model: Model, key: str, log_likelihood: float) -> dict[str, float]:
    """``{key: bits per dimension}`` where the model can state it, else nothing."""
    bits = model.bits_per_dim(log_likelihood) if has_capability(model, BitsPerDim) else None
    return {} if bits is None else {key: bits}


@dataclass
class LikelihoodConfig:
    # intermediate floats held at once (for a VAE: importance samples x batch x pixels): bounds memory
    # for any k; 1M floats (4 MB) measured fastest on CPU, where bigger blocks cost more in page faults
    max_floats: int = 1 << 20


class ELBO(Metric):
    """Evidence lower bound in nats per image, with its KL and reconstruction terms (higher is better)."""

    name = "elbo"
    requires = (VariationalModel,)
    higher_is_better = True
    Config = LikelihoodConfig

    def compute(self, model: Model, images: Tensor, *, k: int | None, batch_size: int,
                generator: torch.Generator, data: ImageData, sampler: Sampler) -> dict[str, Any]:
        k = sample_count(self.name, k, 1)
        recon_nll = kl = 0.0
        with eval_mode(model):
            for _, x in prepared_batches(model, images, batch_size, generator, f"the ELBO of {len(images):,} images"):
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
    """Negative log-likelihood in nats per image: exact (flows), importance weighted (VAEs) or a bound."""

    name = "nll"
    requires = (Likelihood,)
    Config = LikelihoodConfig

    def compute(self, model: Model, images: Tensor, *, k: int | None, batch_size: int,
                generator: torch.Generator, data: ImageData, sampler: Sampler) -> dict[str, Any]:
        k = None if model.default_nll_k is None else sample_count(self.name, k, model.default_nll_k)
        log_px_total = 0.0
        with eval_mode(model):
            each = "" if k is None else f", {k:,} importance samples each"
            described = f"log p(x) of {len(images):,} images{each}"
            for _, x in prepared_batches(model, images, batch_size, generator, described):
                log_px = model.log_prob(x, k=k, generator=generator, max_floats=self.config.max_floats)
                log_px_total += log_px.double().sum().item()
        nll = -log_px_total / len(images)
        samples = {} if k is None else {"nll_k": k}
        return {"nll": nll, **samples, **in_bits(model, "nll_bits_per_dim", -nll), "nll_kind": model.nll_kind}


class Reconstruction(Metric):
    """Error between images and their reconstructions generate(mean of q(z|x)), per image (lower is better)."""

    name = "recon"
    requires = (VariationalModel, LatentModel)

    def compute(self, model: Model, images: Tensor, *, k: int | None, batch_size: int,
                generator: torch.Generator, data: ImageData, sampler: Sampler) -> dict[str, Any]:
        squared = cross_entropy = 0.0
        with eval_mode(model):
            described = f"reconstructing {len(images):,} images"
            for batch, x in prepared_batches(model, images, batch_size, generator, described):
                target = to_unit(batch).double()  # the grey levels, even where the model saw binarised pixels
                recon = model.generate(model.encode(x)[0]).double()
                squared += (recon - target).square().sum().item()
                # binary_cross_entropy clamps its logs at -100, so a pixel reconstructed as exactly 0 or 1 stays finite
                cross_entropy += F.binary_cross_entropy(recon, target, reduction="sum").item()
        n = len(images)
        return {"recon_mse": squared / n, "recon_bce": cross_entropy / n}
