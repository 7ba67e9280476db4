"""MNIST and Fashion-MNIST, read through torchvision straight into uint8 tensors.

torchvision keeps each split as one ``.data`` tensor (N x 28 x 28 uint8), so it
is used as is: no per-sample ``__getitem__``, no PIL round trip, no ToTensor.
"""

from __future__ import annotations

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
        """One split from ``root/<Name>/raw``, downloading it there when allowed."""
        title = self.source.__name__  # also the folder torchvision reads from
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
