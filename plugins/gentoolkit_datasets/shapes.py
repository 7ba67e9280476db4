"""A procedural data set in the spirit of dSprites, drawn in code so training works offline.

Each image is one white shape (square, ellipse, triangle or heart) on black, at
a random scale, rotation and position. Shapes are drawn as masks over a pixel
coordinate grid, a batch of images at a time, so no Python runs per pixel.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from gentoolkit import DataOptions, Dataset, ImageData, ImageSpec
from gentoolkit_datasets.memory import require_memory

DEFAULT_SIZE = 28
RENDER_CHUNK = 2048  # images drawn at once; bounds the float grids in memory


# Each shape is a test on shape coordinates (u, v), in which the shape fits the
# unit disc; ``aspect`` (in [0.4, 1]) squashes the ellipse and is ignored by the rest.
def _square(u: Tensor, v: Tensor, aspect: Tensor) -> Tensor:
    return torch.maximum(u.abs(), v.abs()) <= 0.7


def _ellipse(u: Tensor, v: Tensor, aspect: Tensor) -> Tensor:
    return u * u + (v / aspect).square_() <= 1


def _triangle(u: Tensor, v: Tensor, aspect: Tensor) -> Tensor:
    # equilateral, corners on the unit circle: inside all three edges, which are 0.5 from the centre
    edges = [u * math.cos(a) + v * math.sin(a) for a in (math.pi / 6, 5 * math.pi / 6, 3 * math.pi / 2)]
    return torch.maximum(torch.maximum(edges[0], edges[1]), edges[2]) <= 0.5


def _heart(u: Tensor, v: Tensor, aspect: Tensor) -> Tensor:
    # the classic heart curve (x^2 + y^2 - 1)^3 = x^2 y^3, scaled and shifted into the unit disc
    x2, y = (1.25 * u).square_(), 1.25 * v + 0.15
    return (x2 + y * y - 1).pow_(3) <= x2 * y.pow(3)


SHAPES: tuple[Callable[[Tensor, Tensor, Tensor], Tensor], ...] = (_square, _ellipse, _triangle, _heart)


def render(kind: Tensor, scale: Tensor, angle: Tensor, centre: Tensor, aspect: Tensor, size: int) -> Tensor:
    """Draw N shapes (one per row of the parameters) as N x 1 x size x size uint8 images in {0, 255}.

    ``kind`` indexes :data:`SHAPES`; ``scale`` is the shape's radius and ``centre``
    (N x 2, x then y) its position, both in image coordinates spanning [-1, 1].
    """
    coords = (torch.arange(size) + 0.5) * (2 / size) - 1  # pixel centres in [-1, 1]
    dx = coords.view(1, 1, size) - centre[:, 0, None, None]  # N x 1 x size
    dy = coords.view(1, size, 1) - centre[:, 1, None, None]  # N x size x 1
    # rotation by -angle and division by the radius, folded into two small factors
    cos, sin = (angle.cos() / scale)[:, None, None], (angle.sin() / scale)[:, None, None]
    images = torch.zeros(len(kind), 1, size, size, dtype=torch.uint8)
    for index, inside in enumerate(SHAPES):
        i = (kind == index).nonzero().squeeze(1)
        u = cos[i] * dx[i] + sin[i] * dy[i]  # n x size x size, shape coordinates
        v = cos[i] * dy[i] - sin[i] * dx[i]
        images[i, 0] = inside(u, v, aspect[i, None, None]).to(torch.uint8) * 255
    return images


class Shapes(Dataset):
    """Procedural squares, ellipses, triangles and hearts, 28 x 28 binary; no download."""

    name = "shapes"

    @dataclass
    class Config:
        train_size: int = 20000  # training images
        test_size: int = 2000  # test images; 0: no test split
        seed: int = 0  # the same seed draws the same images

        def __post_init__(self) -> None:
            if self.train_size <= 0:
                raise ValueError(f"train_size must be a positive integer, got {self.train_size}")
            if self.test_size < 0:
                raise ValueError(f"test_size must be 0 or more, got {self.test_size}")

    def load(self, options: DataOptions) -> ImageData:
        size = options.image_size or DEFAULT_SIZE
        n = self.config.train_size + self.config.test_size
        require_memory("shapes", n, 1, size)
        g = torch.Generator().manual_seed(self.config.seed)
        # Every parameter is drawn up front, so the images do not depend on RENDER_CHUNK.
        kind = torch.randint(len(SHAPES), (n,), generator=g)
        scale = 0.4 + 0.45 * torch.rand(n, generator=g)
        angle = 2 * math.pi * torch.rand(n, generator=g)
        centre = (2 * torch.rand(n, 2, generator=g) - 1) * (1 - scale[:, None])  # the shape stays in the frame
        aspect = 0.4 + 0.6 * torch.rand(n, generator=g)
        params = (kind, scale, angle, centre, aspect)
        images = torch.cat([render(*(p[i:i + RENDER_CHUNK] for p in params), size=size)
                            for i in range(0, n, RENDER_CHUNK)])
        train, test = images.split([self.config.train_size, self.config.test_size])
        train_labels, test_labels = kind.split([self.config.train_size, self.config.test_size])
        has_test = self.config.test_size > 0
        return ImageData(train=train, test=test if has_test else None, spec=ImageSpec(1, size, size, binary=True),
                         train_labels=train_labels, test_labels=test_labels if has_test else None)
