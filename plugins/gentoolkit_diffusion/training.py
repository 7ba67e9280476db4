"""The ``eps-mse`` objective (Ho et al.'s simple loss) and the ``ema-adam`` trainer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gentoolkit import AdamTrainer, GentoolError, Loss, Model, Objective, has_capability
from gentoolkit_diffusion.model import AveragedModel, NoisePredictor


class NoiseMSE(Objective):
    """L_simple (Ho et al. 2020, eq. 14): || eps - eps_theta(x_t, t) ||^2 at a uniformly drawn step t."""

    name = "eps-mse"
    requires = (NoisePredictor,)

    def loss(self, model: Model, x: Tensor, labels: Tensor | None = None) -> Loss:
        """Mean squared error per pixel, one t and one eps per image from the global random
        stream (the loop seeds it; held-out batches draw new ones each epoch, so test_loss
        is itself a one-sample estimate)."""
        t = torch.randint(1, model.diffusion.timesteps + 1, (len(x),), device=x.device)
        noise = torch.randn_like(x)
        xt = model.diffusion.q_sample(x, t, noise)
        return Loss(value=F.mse_loss(model.predict_noise(xt, t, labels), noise))


class EMAAdam(AdamTrainer):
    """Adam on the raw weights, then an update of the model's moving average of them. Held-out
    batches are evaluated in eval mode, so their loss is that of the averaged weights."""

    name = "ema-adam"

    @dataclass
    class Config(AdamTrainer.Config):
        grad_clip: float = 1.0  # clip the gradient norm to this, as Ho et al. do; 0 turns clipping off

    def __init__(self, model: Model, objective: Any, config: Any, lr: float):
        if not has_capability(model, AveragedModel):
            raise GentoolError(f"trainer '{self.name}' needs a model that keeps a moving average of its weights "
                               f"(update_ema); '{model.name}' has none, so use --trainer adam.")
        super().__init__(model, objective, config, lr)

    def trained_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]  # not the average itself

    def train_step(self, x: Tensor, labels: Tensor | None = None) -> dict[str, Tensor]:
        metrics = super().train_step(x, labels)
        self.model.update_ema()
        return metrics
