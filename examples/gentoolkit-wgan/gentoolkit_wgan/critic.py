"""``gentool wgan-critic RUN IMAGES...``: score image files with a trained critic.

The critic learns to score real images above generated ones, so its scores rank any
images by how much they look like the training data: the lowest scores of a folder
are its odd ones out (mislabelled, corrupt or off-topic images), the highest its most
typical. Scores are comparable within one run only.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import click
import torch
from PIL import Image, ImageOps
from torch import Tensor
from torchvision.transforms.functional import pil_to_tensor

from gentoolkit import DiscriminatorScored, GentoolError, ImageSpec, eval_mode, has_capability, to_unit
from gentoolkit.api import load_run

IMAGE_SUFFIXES = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")


def image_files(paths: Sequence[Path]) -> list[Path]:
    """The files named, and the images directly inside the folders named, in a stable order."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not found:
                raise GentoolError(f"{path} holds no {', '.join(IMAGE_SUFFIXES)} images.")
            files += found
        else:
            files.append(path)
    return files


def read_image(path: Path, spec: ImageSpec) -> Tensor:
    """``path`` as uint8 C x H x W in the model's channels and size: scaled to cover it, the centre cut."""
    try:
        with Image.open(path) as image:
            image = image.convert("L" if spec.channels == 1 else "RGB")
            return pil_to_tensor(ImageOps.fit(image, (spec.width, spec.height), Image.Resampling.BILINEAR))
    except (OSError, ValueError) as exc:  # not an image, truncated, an unknown format
        raise GentoolError(f"{path} is not an image wgan-critic can read ({exc}).") from None


@click.command("wgan-critic")
@click.argument("run_dir", metavar="RUN", type=click.Path(path_type=Path))
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True,
              help="Images read and scored at once; bounds memory.")
@click.option("--device", default="cpu", show_default=True, help="auto, cpu, cuda or mps.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of {path, score} for scripts.")
def wgan_critic(run_dir: Path, images: tuple[Path, ...], batch_size: int, device: str, as_json: bool) -> None:
    """Score IMAGES (files, or folders of image files) with the critic of RUN, highest first.

    Higher scores look more like the training data; the lowest are a folder's odd ones out.
    RUN is a wgan-gp run, or any run whose model has a critic (DiscriminatorScored).
    """
    model = load_run(run_dir, device=device).model
    if not has_capability(model, DiscriminatorScored):
        raise GentoolError(f"{run_dir} is a run of '{model.name}', which has no critic; "
                           "wgan-critic needs a wgan-gp run (or another DiscriminatorScored model).")
    files = image_files(images)
    scores: list[float] = []
    with eval_mode(model):
        for start in range(0, len(files), batch_size):
            batch = torch.stack([read_image(path, model.spec) for path in files[start:start + batch_size]])
            batch = batch.to(model.device)
            scores += model.discriminator_score(to_unit(batch)).tolist()
    ranked = sorted(zip(files, scores, strict=True), key=lambda row: -row[1])
    if as_json:
        click.echo(json.dumps([{"path": str(path), "score": score} for path, score in ranked]))
        return
    for path, score in ranked:
        click.echo(f"{score:12.4f}  {path}")
