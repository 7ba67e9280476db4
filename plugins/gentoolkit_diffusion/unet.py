"""The noise-prediction network: the U-Net of Ho et al. 2020 (a PixelCNN++-style backbone).

Residual blocks with group norm take a sinusoidal embedding of the step t (plus a class
embedding for conditional models) as a per-channel scale and shift; self-attention runs at the levels
named, and always in the middle, at the lowest resolution. Each level but the last halves
H and W, so sides that do not divide by 2^(levels - 1) are zero-padded up to the next size that
does and the output is cropped back: the diffusion itself always runs on the data's own pixels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def timestep_embedding(t: Tensor, dim: int) -> Tensor:
    """Sinusoidal embedding of the steps t (N) as in the Transformer: sin and cos of t at
    dim / 2 frequencies from 1 to 1/10000. N x dim, float32."""
    half = dim // 2
    frequencies = torch.exp(-math.log(10000) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float()[:, None] * frequencies[None]  # N x dim/2
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def group_norm(channels: int) -> nn.GroupNorm:
    """Group norm with up to 32 groups of at least 4 channels where the channels allow (Ho et al.:
    32 groups of 4 at 128 channels). A group of one channel would remove each channel's mean
    over the image, and with it what a narrow network knows about the image's overall level."""
    return nn.GroupNorm(math.gcd(32, channels, channels // 4), channels)


class ResBlock(nn.Module):
    """GN-SiLU-conv, GN scaled and shifted by the embedding, SiLU-dropout-conv, plus the
    (1x1-projected) input.

    The embedding scales and shifts the *normalised* features (Nichol & Dhariwal 2021's
    scale-shift norm): a shift added before group norm, as in Ho et al., is removed by it
    wherever a group holds few channels.
    """

    def __init__(self, in_channels: int, out_channels: int, embed_dim: int, dropout: float):
        super().__init__()
        self.norm1 = group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.embed = nn.Linear(embed_dim, 2 * out_channels)
        self.norm2 = group_norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity (its skip path)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.embed(F.silu(emb))[:, :, None, None].chunk(2, dim=1)  # N x C x 1 x 1 each
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Single-head self-attention over all H x W positions, with a residual connection."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).flatten(2).transpose(1, 2).chunk(3, dim=2)  # N x HW x C each
        attended = F.scaled_dot_product_attention(q, k, v)  # N x HW x C
        return x + self.out(attended.transpose(1, 2).reshape(n, c, h, w))


class Level(nn.Module):
    """The residual blocks of one resolution, each followed by attention where asked for."""

    def __init__(self, channels: list[tuple[int, int]], embed_dim: int, dropout: float, attention: bool):
        super().__init__()
        self.blocks = nn.ModuleList(ResBlock(i, o, embed_dim, dropout) for i, o in channels)
        self.attention = nn.ModuleList(SelfAttention(o) if attention else nn.Identity() for _, o in channels)


class UNet(nn.Module):
    """eps_theta(x_t, t[, label]): predicts the noise in x_t, same shape as x_t.

    ``channel_mult`` gives the channels of each level as multiples of ``base_channels``;
    ``attention_levels`` (0 = full resolution) the levels whose blocks have self-attention.
    With ``num_classes`` > 0 a label embedding (one extra row for "no label", the class
    ``num_classes``) is added to the step embedding.
    """

    def __init__(self, image_channels: int, base_channels: int, channel_mult: tuple[int, ...], res_blocks: int,
                 attention_levels: tuple[int, ...], dropout: float, num_classes: int = 0):
        super().__init__()
        self.base_channels = base_channels
        self.stride = 2 ** (len(channel_mult) - 1)  # how much the lowest level is smaller
        embed_dim = 4 * base_channels
        self.time_embed = nn.Sequential(nn.Linear(base_channels, embed_dim), nn.SiLU(),
                                        nn.Linear(embed_dim, embed_dim))
        self.label_embed = nn.Embedding(num_classes + 1, embed_dim) if num_classes else None
        self.conv_in = nn.Conv2d(image_channels, base_channels, 3, padding=1)

        widths = [base_channels * m for m in channel_mult]
        down, skips, ch = [], [base_channels], base_channels
        for level, width in enumerate(widths):
            pairs = [(ch if i == 0 else width, width) for i in range(res_blocks)]
            down.append(Level(pairs, embed_dim, dropout, level in attention_levels))
            ch = width
            skips += [width] * res_blocks
            if level < len(widths) - 1:
                skips.append(width)  # the downsampled map is a skip too
        self.down = nn.ModuleList(down)
        self.downsample = nn.ModuleList(nn.Conv2d(w, w, 3, stride=2, padding=1) for w in widths[:-1])

        self.mid1 = ResBlock(ch, ch, embed_dim, dropout)
        self.mid_attention = SelfAttention(ch)
        self.mid2 = ResBlock(ch, ch, embed_dim, dropout)

        up = []
        for level, width in reversed(list(enumerate(widths))):
            pairs = []
            for _ in range(res_blocks + 1):  # one block more than going down: each takes a skip
                pairs.append((ch + skips.pop(), width))
                ch = width
            up.append(Level(pairs, embed_dim, dropout, level in attention_levels))
        self.up = nn.ModuleList(up)
        self.upsample = nn.ModuleList(nn.Conv2d(w, w, 3, padding=1) for w in reversed(widths[1:]))

        self.norm_out = group_norm(ch)
        self.conv_out = nn.Conv2d(ch, image_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)  # predicts zero noise at the start
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: Tensor, t: Tensor, labels: Tensor | None = None) -> Tensor:
        height, width = x.shape[-2:]
        pad_h, pad_w = -height % self.stride, -width % self.stride
        if pad_h or pad_w:  # left, right, top, bottom
            x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
        emb = self.time_embed(timestep_embedding(t, self.base_channels))  # N x 4 base
        if self.label_embed is not None:
            emb = emb + self.label_embed(labels)

        h = self.conv_in(x)
        skips = [h]
        for i, level in enumerate(self.down):
            for block, attention in zip(level.blocks, level.attention, strict=True):
                h = attention(block(h, emb))
                skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
                skips.append(h)
        h = self.mid2(self.mid_attention(self.mid1(h, emb)), emb)
        for i, level in enumerate(self.up):
            for block, attention in zip(level.blocks, level.attention, strict=True):
                h = attention(block(torch.cat([h, skips.pop()], dim=1), emb))
            if i < len(self.upsample):
                h = self.upsample[i](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        h = self.conv_out(F.silu(self.norm_out(h)))
        return h[..., pad_h // 2:pad_h // 2 + height, pad_w // 2:pad_w // 2 + width]
