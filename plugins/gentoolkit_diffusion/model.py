"""The ``ddpm`` model: a U-Net noise predictor under a fixed Gaussian diffusion, with an EMA copy.

Training uses the raw weights (``net``); in eval mode, sampling and evaluation use their
exponential moving average (``ema``), which the ``ema-adam`` trainer updates after each step.
Both are part of the state dict, so model.safetensors and the resume state hold both.
"""

from __future__ import annotations

import copy
import math
import typing
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from gentoolkit import ImageSpec, Model, Recipe, to_signed
from gentoolkit_diffusion.diffusion import GaussianDiffusion, Schedule, Variance
from gentoolkit_diffusion.unet import UNet


@runtime_checkable
class NoisePredictor(Protocol):
    """A model that predicts the noise eps in x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps
    under a known schedule: what the diffusion samplers and the ``eps-mse`` objective need."""

    diffusion: GaussianDiffusion
    num_classes: int

    def predict_noise(self, xt: Tensor, t: Tensor, labels: Tensor | None = None) -> Tensor:
        """eps_theta(x_t, t) for prepared x_t (N x C x H x W) at steps t (N, in 1..T). A conditional
        model takes labels (N); the label ``num_classes`` (or labels=None) asks for its
        unconditional prediction."""


@runtime_checkable
class AveragedModel(Protocol):
    """A model that keeps an exponential moving average of its weights, updated after each step."""

    def update_ema(self) -> None:
        """Move the averaged weights towards the current ones."""


@dataclass
class DDPMConfig:
    timesteps: int = 1000  # T, the number of diffusion steps
    schedule: Schedule = "linear"  # noise schedule: linear (Ho et al.) or cosine (Nichol & Dhariwal)
    variance: Variance = "large"  # fixed sigma_t^2 of p(x_{t-1} | x_t): beta_t (large) or beta~_t (small)
    base_channels: int = 64  # channels of the U-Net's first level
    channel_mult: tuple[int, ...] = (1, 2, 2)  # channels per level, as multiples of base_channels
    res_blocks: int = 2  # residual blocks per level
    attention_levels: tuple[int, ...] = (2,)  # levels (0 = full resolution) with self-attention
    dropout: float = 0.1  # dropout in the residual blocks
    ema: float = 0.9999  # decay of the weights' moving average used for sampling; 0: no average
    conditional: bool = False  # class-conditional: needs a data set with labels
    label_dropout: float = 0.1  # share of training labels replaced by "no label", for classifier-free guidance

    def __post_init__(self) -> None:
        for key in ("base_channels", "res_blocks"):
            if getattr(self, key) <= 0:
                raise ValueError(f"{key} must be a positive integer, got {getattr(self, key)}")
        if self.timesteps < 2:
            raise ValueError(f"timesteps must be at least 2, got {self.timesteps}")
        for key in ("schedule", "variance"):
            choices = typing.get_args(typing.get_type_hints(DDPMConfig)[key])
            if getattr(self, key) not in choices:
                raise ValueError(f"{key} must be one of {', '.join(choices)}, got {getattr(self, key)!r}")
        if not self.channel_mult or min(self.channel_mult) <= 0:
            raise ValueError(f"channel_mult must be positive integers, got {self.channel_mult}")
        levels = len(self.channel_mult)
        if any(not 0 <= level < levels for level in self.attention_levels):
            raise ValueError(f"attention_levels {self.attention_levels} must be levels of channel_mult "
                             f"{self.channel_mult}, 0 to {levels - 1}")
        for key in ("dropout", "label_dropout", "ema"):
            if not 0 <= getattr(self, key) < 1:
                raise ValueError(f"{key} must be in [0, 1), got {getattr(self, key)}")


class DDPM(Model):
    """Denoising diffusion (Ho et al. 2020): U-Net noise predictor, DDPM/DDIM sampling, bound in bits/dim."""

    name = "ddpm"
    family = "diffusion"
    Config = DDPMConfig
    default_objective = "eps-mse"
    default_trainer = "ema-adam"
    default_sampler = "ddim"
    grid_sampler = "ddim"
    recipe = Recipe(lr=2e-4, batch_size=128, epochs=20)
    nll_kind = "bound"

    @property
    def grid_options(self) -> dict[str, int]:
        """The per-epoch grids: a 20-step DDIM (or T steps, if fewer) is cheap and already clear."""
        return {"steps": min(20, self.config.timesteps)}

    @property
    def default_nll_k(self) -> int:
        """Every term of the bound: ``gentool evaluate --metric nll`` is exact unless --k is smaller."""
        return self.config.timesteps

    def __init__(self, config: DDPMConfig, spec: ImageSpec):
        super().__init__(config, spec)
        if config.conditional:
            if not spec.classes:
                raise ValueError("conditional=true needs a data set with class labels (mnist, fashion-mnist, "
                                 "shapes, a folder of class folders)")
            self.num_classes = spec.classes
        self.diffusion = GaussianDiffusion(config.timesteps, config.schedule, config.variance)
        self.net = UNet(spec.channels, config.base_channels, config.channel_mult, config.res_blocks,
                        config.attention_levels, config.dropout, self.num_classes)
        self.ema = copy.deepcopy(self.net).requires_grad_(False) if config.ema > 0 else None
        self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long))
        # whether the average has been updated, known on the host, so that sampling does not read
        # ema_updates back from the device at every network call; loading weights sets it again
        self.ema_ready = False
        self.register_load_state_dict_post_hook(lambda module, keys: module.note_ema_state())

    def note_ema_state(self) -> None:
        self.ema_ready = self.ema is not None and bool(self.ema_updates > 0)

    def prepare(self, batch: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Pixels k to x = k / 127.5 - 1 in [-1, 1], not dequantised: the decoder of the bound is
        discrete (a Gaussian integrated over each 8-bit value's bin), as in Ho et al."""
        return to_signed(batch)

    # ------------------------------------------------------------- the network

    def predict_noise(self, xt: Tensor, t: Tensor, labels: Tensor | None = None) -> Tensor:
        """eps_theta(x_t, t): the raw weights in training, their average in eval mode once it has
        been updated (a model trained by a trainer that keeps none samples with its raw weights).
        In training, ``label_dropout`` of the labels become "no label"."""
        net = self.net
        if not self.training and self.ema_ready:
            net = self.ema
        if not self.num_classes:
            return net(xt, t)
        null = torch.full((len(xt),), self.num_classes, dtype=torch.long, device=xt.device)
        if labels is None:
            labels = null
        elif self.training and self.config.label_dropout > 0:
            dropped = torch.rand(len(labels), device=labels.device) < self.config.label_dropout
            labels = torch.where(dropped, null, labels)
        return net(xt, t, labels)

    @torch.no_grad()
    def update_ema(self) -> None:
        """ema <- d ema + (1 - d) raw with d = min(ema, (1 + n) / (10 + n)) after n updates, the
        warm-up of TensorFlow's ExponentialMovingAverage: the average covers about the last
        n / 9 steps early on, so short runs sample from well-trained weights too. Computed on
        the device, so that an accelerator never waits for the host here."""
        if self.ema is None:
            return
        n = self.ema_updates.float()
        decay = torch.clamp((1 + n) / (10 + n), max=self.config.ema)
        averages = list(self.ema.parameters())
        torch._foreach_mul_(averages, decay)  # one fused operation over all tensors at a time
        torch._foreach_add_(averages, torch._foreach_mul(list(self.net.parameters()), 1 - decay))
        self.ema_updates += 1
        self.ema_ready = True

    # ------------------------------------------------------------- likelihood

    def log_prob(self, x: Tensor, *, k: int | None, generator: torch.Generator, max_floats: int) -> Tensor:
        """The variational lower bound on log P(x) of the 8-bit pixels, float64, per image (see
        GaussianDiffusion.log_likelihood_bound; k KL terms, all when k is None or at least T - 1).
        Conditional models are scored unconditionally (the "no label" class). Each network call
        takes as many images (or terms of the same images) as keep its first-level activations,
        base_channels x H x W each, within ``max_floats``."""
        batch = max(1, max_floats // (self.config.base_channels * self.spec.height * self.spec.width))
        return torch.cat([self.diffusion.log_likelihood_bound(self.predict_noise, part, k, generator, batch)
                          for part in x.split(batch)])

    def bits_per_dim(self, log_likelihood: float) -> float:
        """The bound is a probability of the 8-bit pixels themselves: -log2 P / D."""
        return -log_likelihood / (self.spec.pixels * math.log(2))
