"""Likelihood metrics: nll for any model with a likelihood; elbo and recon for variational models.

All three prepare the images the same way: one image at a time on the CPU, with a
generator seeded by ``--seed`` alone. A Bernoulli VAE's binarised test set is then
the same for every model, metric, k, batch size and device: the numbers of two runs
compare, and elbo and nll bound log p(x) of the very same images.

Sums over images run in float64: an NLL averages log-likelihoods near -100 nats
per image over thousands of images, where float32 would lose the digits that matter.

A class-conditional model is evaluated as p(x | y), each image with its own true label:
its ``nll`` is -log p(x | y), not -log p(x), and compares only with other conditional
models' numbers.
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
    GentoolError,
    ImageData,
    LatentModel,
    Likelihood,
    Metric,
    Model,
    Sampler,
    VariationalModel,
    conditional,
    eval_mode,
    has_capability,
    phase,
    posterior_chunks,
    to_unit,
)
from gentoolkit_metrics.checks import sample_count


def evaluated_labels(model: Model, images: Tensor, data: ImageData, metric: str) -> Tensor | None:
    """The true labels of the evaluated images for a class-conditional model; None for others.

    The images are the first ``len(images)`` of the test or the train split (``--split``,
    ``--limit``); ``compute`` is not told which, so the split they start is found by their pixels.
    """
    if not conditional(model):
        return None
    if not callable(getattr(model, "given", None)):
        raise GentoolError(f"{metric}: model '{model.name}' is class-conditional, but has no given(labels) to fix "
                           f"the labels of a batch, which {metric} needs to evaluate log p(x | y).")
    for split, labels in ((data.test, data.test_labels), (data.train, data.train_labels)):
        if (isinstance(split, Tensor) and labels is not None and len(split) >= len(images)
                and torch.equal(split[:len(images)].to(images.device), images)):
            return labels[:len(images)].to(images.device)
    raise GentoolError(f"{metric}: the evaluated images do not start a labelled split of the data set, so the labels "
                       "a class-conditional model needs are unknown.")


def prepared_batches(model: Model, images: Tensor, batch_size: int, generator: torch.Generator,
                     description: str, labels: Tensor | None = None) -> Iterator[tuple[Tensor, Tensor, Any]]:
    """Yield each uint8 batch with its prepared version on the model's device, and the model
    to evaluate it with: ``model``, or with ``labels`` (a conditional model's) p(x | y) with the
    batch's labels fixed, ``model.given(labels)``; as one progress phase with this
    ``description``, counting images.

    Images are prepared one by one with a CPU generator seeded from the seed of
    ``generator`` (plus one, so pixel noise and code noise never share a stream):
    batched draws would depend on the batch size, device draws on the device.
    """
    pixels = torch.Generator().manual_seed(generator.initial_seed() + 1)
    with phase(description, total=len(images)) as progress:
        for start in range(0, len(images), batch_size):
            batch = images[start:start + batch_size]
            x = torch.cat([model.prepare(image[None], pixels) for image in batch.cpu()])
            yield batch, x.to(model.device), model if labels is None else model.given(labels[start:start + batch_size])
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
        labels = evaluated_labels(model, images, data, self.name)
        recon_nll = kl = 0.0
        with eval_mode(model):
            described = f"the ELBO of {len(images):,} images"
            for _, x, evaluated in prepared_batches(model, images, batch_size, generator, described, labels):
                mu, logvar = evaluated.encode(x)
                mu64, logvar64 = mu.double(), logvar.double()
                # KL(N(mu, sigma^2) || N(0, I)) = 1/2 sum(mu^2 + sigma^2 - 1 - log sigma^2)
                kl += 0.5 * (mu64.square() + logvar64.exp() - 1 - logvar64).sum().item()
                chunks = posterior_chunks(evaluated, x, mu, logvar, k, generator, self.config.max_floats)
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
        labels = evaluated_labels(model, images, data, self.name)
        log_px_total = 0.0
        with eval_mode(model):
            each = "" if k is None else f", {k:,} importance samples each"
            described = f"log p(x) of {len(images):,} images{each}"
            for _, x, evaluated in prepared_batches(model, images, batch_size, generator, described, labels):
                log_px = evaluated.log_prob(x, k=k, generator=generator, max_floats=self.config.max_floats)
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
        labels = evaluated_labels(model, images, data, self.name)
        squared = cross_entropy = 0.0
        with eval_mode(model):
            described = f"reconstructing {len(images):,} images"
            for batch, x, evaluated in prepared_batches(model, images, batch_size, generator, described, labels):
                target = to_unit(batch).double()  # the grey levels, even where the model saw binarised pixels
                recon = evaluated.generate(evaluated.encode(x)[0]).double()
                squared += (recon - target).square().sum().item()
                # binary_cross_entropy clamps its logs at -100, so a pixel reconstructed as exactly 0 or 1 stays finite
                cross_entropy += F.binary_cross_entropy(recon, target, reduction="sum").item()
        n = len(images)
        return {"recon_mse": squared / n, "recon_bce": cross_entropy / n}
