"""Folders of images, decoded once into a uint8 tensor and cached as safetensors.

Decoding tens of thousands of JPEGs takes minutes, so the decoded tensor is
saved in the user cache (never in the folder, which may not be the user's),
under a key made of the folder's file list, sizes and modification times. The
next run with the same folder, size and mode loads it in seconds; any change
to the folder gives a new key, a fresh decode, and the stale file is removed.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image, ImageOps
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor
from torchvision.transforms.functional import pil_to_tensor

from gentoolkit import DataOptions, Dataset, GentoolError, ImageData, ImageSpec, cache_dir
from gentoolkit_datasets.memory import fits_in_memory, require_memory

CHANNELS = {"rgb": 3, "grey": 1}  # per value of the ``mode`` option
IMAGE_SUFFIXES = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
CACHE_VERSION = 2  # part of every cache key: bump it when decoding changes, so old caches are not reused
DECODE_CHUNK = 1024  # files handed to the thread pool at once; bounds the decoded images waiting in flight
STREAM_BATCH = 256  # the largest batch a streamed folder is expected to decode at once

FileEntry = tuple[str, int, int]  # (path relative to the folder, size in bytes, mtime in ns)


# ------------------------------------------------------------------ decoding


def decode_image(path: Path, size: int, mode: str) -> Tensor | None:
    """One image as C x size x size uint8, or None when it is not a readable image.

    Like torchvision's Resize(size) + CenterCrop(size): the shorter side is
    scaled to ``size`` and the centre cropped. ``mode`` is "rgb" or "grey".
    """
    pil_mode = "RGB" if mode == "rgb" else "L"
    try:
        with Image.open(path) as image:
            image.draft(pil_mode, (size, size))  # JPEG: decode at 1/2, 1/4 or 1/8 scale when that is enough
            image = to_mode(ImageOps.exif_transpose(image), pil_mode)
            return pil_to_tensor(ImageOps.fit(image, (size, size), Image.Resampling.BILINEAR))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):  # not an image, corrupt, truncated
        return None


def opens(path: Path) -> bool:
    """Whether PIL recognises ``path`` as an image from its header (without decoding it)."""
    try:
        with Image.open(path) as image:
            return image.size[0] > 0
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return False


def to_mode(image: Image.Image, pil_mode: str) -> Image.Image:
    """``image`` in "RGB" or "L" from any PIL mode: transparency on white, deep pixels scaled to 8 bits."""
    if image.mode == "F" or image.mode.startswith("I"):  # convert() would clip them at 255: white or black
        image = to_8_bits(image)
    if image.has_transparency_data:  # RGBA, LA, PA, or P with a transparent colour
        image = Image.alpha_composite(Image.new("RGBA", image.size, "white"), image.convert("RGBA"))
    return image.convert(pil_mode)


def to_8_bits(image: Image.Image) -> Image.Image:
    """A float (F) or integer (I, I;16, I;16B...) grey image as 8-bit grey ("L").

    Floats are taken to span 0..1 and integers 0..65535 (16-bit scans); an image
    with values beyond that range is scaled by its own maximum, so it is never
    clipped to white. Negative and non-finite values are black.
    """
    values = np.asarray(image, dtype=np.float64)
    values = np.where(np.isfinite(values), values, 0).clip(min=0)
    full_scale = max(1.0 if image.mode == "F" else 65535.0, values.max())
    return Image.fromarray(np.rint(values * (255 / full_scale)).astype(np.uint8))


def decode_all(folder: Path, files: list[FileEntry], size: int, mode: str) -> tuple[Tensor, list[str]]:
    """The readable images among ``files`` (N x C x size x size uint8) and the paths of the others.

    Threads are enough: PIL releases the GIL while it decodes and resizes.
    """
    images = torch.empty(len(files), CHANNELS[mode], size, size, dtype=torch.uint8)
    count, unreadable = 0, []
    decode = partial(decode_image, size=size, mode=mode)
    with ThreadPoolExecutor() as pool:
        for start in range(0, len(files), DECODE_CHUNK):
            names = [name for name, _, _ in files[start:start + DECODE_CHUNK]]
            for name, image in zip(names, pool.map(decode, [folder / name for name in names]), strict=True):
                if image is None:
                    unreadable.append(name)
                else:
                    images[count] = image
                    count += 1
    return images[:count], unreadable


# ------------------------------------------------------------------- folder


def scan(folder: Path) -> tuple[list[FileEntry], list[str]]:
    """The image files under ``folder`` (sorted, with size and mtime) and the other files.

    Hidden files and folders (caches written there by older versions among them) are left out.
    """
    images, others = [], []
    for directory, subdirs, names in os.walk(folder):
        subdirs[:] = [d for d in subdirs if not d.startswith(".")]
        for name in names:
            if name.startswith("."):
                continue
            path = Path(directory, name)
            relative = path.relative_to(folder).as_posix()
            try:
                stat = path.stat()
            except OSError:  # a broken link
                others.append(relative)
                continue
            if path.suffix.lower() in IMAGE_SUFFIXES:
                images.append((relative, stat.st_size, stat.st_mtime_ns))
            else:
                others.append(relative)
    return sorted(images), sorted(others)


class StreamedImages:
    """A folder too large to decode into memory, decoded batch by batch when indexed.

    It behaves like the uint8 N x C x H x W tensor the training loop gathers
    batches from (``len``, ``shape``, ``device``, ``to``, indexing by a tensor of
    indices), so the loop runs unchanged; a thread pool decodes each batch.
    """

    def __init__(self, folder: Path, names: list[str], size: int, mode: str,
                 device: torch.device | None = None, pool: ThreadPoolExecutor | None = None):
        self.folder, self.names, self.size, self.mode = folder, names, size, mode
        self.device = device or torch.device("cpu")
        self.pool = pool or ThreadPoolExecutor()
        self.shape = torch.Size([len(names), CHANNELS[mode], size, size])

    def __len__(self) -> int:
        return len(self.names)

    def to(self, device: torch.device | str) -> StreamedImages:
        return StreamedImages(self.folder, self.names, self.size, self.mode, torch.device(device), self.pool)

    def subset(self, index: Tensor | slice) -> StreamedImages:
        """The images at ``index``, still on disk."""
        names = self.names[index] if isinstance(index, slice) else [self.names[i] for i in index.tolist()]
        return StreamedImages(self.folder, names, self.size, self.mode, self.device, self.pool)

    def __getitem__(self, index: Tensor | slice) -> Tensor | StreamedImages:
        """A decoded batch for a tensor of indices; a slice stays on disk."""
        if isinstance(index, slice):
            return self.subset(index)
        paths = [self.folder / self.names[i] for i in index.tolist()]
        images = list(self.pool.map(partial(decode_image, size=self.size, mode=self.mode), paths))
        for path, image in zip(paths, images, strict=True):
            if image is None:
                raise GentoolError(f"{path} could not be decoded while streaming the folder; remove it or "
                                   "replace it with a readable image.")
        return torch.stack(images).to(self.device)


def load_folder(folder: Path, size: int, mode: str) -> Tensor | StreamedImages:
    """Every readable image under ``folder`` as N x C x size x size uint8, from the cache when it is current.

    Unreadable files are skipped with one warning that counts them. A folder too
    large for memory is streamed from disk instead (slower: every epoch decodes again).
    """
    folder = folder.resolve()
    files, others = scan(folder)
    if not files:
        raise GentoolError(f"no images in {folder} or its subfolders; expected files ending in "
                           f"{', '.join(IMAGE_SUFFIXES)}.")
    require_memory(f"image folder {folder}", len(files), CHANNELS[mode], size, at_once=STREAM_BATCH)
    if not fits_in_memory(len(files), CHANNELS[mode], size):
        warnings.warn(f"{len(files)} images of {size} x {size} would not fit in memory, so they are decoded "
                      "from disk batch by batch, every epoch (slower); a smaller --image-size lets them be "
                      "decoded once and cached.", stacklevel=3)
        names = [name for name, _, _ in files]
        with ThreadPoolExecutor() as pool:  # headers only: cheap, and catches most broken files up front
            readable = list(pool.map(opens, [folder / name for name in names]))
        good = [name for name, ok in zip(names, readable, strict=True) if ok]
        skipped = len(others) + len(names) - len(good)
        if skipped:
            warnings.warn(f"skipped {skipped} files that are not readable images in {folder}", stacklevel=3)
        return StreamedImages(folder, good, size, mode)
    path = cache_path(folder, files, size, mode)
    cached = read_cache(path, CHANNELS[mode], size)
    if cached is not None:
        images, unreadable = cached
    else:
        images, unreadable = decode_all(folder, files, size, mode)
        if len(images) == 0:
            raise GentoolError(f"none of the {len(files)} image files in {folder} could be read; "
                               "are they corrupt or truncated?")
        write_cache(path, images, unreadable)
    skipped = others + unreadable
    if skipped:
        examples = ", ".join(skipped[:3]) + (", ..." if len(skipped) > 3 else "")
        warnings.warn(f"skipped {len(skipped)} files that are not readable images in {folder}: {examples}",
                      stacklevel=3)
    return images


# -------------------------------------------------------------------- cache


def cache_path(folder: Path, files: list[FileEntry], size: int, mode: str) -> Path:
    """Where the decoded folder is cached: always in the user cache, never in the folder.

    The folder may be someone else's (named by a run's config.json), so reading it
    must leave it untouched. Each folder gets its own directory there, named by a
    hash of its resolved path; the file's key covers the decoding settings and every
    image's name, size and modification time.
    """
    content = json.dumps([CACHE_VERSION, str(folder), size, mode, files])
    key = hashlib.sha256(content.encode()).hexdigest()[:20]
    directory = cache_dir("folders", hashlib.sha256(str(folder).encode()).hexdigest()[:20])
    return directory / f"{mode}{size}-{key}.safetensors"


def read_cache(path: Path, channels: int, size: int) -> tuple[Tensor, list[str]] | None:
    """The cached images and unreadable file names, or None when there is no usable cache.

    A damaged cache, or one holding images of another shape, is decoded afresh and overwritten.
    """
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as cache:
            images, unreadable = cache.get_tensor("images"), json.loads((cache.metadata() or {})["unreadable"])
    except (OSError, SafetensorError, KeyError, ValueError):
        return None
    if images.dtype != torch.uint8 or images.shape[1:] != (channels, size, size):
        return None
    return images, unreadable


def write_cache(path: Path, images: Tensor, unreadable: list[str]) -> None:
    """Save the decoded images atomically and remove the stale caches of the same folder, size and mode.

    A cache that cannot be written is only a warning: the data is already decoded.
    """
    temporary = path.with_name(f".tmp-{uuid.uuid4().hex}.safetensors")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({"images": images}, str(temporary), metadata={"unreadable": json.dumps(unreadable)})
        os.replace(temporary, path)
    except (OSError, SafetensorError) as exc:
        warnings.warn(f"could not write the decode cache {path} ({exc}); the folder will be decoded again "
                      "next run.", stacklevel=4)
        return
    finally:
        with suppress(OSError):  # no folder to hold it: nothing to remove
            temporary.unlink(missing_ok=True)
    stale_prefix = path.name[:path.name.rindex("-") + 1]  # mode + size + "-"
    for stale in path.parent.glob(f"{stale_prefix}*.safetensors"):
        if stale != path:
            stale.unlink(missing_ok=True)


# ----------------------------------------------------------------- datasets


def split(images: Tensor | StreamedImages, test_fraction: float, seed: int) -> tuple[Tensor, Tensor | None]:
    """A seeded random train/test split; no test split when ``test_fraction`` is 0."""
    if test_fraction == 0:
        return images, None
    n_test = round(len(images) * test_fraction)
    if not 0 < n_test < len(images):
        raise GentoolError(f"data.test_fraction={test_fraction} of {len(images)} images leaves a split empty; "
                           "set it so both splits get at least one image, or to 0 for no test split.")
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    if isinstance(images, StreamedImages):  # split the file list, decode nothing yet
        return images.subset(order[n_test:]), images.subset(order[:n_test])
    return images[order[n_test:]], images[order[:n_test]]


class ImageFolder(Dataset):
    """Any folder of images (subfolders too), centre-cropped to squares; needs --data-dir."""

    name = "image-folder"

    @dataclass
    class Config:
        mode: Literal["rgb", "grey"] = "rgb"  # three colour channels, or one grey channel
        size: int = 64  # side of the square images, unless --image-size is given
        test_fraction: float = 0.0  # share of the images held out for testing; 0: no test split
        seed: int = 0  # seed of the train/test split

        def __post_init__(self) -> None:
            if self.size <= 0:
                raise ValueError(f"size must be a positive integer, got {self.size}")
            if not 0 <= self.test_fraction < 1:
                raise ValueError(f"test_fraction must be in [0, 1), got {self.test_fraction}")

    def folder(self, options: DataOptions) -> Path:
        """The folder to read; raise GentoolError when there is none."""
        if options.data_dir is None:
            raise GentoolError("image-folder needs --data-dir DIR, a folder of images (subfolders are searched too).")
        if not options.data_dir.is_dir():
            raise GentoolError(f"image folder {options.data_dir} does not exist or is not a folder; check --data-dir.")
        return options.data_dir

    def load(self, options: DataOptions) -> ImageData:
        size = options.image_size or self.config.size
        images = load_folder(self.folder(options), size, self.config.mode)
        train, test = split(images, self.config.test_fraction, self.config.seed)
        return ImageData(train=train, test=test, spec=ImageSpec(images.shape[1], size, size, binary=False))


class AnimeFaces(ImageFolder):
    """The source article's anime faces, 96 x 96 colour, from a folder you download."""

    name = "anime"

    @dataclass
    class Config(ImageFolder.Config):
        size: int = 96  # side of the square images, unless --image-size is given (the article's 96)

    def folder(self, options: DataOptions) -> Path:
        """--data-dir (or its anime/ subfolder, when it is a data root), else ``root/anime``."""
        if options.data_dir is None:
            folder = options.root / "anime"
        elif (options.data_dir / "anime").is_dir():
            folder = options.data_dir / "anime"
        else:
            folder = options.data_dir
        if not folder.is_dir():
            raise GentoolError(
                f"anime faces not found: {folder} does not exist. Download an anime-face set and put its images "
                "there, or pass --data-dir /path/to/faces; see docs/datasets.md.")
        return folder
