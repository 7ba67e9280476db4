"""The invertible layers of Glow (Kingma & Dhariwal 2018), each with its log-determinant.

Every layer maps x to y = f(x) and also returns log |det df/dx| for each image, so
a chain of layers gives the exact log-likelihood by the change of variables,
log p(x) = log p(f(x)) + sum of the layers' log-determinants. ``inverse`` undoes
``forward``, which is how a flow draws images: x = f^-1(z) for z from the prior.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn


class Layer(nn.Module, ABC):
    """An invertible map of N x C x H x W tensors."""

    @abstractmethod
    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """y = f(x) and log |det df/dx| per image (shape N)."""

    @abstractmethod
    def inverse(self, y: Tensor) -> Tensor:
        """x = f^-1(y)."""


class Chain(Layer):
    """Layers applied one after the other; log-determinants add up."""

    def __init__(self, layers: Iterable[Layer]):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        logdet = x.new_zeros(len(x))
        for layer in self.layers:
            x, layer_logdet = layer(x)
            logdet = logdet + layer_logdet
        return x, logdet

    def inverse(self, y: Tensor) -> Tensor:
        for layer in reversed(self.layers):
            y = layer.inverse(y)
        return y


class Squeeze(Layer):
    """Trade space for channels: each 2 x 2 block of pixels becomes 4 channels.

    It only moves pixels around (a permutation), so its log-determinant is 0; it
    lets the next 1x1 convolutions and couplings mix pixels that were neighbours.
    """

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        n, c, h, w = x.shape
        y = x.view(n, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)  # N x C x 2 x 2 x H/2 x W/2
        return y.reshape(n, 4 * c, h // 2, w // 2), x.new_zeros(n)

    def inverse(self, y: Tensor) -> Tensor:
        n, c, h, w = y.shape
        x = y.view(n, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)  # N x C/4 x H x 2 x W x 2
        return x.reshape(n, c // 4, 2 * h, 2 * w)


class ActNorm(Layer):
    """A scale and shift per channel, y = (x + bias) * exp(log_scale), set from data.

    Glow's stand-in for batch norm, which would make an image's log-likelihood depend
    on its batch: the first batch seen in training sets bias and scale so that it
    comes out with zero mean and unit variance per channel; after that they are
    ordinary parameters. The ``initialized`` buffer is saved with the weights, so a
    loaded or resumed model is never initialised again.

    The parameter ``logs`` is log_scale / 3 (Glow's ``logscale_factor``): Adam moves a
    parameter by about the learning rate per step whatever its gradient, so the scales,
    which a flow must grow by orders of magnitude (MNIST's blank background is 1/256
    wide), move three times as fast as the rest.
    """

    SPEED = 3.0

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.logs = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.register_buffer("initialized", torch.tensor(False))

    def log_scale(self) -> Tensor:
        return self.SPEED * self.logs  # 1 x C x 1 x 1

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.training and not self.initialized:
            self.initialize(x)
        log_scale = self.log_scale()
        logdet = x.shape[2] * x.shape[3] * log_scale.sum()  # the same for every image
        return (x + self.bias) * log_scale.exp(), logdet.expand(len(x))

    def inverse(self, y: Tensor) -> Tensor:
        return y * torch.exp(-self.log_scale()) - self.bias

    @torch.no_grad()
    def initialize(self, x: Tensor) -> None:
        """Standardise ``x`` per channel. Under torchrun the moments are averaged over all
        processes' shards, so every process starts from the same parameters."""
        x = x.detach().double()
        moments = torch.stack([x.mean(dim=(0, 2, 3)), x.square().mean(dim=(0, 2, 3))])  # 2 x C
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(moments)
            moments /= dist.get_world_size()
        mean, mean_square = moments
        std = (mean_square - mean.square()).clamp(min=0).sqrt() + 1e-6
        self.bias.copy_(-mean.view_as(self.bias))
        self.logs.copy_(-std.log().view_as(self.logs) / self.SPEED)
        self.initialized.fill_(True)


class InvertibleConv1x1(Layer):
    """A learned mixing of channels, y = W x at every pixel, W starting as a random rotation.

    It generalises the fixed channel permutations of Real NVP. log |det| = H W log |det W|;
    with ``lu``, W = P L (U + diag(sign_s * exp(log_s))) with P a fixed permutation, L unit
    lower and U strictly upper triangular, so log |det W| = sum(log_s) costs O(C) rather
    than the O(C^3) of a determinant.
    """

    def __init__(self, channels: int, lu: bool):
        super().__init__()
        self.lu = lu
        rotation = torch.linalg.qr(torch.randn(channels, channels))[0]  # C x C, |det| = 1
        if not lu:
            self.weight = nn.Parameter(rotation)
            return
        permutation, lower, upper = torch.linalg.lu(rotation)
        diagonal = upper.diagonal()  # a view of upper; every tensor kept below is a new one
        self.register_buffer("permutation", permutation)
        self.register_buffer("sign_s", diagonal.sign())
        self.lower = nn.Parameter(lower.tril(-1))
        self.upper = nn.Parameter(upper.triu(1))
        self.log_s = nn.Parameter(diagonal.abs().log())

    def matrix(self) -> Tensor:
        """W, C x C."""
        if not self.lu:
            return self.weight
        eye = torch.eye(len(self.log_s), dtype=self.log_s.dtype, device=self.log_s.device)
        upper = self.upper.triu(1) + torch.diag(self.sign_s * self.log_s.exp())
        return self.permutation @ (self.lower.tril(-1) + eye) @ upper

    def log_abs_det(self) -> Tensor:
        """log |det W|."""
        return self.log_s.sum() if self.lu else torch.linalg.slogdet(self.weight).logabsdet

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        logdet = x.shape[2] * x.shape[3] * self.log_abs_det()
        return F.conv2d(x, self.matrix()[:, :, None, None]), logdet.expand(len(x))

    def inverse(self, y: Tensor) -> Tensor:
        return F.conv2d(y, torch.linalg.inv(self.matrix())[:, :, None, None])


def zero_conv(in_channels: int, out_channels: int) -> nn.Conv2d:
    """A 3x3 convolution that starts at zero, so what it parameterises starts at its neutral value."""
    conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


class Coupling(Layer):
    """Keep the first half of the channels; transform the second with a shift and scale computed
    from the first by a small conv net. Inverting needs only the net's forward pass.

    affine (Glow): y_b = (x_b + t) * s with s = sigmoid(h + 2), positive and at most 1,
    which keeps deep flows stable; log |det| = sum(log s). additive (NICE): y_b = x_b + t,
    log |det| = 0. The net's last convolution starts at zero, so every coupling starts
    near the identity and a deep flow trains from its first step.
    """

    def __init__(self, channels: int, hidden: int, affine: bool):
        super().__init__()
        self.affine = affine
        self.kept = channels // 2
        changed = channels - self.kept
        self.net = nn.Sequential(
            nn.Conv2d(self.kept, hidden, 3, padding=1), nn.ReLU(),
            nn.Conv2d(hidden, hidden, 1), nn.ReLU(),
            zero_conv(hidden, 2 * changed if affine else changed),
        )

    def shift_and_log_scale(self, kept: Tensor) -> tuple[Tensor, Tensor | None]:
        """t and log s from the kept half; log s is None for an additive coupling."""
        h = self.net(kept)
        if not self.affine:
            return h, None
        shift, raw = h.chunk(2, dim=1)
        return shift, F.logsigmoid(raw + 2.0)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        kept, changed = x.split([self.kept, x.shape[1] - self.kept], dim=1)
        shift, log_scale = self.shift_and_log_scale(kept)
        if log_scale is None:
            return torch.cat([kept, changed + shift], dim=1), x.new_zeros(len(x))
        y = torch.cat([kept, (changed + shift) * log_scale.exp()], dim=1)
        return y, log_scale.flatten(1).sum(1)

    def inverse(self, y: Tensor) -> Tensor:
        kept, changed = y.split([self.kept, y.shape[1] - self.kept], dim=1)
        shift, log_scale = self.shift_and_log_scale(kept)
        if log_scale is not None:
            changed = changed * torch.exp(-log_scale)
        return torch.cat([kept, changed - shift], dim=1)
