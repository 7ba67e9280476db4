"""The core's samplers for models with an encoder: ``reconstruct`` and ``interpolate``.

Both work for any :class:`~gentoolkit.LatentModel` with a :class:`~gentoolkit.LatentEncoder`
(a VAE, a flow), whatever its family: real images go to latent codes with
``encode_latent`` and codes to images with ``generate``. They draw their real images
from the run's data set, which the run hands them because they set ``needs_data``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from gentoolkit.data import to_unit
from gentoolkit.errors import GentoolError
from gentoolkit.interfaces import (
    LatentEncoder,
    LatentModel,
    Model,
    Sampler,
    Samples,
    StandardNormalPrior,
    has_capability,
)
from gentoolkit.standard import eval_mode


def encode(model: Model, x: Tensor, labels: Tensor | None) -> Tensor:
    """Latent codes of prepared images; a conditional model gets their labels too."""
    return model.encode_latent(x) if labels is None else model.encode_latent(x, labels)


def generate(model: Model, z: Tensor, labels: Tensor | None) -> Tensor:
    """Images of latent codes; a conditional model gets their labels too."""
    return model.generate(z) if labels is None else model.generate(z, labels)


def slerp(a: Tensor, b: Tensor, t: Tensor) -> Tensor:
    """Spherical interpolation from codes ``a`` to ``b`` (N x ...) at the fractions ``t`` (T):
    N x T x ... codes that keep the norm a standard normal code has, where a straight line
    would pass through the improbable middle of the Gaussian. Nearly parallel codes are
    interpolated straight."""
    flat_a, flat_b = a.flatten(1), b.flatten(1)
    cos = torch.nn.functional.cosine_similarity(flat_a, flat_b, dim=1).clamp(-1, 1)
    omega = torch.acos(cos)[:, None]  # N x 1
    t = t[None, :]  # 1 x T
    sin = torch.sin(omega)
    parallel = sin.abs() < 1e-6
    safe = torch.where(parallel, torch.ones_like(sin), sin)
    wa = torch.where(parallel, 1 - t, torch.sin((1 - t) * omega) / safe)  # N x T
    wb = torch.where(parallel, t, torch.sin(t * omega) / safe)
    codes = wa[..., None] * flat_a[:, None] + wb[..., None] * flat_b[:, None]
    return codes.reshape(len(a), t.shape[1], *a.shape[1:])


def lerp(a: Tensor, b: Tensor, t: Tensor) -> Tensor:
    """Straight interpolation from codes ``a`` to ``b`` at the fractions ``t``: N x T x ... codes."""
    t = t.reshape(1, -1, *([1] * (a.dim() - 1)))
    return a[:, None] + t * (b - a)[:, None]


class FromData(Sampler):
    """What both samplers share: picking real images, and generating in batches."""

    requires = (LatentModel, LatentEncoder)

    def real_images(self, count: int, generator: torch.Generator,
                    labels: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """``count`` images of the configured split, a random choice that ``generator`` repeats, and
        their labels; with ``labels`` (a conditional model's classes) images of those classes."""
        split = self.config.split
        pool = self.data.test if split == "test" else self.data.train
        pool_labels = self.data.test_labels if split == "test" else self.data.train_labels
        if pool is None:
            raise GentoolError(f"sampler '{self.name}': the data set has no {split} split; use --split train.")
        if not isinstance(pool, Tensor):
            raise GentoolError(f"sampler '{self.name}': the {split} split is streamed from disk (too large for "
                               "memory); this sampler needs it decoded in memory.")
        order = torch.randperm(len(pool), generator=generator, device=generator.device).cpu()
        if labels is None:
            if count > len(pool):
                raise GentoolError(f"sampler '{self.name}' needs {count} real images, and the {split} split has "
                                   f"{len(pool)}; ask for fewer.")
            chosen = order[:count]
        else:
            chosen = torch.empty(count, dtype=torch.long)
            shuffled = pool_labels[order]
            for label in labels.unique().tolist():
                slots = (labels.cpu() == label).nonzero().flatten()
                have = order[shuffled == label]
                if len(have) < len(slots):
                    raise GentoolError(f"sampler '{self.name}' needs {len(slots)} real images of class {label}, and "
                                       f"the {split} split has {len(have)}; ask for fewer.")
                chosen[slots] = have[:len(slots)]
        return pool[chosen], None if labels is None else pool_labels[chosen].to(labels.device)

    def decoded(self, model: Model, codes: Tensor, labels: Tensor | None) -> Tensor:
        """``generate`` on the codes, ``batch_size`` at a time."""
        size = self.config.batch_size
        return torch.cat([generate(model, codes[i:i + size], None if labels is None else labels[i:i + size])
                          for i in range(0, len(codes), size)])

    def encoded(self, model: Model, images: Tensor, generator: torch.Generator, labels: Tensor | None) -> Tensor:
        """The latent codes of uint8 images, prepared with ``generator``, ``batch_size`` at a time."""
        size = self.config.batch_size
        codes = []
        for i in range(0, len(images), size):
            part = None if labels is None else labels[i:i + size]
            codes.append(encode(model, model.prepare(images[i:i + size].to(model.device), generator), part))
        return torch.cat(codes)


class ReconstructSampler(FromData):
    """Real images beside their reconstructions: each image, then generate(encode_latent(image))."""

    name = "reconstruct"
    needs_data = True
    group = 2

    @dataclass
    class Config:
        split: Literal["test", "train"] = "test"  # the data set split the images come from
        batch_size: int = 256  # images encoded and decoded at once; bounds memory for any -n

        def __post_init__(self) -> None:
            if self.batch_size <= 0:
                raise ValueError(f"--batch-size must be a positive integer, got {self.batch_size}")

    def sample(self, model: Model, n: int, generator: torch.Generator, labels: Tensor | None = None) -> Samples:
        """``n`` images: real ones and their reconstructions in turn (one more real image when n is odd)."""
        pairs = math.ceil(n / 2)
        real, real_labels = self.real_images(pairs, generator, None if labels is None else labels[::2])
        with eval_mode(model):
            recon = self.decoded(model, self.encoded(model, real, generator, real_labels), real_labels)
        both = torch.stack([to_unit(real.to(recon.device)).to(recon.dtype), recon], dim=1)  # pairs x 2 x C x H x W
        return Samples(images=both.flatten(0, 1)[:n])


class InterpolateSampler(FromData):
    """Paths of --steps images between pairs of real images (through their codes) or of prior draws."""

    name = "interpolate"
    requires = (LatentModel,)

    @dataclass
    class Config:
        steps: int = 8  # images per path, both ends included
        # data: pairs of the split's images, through their codes (needs an encoder); prior: pairs of prior draws
        between: Literal["data", "prior"] = "data"
        path: Literal["auto", "spherical", "linear"] = "auto"  # auto: spherical for an N(0, I) prior, else linear
        split: Literal["test", "train"] = "test"  # with --between data: the split the images come from
        batch_size: int = 256  # images decoded at once; bounds memory for any -n

        def __post_init__(self) -> None:
            if self.steps < 2:
                raise ValueError(f"--steps must be 2 or more (both ends), got {self.steps}")
            if self.batch_size <= 0:
                raise ValueError(f"--batch-size must be a positive integer, got {self.batch_size}")

    @property
    def needs_data(self) -> bool:
        return self.config.between == "data"

    @property
    def group(self) -> int:
        return self.config.steps

    def sample(self, model: Model, n: int, generator: torch.Generator, labels: Tensor | None = None) -> Samples:
        """``n`` images: paths of ``steps`` images each, the last cut short when n is not a multiple."""
        steps = self.config.steps
        paths = math.ceil(n / steps)
        path_labels = None if labels is None else labels[::steps]
        with eval_mode(model):
            if self.config.between == "data":
                if not has_capability(model, LatentEncoder):
                    raise GentoolError(f"--between data needs a model with an encoder (LatentEncoder), and "
                                       f"'{model.name}' has none; use --between prior.")
                pair_labels = None if path_labels is None else path_labels.repeat_interleave(2)
                real, real_labels = self.real_images(2 * paths, generator, pair_labels)
                codes = self.encoded(model, real, generator, real_labels)
                start, end = codes[0::2], codes[1::2]
            else:
                start, end = model.sample_latent(paths, generator), model.sample_latent(paths, generator)
            spherical = self.config.path == "spherical" or (self.config.path == "auto"
                                                             and has_capability(model, StandardNormalPrior))
            t = torch.linspace(0, 1, steps, device=start.device, dtype=start.dtype)
            codes = (slerp if spherical else lerp)(start, end, t).flatten(0, 1)  # paths*steps x ...
            image_labels = None if path_labels is None else path_labels.repeat_interleave(steps)
            return Samples(images=self.decoded(model, codes[:n], None if image_labels is None else image_labels[:n]))
