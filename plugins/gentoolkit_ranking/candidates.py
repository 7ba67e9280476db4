"""What the discriminator samplers share: candidates drawn from the prior, each with its score."""

from __future__ import annotations

import torch
from torch import Tensor

from gentoolkit import Model


def scored_candidates(model: Model, count: int, label: Tensor | None,
                      generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``count`` images decoded from prior codes and their discriminator scores (float32, N).

    ``label`` (a 0-d class index) is the class every candidate of a class-conditional model is
    drawn for, and scored as; unconditional models (``label=None``) are called without labels.
    Call it in eval mode without gradients (``eval_mode``).
    """
    z = model.sample_latent(count, generator)
    if label is None:
        images = model.generate(z)
        return images, model.discriminator_score(images).float()
    labels = label.expand(count)
    images = model.generate(z, labels)
    return images, model.discriminator_score(images, labels).float()
