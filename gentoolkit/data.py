"""In-memory image data: pixel scaling and batching by index.

A data set lives in one uint8 tensor on the training device. An epoch is a
random permutation of indices, and a batch is one gather from that tensor,
so no per-sample Python runs in the training loop.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor


def to_unit(batch: Tensor) -> Tensor:
    """uint8 pixels to floats in [0, 1]."""
    return batch.float().div_(255.0)


def to_signed(batch: Tensor) -> Tensor:
    """uint8 pixels to floats in [-1, 1], the range of a Tanh generator."""
    return batch.float().div_(127.5).sub_(1.0)


def from_signed(images: Tensor) -> Tensor:
    """Floats in [-1, 1] back to [0, 1]."""
    return images.add(1.0).mul_(0.5).clamp_(0.0, 1.0)


def binarize(probabilities: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Draw {0, 1} pixels with the given probabilities (dynamic binarisation)."""
    return torch.bernoulli(probabilities, generator=generator)


def index_batches(n: int, batch_size: int, *, shuffle: bool, drop_last: bool,
                  generator: torch.Generator | None = None, device: torch.device | str = "cpu",
                  ) -> Iterator[Tensor]:
    """Yield index tensors covering ``range(n)`` once, in random order when ``shuffle``."""
    order = (torch.randperm(n, generator=generator).to(device) if shuffle
             else torch.arange(n, device=device))
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        yield order[start:start + batch_size]


def batch_count(n: int, batch_size: int, drop_last: bool) -> int:
    """How many batches :func:`index_batches` yields."""
    return n // batch_size if drop_last else -(-n // batch_size)
