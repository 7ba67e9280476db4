"""Glow (Kingma & Dhariwal 2018): a multi-scale normalizing flow with exact log-likelihood.

The image goes through ``levels`` scales. Each squeezes 2 x 2 pixel blocks into
channels and runs ``steps`` flow steps (actnorm, invertible 1x1 convolution,
coupling); every scale but the last then splits off half its channels as latent
variables, whose Gaussian prior is computed from the half that goes on (Glow's
split prior), and the last scale's output has a standard normal prior.

The latent code of an image is one N x D tensor (D = C x H x W): the
*standardised* noise eps = (z - mean) / std of every split, then the last scale's
output, each flattened. It is N(0, I) under the model, so scaling it by a
temperature T samples z ~ N(mean, (T std)^2), Glow's temperature sampling.
"""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass
from itertools import zip_longest
from typing import Literal

import torch
from torch import Tensor, nn

from gentoolkit import GentoolError, ImageSpec, Model, Recipe
from gentoolkit_flow import maths
from gentoolkit_flow.layers import ActNorm, Chain, Coupling, InvertibleConv1x1, Squeeze, zero_conv

CouplingKind = Literal["affine", "additive"]


@dataclass
class GlowConfig:
    levels: int = 2  # scales, each halving H and W; both must divide by 2^levels (28 px: at most 2)
    steps: int = 8  # flow steps (actnorm, 1x1 convolution, coupling) per level
    hidden: int = 64  # channels of each coupling's conv net
    coupling: CouplingKind = "affine"  # affine: shift and scale (Glow); additive: shift only (NICE)
    lu: bool = True  # LU-decomposed 1x1 convolutions: log-determinant in O(C) instead of O(C^3)

    def __post_init__(self) -> None:
        for key in ("levels", "steps", "hidden"):
            if getattr(self, key) <= 0:
                raise ValueError(f"{key} must be a positive integer, got {getattr(self, key)}")
        choices = typing.get_args(CouplingKind)
        if self.coupling not in choices:
            raise ValueError(f"coupling must be one of {', '.join(choices)}, got {self.coupling!r}")


def check_levels(levels: int, spec: ImageSpec) -> None:
    """Each level halves H and W, so both must divide by 2^levels; there is no padding,
    so the likelihood is always that of the data's own pixels."""
    side = 2 ** levels
    if spec.height % side == 0 and spec.width % side == 0:
        return
    common = math.gcd(spec.height, spec.width)
    most = (common & -common).bit_length() - 1  # how often 2 divides both sides
    size = -(-max(spec.height, spec.width) // side) * side
    allowed = f"allow at most levels={most}" if most else "allow no level"
    raise GentoolError(f"glow: levels={levels} needs image sides divisible by {side}, and "
                       f"{spec.height}x{spec.width} images {allowed}; lower levels or resize with --image-size {size}.")


class Glow(Model):
    """Glow normalizing flow (Kingma & Dhariwal 2018): exact log-likelihood, temperature sampling."""

    name = "glow"
    family = "flow"
    Config = GlowConfig
    default_objective = "mle"
    default_trainer = "adam"
    default_sampler = "prior"
    recipe = Recipe(lr=1e-3, batch_size=64, epochs=10)
    grid_options = {"temperature": 0.7}  # per-epoch grids at Glow's usual sampling temperature
    standard_normal_prior = True
    nll_kind = "exact"
    default_nll_k = None

    def __init__(self, config: GlowConfig, spec: ImageSpec):
        super().__init__(config, spec)
        check_levels(config.levels, spec)
        channels, height, width = spec.shape
        levels, priors = [], []
        self.latent_shapes: list[tuple[int, int, int]] = []  # the latent pieces: each split, then the top
        for level in range(config.levels):
            channels, height, width = 4 * channels, height // 2, width // 2  # after the squeeze
            layers = [Squeeze()]
            for _ in range(config.steps):
                layers += [ActNorm(channels), InvertibleConv1x1(channels, config.lu),
                           Coupling(channels, config.hidden, config.coupling == "affine")]
            levels.append(Chain(layers))
            if level < config.levels - 1:  # split: half the channels leave as latents
                channels //= 2
                priors.append(zero_conv(channels, 2 * channels))  # their mean and log-std, from the other half
                self.latent_shapes.append((channels, height, width))
        self.latent_shapes.append((channels, height, width))
        self.levels = nn.ModuleList(levels)
        self.priors = nn.ModuleList(priors)

    def prepare(self, batch: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Dequantise: x = (pixel + u) / 256 with u ~ U[0, 1), a point inside the pixel's bin,
        so a density of x bounds the probability of the 8-bit pixels."""
        noise = torch.rand(batch.shape, generator=generator, device=batch.device)
        return (batch.float() + noise) / 256

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Prepared images x in [0, 1]^D to their standardised latent codes (N x D) and log p(x) (N)."""
        h = x - 0.5  # centred; a shift has log-determinant 0
        log_p = x.new_zeros(len(x))
        codes = []
        for flow, prior in zip_longest(self.levels, self.priors):
            h, logdet = flow(h)
            log_p = log_p + logdet
            if prior is not None:
                h, z = h.chunk(2, dim=1)  # N x C/2 x H x W each
                mean, log_std = prior(h).chunk(2, dim=1)
                eps = (z - mean) * torch.exp(-log_std)
                # log N(z; mean, std^2) = log N(eps; 0, 1) - log std
                log_p = log_p + (maths.standard_normal_log_prob(eps) - log_std).flatten(1).sum(1)
                codes.append(eps.flatten(1))
        log_p = log_p + maths.standard_normal_log_prob(h).flatten(1).sum(1)
        codes.append(h.flatten(1))
        return torch.cat(codes, dim=1), log_p

    def encode_latent(self, x: Tensor) -> Tensor:
        """The exact latent code of prepared images: ``generate`` maps it back to them."""
        return self(x)[0]

    def inverse(self, codes: Tensor) -> Tensor:
        """Latent codes (N x D) back to images, not clipped to [0, 1]."""
        sizes = [c * h * w for c, h, w in self.latent_shapes]
        *splits, h = [piece.reshape(len(codes), *shape)
                      for piece, shape in zip(codes.split(sizes, dim=1), self.latent_shapes, strict=True)]
        for level in reversed(range(len(self.levels))):
            if level < len(self.priors):
                mean, log_std = self.priors[level](h).chunk(2, dim=1)
                h = torch.cat([h, mean + log_std.exp() * splits[level]], dim=1)
            h = self.levels[level].inverse(h)
        return h + 0.5

    def log_density(self, x: Tensor) -> Tensor:
        """log p(x) per prepared image, differentiable: what the ``mle`` objective maximises."""
        return self(x)[1]

    def log_prob(self, x: Tensor, *, k: int | None, generator: torch.Generator, max_floats: int) -> Tensor:
        """Exact log p(x), float64, in chunks of images whose activations (a few times the
        widest, ``hidden`` channels at H/2 x W/2) stay within about ``max_floats``; k is unused."""
        chunk = max(1, max_floats // (self.config.hidden * self.spec.height * self.spec.width))
        return torch.cat([self.log_density(part).double() for part in x.split(chunk)])

    def bits_per_dim(self, log_likelihood: float) -> float:
        """log p is a density of dequantised 8-bit pixels: on the usual 8-bit scale."""
        return maths.bits_per_dim(log_likelihood, self.spec.pixels)

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return torch.randn(n, self.spec.pixels, generator=generator, device=self.device)

    def generate(self, z: Tensor) -> Tensor:
        return self.inverse(z).clamp(0.0, 1.0)
