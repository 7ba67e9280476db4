"""MNIST and Fashion-MNIST, read through torchvision straight into uint8 tensors.

torchvision keeps each split as one ``.data`` tensor (N x 28 x 28 uint8), so it
is used as is: no per-sample ``__getitem__``, no PIL round trip, no ToTensor.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor

from gentoolkit import DataOptions, Dataset, GentoolError, ImageData, ImageSpec
from gentoolkit_datasets.memory import require_memory

RESIZE_CHUNK = 4096  # images resized at once; bounds the float copy in memory


def resize(images: Tensor, size: int) -> Tensor:
    """Square uint8 images (N x C x H x W) resized to ``size`` x ``size``: bilinear with antialiasing."""
    chunks = [F.interpolate(chunk.float(), size=(size, size), mode="bilinear", antialias=True)
              .round_().clamp_(0, 255).to(torch.uint8)
              for chunk in images.split(RESIZE_CHUNK)]
    return torch.cat(chunks)


# The header of each IDX file, by split (train or not): a magic number (0x0803 for
# uint8 images of three dimensions, 0x0801 for uint8 labels of one) and the sizes of
# its dimensions, each a big-endian uint32; one byte per value follows. Fashion-MNIST
# has the same files as MNIST, with the same shapes.
IDX_FILES = {
    True: {"train-images-idx3-ubyte": (0x0803, 60000, 28, 28), "train-labels-idx1-ubyte": (0x0801, 60000)},
    False: {"t10k-images-idx3-ubyte": (0x0803, 10000, 28, 28), "t10k-labels-idx1-ubyte": (0x0801, 10000)},
}


def idx_problem(path: Path, header: tuple[int, ...]) -> str | None:
    """What is wrong with the IDX file at ``path`` (its size, then its header), or None when it
    looks right or is not there (a missing file is torchvision's to download or report)."""
    if not path.is_file():
        return None
    expected = 4 * len(header) + math.prod(header[1:])
    size = path.stat().st_size
    if size != expected:
        return f"{size} bytes instead of {expected}" + (" (truncated)" if size < expected else "")
    with path.open("rb") as file:
        found = struct.unpack(f">{len(header)}I", file.read(4 * len(header)))
    if found != header:
        return f"its header (magic number, then shape) is {' '.join(map(str, found))} instead of " \
               f"{' '.join(map(str, header))}"
    return None


class MNIST(Dataset):
    """Handwritten digits, 28 x 28 grey, 60k train and 10k test images; downloaded once."""

    name = "mnist"
    source: ClassVar[type[torchvision.datasets.MNIST]] = torchvision.datasets.MNIST
    binary: ClassVar[bool] = True  # nearly all pixels are black or white

    def load(self, options: DataOptions) -> ImageData:
        train, test = self._split(options, train=True), self._split(options, train=False)
        train_images, test_images = train.data.unsqueeze(1), test.data.unsqueeze(1)  # N x 1 x 28 x 28
        size = options.image_size or 28
        if size != 28:
            require_memory(self.source.__name__, len(train_images) + len(test_images), 1, size)
            train_images, test_images = resize(train_images, size), resize(test_images, size)
        return ImageData(train=train_images, test=test_images, spec=ImageSpec(1, size, size, binary=self.binary),
                         train_labels=train.targets, test_labels=test.targets)

    def _split(self, options: DataOptions, train: bool) -> torchvision.datasets.MNIST:
        """One split from ``root/<Name>/raw``, downloading it there when allowed.

        Its files are checked first: torchvision takes any file that exists for a good
        one, and fails on a damaged one with an assertion or a reshape error.
        """
        title = self.source.__name__  # also the folder torchvision reads from
        for name, header in IDX_FILES[train].items():
            problem = idx_problem(options.root / title / "raw" / name, header)
            if problem:
                fix = ("delete it and run again to download it afresh" if options.download else
                       "delete it and run again without --no-download to download it afresh, or put an intact "
                       "copy there")
                raise GentoolError(f"{title} file {options.root / title / 'raw' / name} is damaged: {problem}; "
                                   f"{fix}.")
        try:
            return self.source(root=options.root, train=train, download=options.download)
        except (RuntimeError, OSError) as exc:  # torchvision's "not found" and download failures
            if not options.download:
                raise GentoolError(
                    f"{title} not found under {options.root}; drop --no-download to fetch it, or point "
                    f"--data-dir / $GENTOOL_DATA_DIR at a folder holding {title}/raw.") from None
            reason = " ".join(str(exc).split())  # torchvision's message spans lines, one per mirror
            raise GentoolError(
                f"could not download {title} into {options.root / title / 'raw'} ({reason}); check the network, "
                f"or put the four {title} files there yourself and add --no-download.") from exc


class FashionMNIST(MNIST):
    """Zalando clothing pictures, 28 x 28 grey, 60k train and 10k test images; downloaded once."""

    name = "fashion-mnist"
    source = torchvision.datasets.FashionMNIST
    binary = False  # real grey levels: binarising would destroy the textures
