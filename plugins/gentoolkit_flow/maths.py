"""Densities and units of the flow plugin, in nats unless said otherwise."""

from __future__ import annotations

import math

from torch import Tensor

LOG_2PI = math.log(2 * math.pi)


def standard_normal_log_prob(z: Tensor) -> Tensor:
    """log N(z; 0, 1) element by element, constant included."""
    return -0.5 * (LOG_2PI + z.square())


def bits_per_dim(log_likelihood: Tensor | float, dims: int, levels: int = 256) -> Tensor | float:
    """Bits per dimension of ``levels``-level pixels from a density of them dequantised into [0, 1]^D.

    Each pixel value owns a bin of width 1 / levels, and the density integrates over it to
    (at least, by Jensen) the probability of the value, so
    -log2 P(pixels) <= (-log p(x) + D log levels) / (D log 2): the uniform density
    (log p = 0) scores log2(levels), 8 bits for 8-bit images.
    """
    return (-log_likelihood + dims * math.log(levels)) / (dims * math.log(2))
