"""Writing generated images: PNG grids for people, safetensors tensors for scripts."""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from torchvision.utils import save_image

from gentoolkit.checkpoint import atomic_write, write_json, write_tensors
from gentoolkit.errors import GentoolError
from gentoolkit.interfaces import Samples
from gentoolkit.rundir import RunDir

FORMATS = (".png", ".safetensors")


def check_output_path(path: Path, force: bool = False, option: str = "--out") -> Path:
    """Fail before any work when ``path`` has an unknown suffix or cannot be written, or when
    writing it would replace a file: never one of a run directory's, others only with ``force``."""
    path = Path(path)
    if path.is_dir():
        raise GentoolError(f"{option} {path}: that is a folder; give a file name such as {path / 'samples.png'}.")
    if path.suffix.lower() not in FORMATS:
        raise GentoolError(f"{option} {path}: unsupported format '{path.suffix}'; "
                           "use a .png (image grid) or .safetensors (tensor) file name.")
    folder = path.parent
    if not folder.is_dir():
        raise GentoolError(f"{option} {path}: folder {folder} does not exist; create it first.")
    if not os.access(folder, os.W_OK):
        raise GentoolError(f"{option} {path}: folder {folder} is not writable.")
    if path.exists():
        run = next((p for p in (folder, *folder.parents) if RunDir(p).holds_run()), None)
        if run is not None:
            raise GentoolError(f"{option} {path}: that file belongs to the run in {run}; a run's files are never "
                               "overwritten. Write it elsewhere.")
        if not force:
            raise GentoolError(f"{option} {path}: the file exists; pass --force to overwrite it, "
                               "or choose another name.")
    return path


def save_grid(images: torch.Tensor, path: Path) -> None:
    """Save images in [0, 1] as one roughly square grid."""
    nrow = max(1, math.ceil(math.sqrt(len(images))))
    atomic_write(Path(path), lambda tmp: save_image(images.float().cpu(), tmp, nrow=nrow,
                                                    padding=2, format="png"))


def save_samples(samples: Samples, path: Path, force: bool = False) -> list[Path]:
    """Write samples to ``path`` by its suffix; scores go beside a PNG as JSON. Returns the files."""
    path = check_output_path(path, force)
    if path.suffix.lower() == ".safetensors":
        tensors = {"images": samples.images}
        if samples.scores is not None:
            tensors["scores"] = samples.scores
        write_tensors(path, tensors)
        return [path]
    save_grid(samples.images, path)
    if samples.scores is None:
        return [path]
    scores_path = path.with_suffix(".scores.json")
    write_json(scores_path, {"scores": [round(s, 6) for s in samples.scores.tolist()]})
    return [path, scores_path]
