"""The diffusion samplers: ``ddpm`` (ancestral, all T steps) and ``ddim`` (any number of steps).

Both run the reverse chain on ``batch_size`` images at a time, keeping only the current x_t,
so memory does not grow with the number of images or steps, and both take a classifier-free
guidance weight for conditional models.
"""

from __future__ import annotations

import itertools
from abc import abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor

from gentoolkit import GentoolError, Model, Sampler, Samples, eval_mode, from_signed
from gentoolkit_diffusion.model import NoisePredictor


def guided_noise(model: NoisePredictor, xt: Tensor, t: Tensor, labels: Tensor | None, weight: float) -> Tensor:
    """Classifier-free guidance (Ho & Salimans 2022): eps_u + w (eps_c - eps_u), eps_c the
    prediction for the labels and eps_u the unconditional one ("no label").

    w = 0 is the unconditional model, w = 1 the conditional one, w > 1 pushes samples towards
    their class (Ho & Salimans' guidance strength is w - 1). Only w other than 0 and 1 costs
    two predictions, made in one batch.
    """
    if labels is None or weight == 1:
        return model.predict_noise(xt, t, labels)
    if weight == 0:
        return model.predict_noise(xt, t)
    null = torch.full_like(labels, model.num_classes)
    conditional, unconditional = model.predict_noise(torch.cat([xt, xt]), torch.cat([t, t]),
                                                     torch.cat([labels, null])).chunk(2)
    return unconditional + weight * (conditional - unconditional)


@dataclass
class DiffusionSamplerConfig:
    batch_size: int = 256  # images denoised at once; bounds memory for any -n
    guidance: float = 1.0  # classifier-free guidance weight: 0 unconditional, 1 conditional, >1 guided

    def __post_init__(self) -> None:
        if self.batch_size <= 0:
            raise ValueError(f"--batch-size must be a positive integer, got {self.batch_size}")
        if not self.guidance >= 0:
            raise ValueError(f"--guidance must be 0 or more, got {self.guidance}")


class DiffusionSampler(Sampler):
    """What both samplers share: batching, labels, guidance checks and the start x_T ~ N(0, I)."""

    requires = (NoisePredictor,)
    Config = DiffusionSamplerConfig

    def sample(self, model: Model, n: int, generator: torch.Generator, labels: Tensor | None = None) -> Samples:
        """A conditional model asked for images without labels (as fid and kid ask) draws their
        classes uniformly from ``generator``."""
        if not model.num_classes and self.config.guidance != 1:
            raise GentoolError(f"--guidance needs a class-conditional model; '{model.name}' is not "
                               "(train it with --set conditional=true).")
        if model.num_classes and labels is None:
            labels = torch.randint(model.num_classes, (n,), generator=generator, device=model.device)
        chunks = []
        with eval_mode(model):
            for start in range(0, n, self.config.batch_size):
                count = min(self.config.batch_size, n - start)
                x = torch.randn(count, *model.spec.shape, generator=generator, device=model.device)  # x_T
                chunk_labels = None if labels is None else labels[start:start + count]
                chunks.append(from_signed(self.denoise(model, x, chunk_labels, generator)))
        return Samples(images=torch.cat(chunks))

    @abstractmethod
    def denoise(self, model: NoisePredictor, x: Tensor, labels: Tensor | None, generator: torch.Generator) -> Tensor:
        """x_T (N x C x H x W) to x_0 in [-1, 1]."""


class AncestralSampler(DiffusionSampler):
    """DDPM's ancestral sampling (Ho et al. 2020, Algorithm 2): all T steps of p(x_{t-1} | x_t)."""

    name = "ddpm"

    def denoise(self, model: NoisePredictor, x: Tensor, labels: Tensor | None, generator: torch.Generator) -> Tensor:
        diffusion = model.diffusion
        for step in range(diffusion.timesteps, 0, -1):
            t = torch.full((len(x),), step, dtype=torch.long, device=x.device)
            mean, variance, _ = diffusion.p_mean_variance(x, t, guided_noise(model, x, t, labels, self.config.guidance))
            x = mean
            if step > 1:  # x_0 is the mean of the last step: no noise is added there
                x = x + variance.sqrt() * torch.randn(x.shape, generator=generator, device=x.device)
        return x


DEFAULT_DDIM_STEPS = 50  # the usual count in Song et al.; a model with fewer steps uses all of them


@dataclass
class DDIMConfig(DiffusionSamplerConfig):
    steps: int | None = None  # denoising steps, spread evenly over 1..T; default 50, or T if fewer
    eta: float = 0.0  # noise of each step: 0 deterministic (DDIM), 1 as much as DDPM's

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.steps is not None and self.steps <= 0:
            raise ValueError(f"--steps must be a positive integer, got {self.steps}")
        if not self.eta >= 0:
            raise ValueError(f"--eta must be 0 or more, got {self.eta}")


class DDIMSampler(DiffusionSampler):
    """DDIM (Song et al. 2021): a few deterministic (eta = 0) or noisy steps over a subsequence of 1..T."""

    name = "ddim"
    Config = DDIMConfig

    def denoise(self, model: NoisePredictor, x: Tensor, labels: Tensor | None, generator: torch.Generator) -> Tensor:
        diffusion = model.diffusion
        steps = self.config.steps or min(DEFAULT_DDIM_STEPS, diffusion.timesteps)
        if steps > diffusion.timesteps:
            raise GentoolError(f"--steps {steps}: the model has only {diffusion.timesteps} "
                               "diffusion steps; use at most that many.")
        # tau_S > ... > tau_1 = 1, evenly spaced and distinct, then 0 where alpha_bar_0 = 1 leaves x0_hat
        schedule = torch.linspace(diffusion.timesteps, 1, steps).round().long().tolist() + [0]
        for step, previous in itertools.pairwise(schedule):
            t = torch.full((len(x),), step, dtype=torch.long, device=x.device)
            eps = guided_noise(model, x, t, labels, self.config.guidance)
            noise = torch.randn(x.shape, generator=generator, device=x.device) if self.config.eta > 0 else None
            x = diffusion.ddim_step(x, t, torch.full_like(t, previous), eps, self.config.eta, noise)
        return x
