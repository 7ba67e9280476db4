"""The ``eps-mse`` objective (Ho et al.'s simple loss) and the ``ema-adam`` trainer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from gentoolkit import GentoolError, Loss, Model, Objective, Trainer, has_capability
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


class EMAAdam(Trainer):
    """Adam on the raw weights, then an update of the model's moving average of them."""

    name = "ema-adam"

    @dataclass
    class Config:
        grad_clip: float = 1.0  # clip the gradient norm to this, as Ho et al. do; 0 turns clipping off

    def __init__(self, model: Model, objective: Any, config: Any, lr: float):
        super().__init__(model, objective, config, lr)
        if not has_capability(model, AveragedModel):
            raise GentoolError(f"trainer '{self.name}' needs a model that keeps a moving average of its weights "
                               f"(update_ema); '{model.name}' has none, so use --trainer adam.")
        trained = [p for p in model.parameters() if p.requires_grad]  # not the average itself
        self.optimizer = self.adam(trained, lr)

    def train_step(self, x: Tensor, labels: Tensor | None = None) -> dict[str, Tensor]:
        loss = self.objective.loss(self.model, *self._batch(x, labels))
        self.optimize(self.optimizer, loss.value, clip=self.config.grad_clip)
        self.model.update_ema()
        return {"loss": loss.value.detach(), **loss.metrics}

    @torch.no_grad()
    def evaluate(self, x: Tensor, labels: Tensor | None = None) -> dict[str, Tensor]:
        """The loss on held-out images, in eval mode: that of the averaged weights."""
        loss = self.objective.loss(self.model, *self._batch(x, labels))
        return {"loss": loss.value, **loss.metrics}

    @staticmethod
    def _batch(x: Tensor, labels: Tensor | None) -> tuple[Tensor, ...]:
        """Labels go to the objective only when there are some, as with the core's trainers."""
        return (x,) if labels is None else (x, labels)

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
