"""Writing generated images: grids (PNG, JPEG, WebP) or one file per image for people,
safetensors tensors for scripts."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from pathlib import Path

import torch
from PIL import Image, features
from torchvision.utils import make_grid

from gentoolkit.checkpoint import atomic_write, write_json, write_tensors
from gentoolkit.errors import GentoolError
from gentoolkit.interfaces import Samples
from gentoolkit.rundir import RunDir

IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}  # suffix: Pillow's format
FORMATS = (*IMAGE_FORMATS, ".safetensors")
QUALITY = 95  # JPEG and WebP: no visible loss on generated images, a fifth of a PNG's size on photos
PADDING = 2  # pixels between the images of a grid


def check_output_path(path: Path, force: bool = False, option: str = "--out") -> Path:
    """Fail before any work when ``path`` has an unknown suffix or cannot be written, or when
    writing it would replace a file: never one of a run directory's, others only with ``force``."""
    path = Path(path)
    if path.is_dir():
        raise GentoolError(f"{option} {path}: that is a folder; give a file name such as {path / 'samples.png'}.")
    if path.suffix.lower() not in FORMATS:
        raise GentoolError(f"{option} {path}: unsupported format '{path.suffix}'; use a .png, .jpg or .webp "
                           "(image grid) or .safetensors (tensor) file name, or a folder ending in / (one PNG "
                           "per image).")
    if IMAGE_FORMATS.get(path.suffix.lower()) == "WEBP" and not features.check("webp"):
        raise GentoolError(f"{option} {path}: this Pillow was built without WebP support; use .png or .jpg.")
    folder = path.parent
    if not folder.is_dir():
        raise GentoolError(f"{option} {path}: folder {folder} does not exist; create it first.")
    if not os.access(folder, os.W_OK):
        raise GentoolError(f"{option} {path}: folder {folder} is not writable.")
    if path.exists():
        run = RunDir.enclosing(folder)
        if run is not None:
            raise GentoolError(f"{option} {path}: that file belongs to the run in {run}; a run's files are never "
                               "overwritten. Write it elsewhere.")
        if not force:
            raise GentoolError(f"{option} {path}: the file exists; pass --force to overwrite it, "
                               "or choose another name.")
    return path


def check_output_folder(folder: Path, force: bool = False, option: str = "--out") -> Path:
    """Fail before any work unless ``folder`` can take one file per image: its parent exists, it is
    no file, it is not inside a run directory, and it holds no numbered images yet (unless ``force``)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise GentoolError(f"{option} {folder}/: that is a file, not a folder.")
    if not folder.parent.is_dir():
        raise GentoolError(f"{option} {folder}/: folder {folder.parent} does not exist; create it first.")
    if not os.access(folder if folder.exists() else folder.parent, os.W_OK):
        raise GentoolError(f"{option} {folder}/: {folder if folder.exists() else folder.parent} is not writable.")
    run = RunDir.enclosing(folder)
    if run is not None:
        raise GentoolError(f"{option} {folder}/: that folder is inside the run in {run}; write images elsewhere.")
    if not force and folder.is_dir() and any(p.stem.isdigit() for p in folder.iterdir()):
        raise GentoolError(f"{option} {folder}/: it holds numbered images already; pass --force to overwrite "
                           "them, or choose another folder.")
    return folder


def grid_columns(count: int, group: int = 1) -> int:
    """Images per row of a roughly square grid whose rows hold whole groups (pairs, paths)."""
    return group * max(1, math.ceil(math.sqrt(count) / group))


def to_picture(images: torch.Tensor, nrow: int, scale: int = 1) -> Image.Image:
    """Images in [0, 1] as one Pillow image: a grid of ``nrow`` per row (one image when there is one),
    each pixel a ``scale`` x ``scale`` block, grey images kept grey."""
    images = images.float().cpu()
    grid = images[0] if len(images) == 1 else make_grid(images, nrow=nrow, padding=PADDING)
    pixels = grid.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8)
    picture = Image.fromarray(pixels[0].numpy() if images.shape[1] == 1 else pixels.permute(1, 2, 0).numpy())
    return picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST) if scale > 1 else picture


def write_picture(picture: Image.Image, path: Path) -> None:
    """Save in the format of the path's suffix (PNG, JPEG or WebP), atomically."""
    kind = IMAGE_FORMATS[Path(path).suffix.lower()]
    options = {"quality": QUALITY} if kind in ("JPEG", "WEBP") else {}
    atomic_write(Path(path), lambda tmp: picture.save(tmp, format=kind, **options))


def save_grid(images: torch.Tensor, path: Path, nrow: int | None = None, scale: int = 1, group: int = 1) -> None:
    """Save images in [0, 1] as one grid: ``nrow`` per row, else roughly square with whole groups per row."""
    write_picture(to_picture(images, nrow or grid_columns(len(images), group), scale), path)


def save_samples(samples: Samples, path: Path, force: bool = False, nrow: int | None = None, scale: int = 1,
                 group: int = 1) -> list[Path]:
    """Write samples to ``path`` by its suffix: a grid (``nrow``, ``scale``, ``group`` as for
    :func:`save_grid`), with scores beside it as JSON, or a tensor file. Returns the files."""
    path = check_output_path(path, force)
    if path.suffix.lower() == ".safetensors":
        tensors = {"images": samples.images}
        if samples.scores is not None:
            tensors["scores"] = samples.scores
        write_tensors(path, tensors)
        return [path]
    save_grid(samples.images, path, nrow, scale, group)
    if samples.scores is None:
        return [path]
    return [path, write_scores(samples.scores.tolist(), path.with_suffix(".scores.json"))]


def save_each(batches: Iterable[Samples], folder: Path, count: int, scale: int = 1) -> list[Path]:
    """Write each image of the batches to ``folder`` as its own PNG, 00000.png on, one batch in memory
    at a time; scores, where the sampler gives them, go to scores.json. Returns what was written."""
    folder.mkdir(exist_ok=True)
    width = max(5, len(str(count - 1)))
    index, scores = 0, []
    for samples in batches:
        for image in samples.images.float().cpu():  # one copy from the device per batch, not per image
            write_picture(to_picture(image[None], 1, scale), folder / f"{index:0{width}d}.png")
            index += 1
        if samples.scores is not None:
            scores += samples.scores.tolist()
    return [folder, write_scores(scores, folder / "scores.json")] if scores else [folder]


def write_scores(scores: list[float], path: Path) -> Path:
    write_json(path, {"scores": [round(s, 6) for s in scores]})
    return path
