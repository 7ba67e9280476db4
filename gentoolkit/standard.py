"""The core's own components: the ``prior`` sampler and the ``adam`` trainer.

They are generic (any Model, any single-loss Objective), so they live in the
core and are registered through the same hooks as every plugin. So are
``gentool``'s own commands, which makes them built-ins that no plugin command
can take the name of.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from gentoolkit.errors import GentoolError
from gentoolkit.hookspecs import hookimpl
from gentoolkit.interfaces import LatentModel, Model, Sampler, Samples, StandardNormalPrior, Trainer, has_capability


@contextmanager
def eval_mode(model: torch.nn.Module):
    """Run a block in eval mode without gradients, restoring the previous mode after."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


class PriorSampler(Sampler):
    """Decode latent codes drawn from the model's prior (at a temperature, for N(0, I) priors)."""

    name = "prior"
    requires = (LatentModel,)

    @dataclass
    class Config:
        batch_size: int = 256  # images generated at once; bounds memory for any -n
        temperature: float = 1.0  # scale the codes of a standard normal prior: below 1 trades diversity for quality

        def __post_init__(self) -> None:
            if self.batch_size <= 0:
                raise ValueError(f"--batch-size must be a positive integer, got {self.batch_size}")
            if not self.temperature > 0:
                raise ValueError(f"--temperature must be a positive number, got {self.temperature}")

    def sample(self, model: Model, n: int, generator: torch.Generator, labels: Tensor | None = None) -> Samples:
        temperature = self.config.temperature
        if temperature != 1.0 and not has_capability(model, StandardNormalPrior):
            raise GentoolError(f"--temperature needs a model whose prior is a standard normal; "
                               f"'{model.name}' does not declare one (StandardNormalPrior).")
        chunks = []
        with eval_mode(model):
            for start in range(0, n, self.config.batch_size):
                count = min(self.config.batch_size, n - start)
                z = model.sample_latent(count, generator)
                if temperature != 1.0:
                    z = z * temperature
                if labels is None:
                    chunks.append(model.generate(z))
                else:
                    chunks.append(model.generate(z, labels[start:start + count]))
        return Samples(images=torch.cat(chunks))


class AdamTrainer(Trainer):
    """Minimise the objective with Adam, one step per batch."""

    name = "adam"

    @dataclass
    class Config:
        beta1: float = 0.9  # Adam's first-moment decay
        beta2: float = 0.999  # Adam's second-moment decay
        weight_decay: float = 0.0  # L2 penalty added by Adam
        grad_clip: float = 0.0  # clip the gradient norm to this; 0 turns clipping off

        def __post_init__(self) -> None:
            for key in ("beta1", "beta2"):
                if not 0 <= getattr(self, key) < 1:
                    raise ValueError(f"{key} must be in [0, 1), got {getattr(self, key)}")
            if not self.weight_decay >= 0:
                raise ValueError(f"weight_decay must be 0 or more, got {self.weight_decay}")
            if not self.grad_clip >= 0:
                raise ValueError(f"grad_clip must be 0 (off) or a positive norm, got {self.grad_clip}")

    def __init__(self, model: Model, objective: Any, config: Any, lr: float):
        super().__init__(model, objective, config, lr)
        self.optimizer = self.adam(self.trained_parameters(), lr, betas=(self.config.beta1, self.config.beta2),
                                   weight_decay=self.config.weight_decay)

    def trained_parameters(self) -> Iterable[nn.Parameter]:
        """What Adam updates: every parameter of the model. A subclass that narrows it changes
        the optimiser state its runs save, so it must keep to its choice."""
        return self.model.parameters()

    def train_step(self, x: Tensor, labels: Tensor | None = None) -> dict[str, Tensor]:
        loss = self._loss(x, labels)
        self.optimize(self.optimizer, loss.value, clip=self.config.grad_clip)
        return {"loss": loss.value.detach(), **loss.metrics}

    @torch.no_grad()
    def evaluate(self, x: Tensor, labels: Tensor | None = None) -> dict[str, Tensor]:
        loss = self._loss(x, labels)
        return {"loss": loss.value, **loss.metrics}

    def _loss(self, x: Tensor, labels: Tensor | None):
        """Labels go to the objective only when there are some, so objectives of unconditional
        models need not take them."""
        if labels is None:
            return self.objective.loss(self.model, x)
        return self.objective.loss(self.model, x, labels)

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])


@hookimpl
def register_samplers(register):
    from gentoolkit.reconstruction import InterpolateSampler, ReconstructSampler  # here: they use eval_mode

    for sampler in (PriorSampler, ReconstructSampler, InterpolateSampler):
        register(sampler)


@hookimpl
def register_trainers(register):
    register(AdamTrainer)


@hookimpl
def register_callbacks(register):
    from gentoolkit.callbacks import CSVLog  # here: the callbacks import the training loop, which imports this

    register(CSVLog)


@hookimpl
def register_commands(cli):
    from gentoolkit.cli import cli as gentool  # here, not above: the core's components need no CLI

    for name, command in gentool.commands.items():
        cli.add_command(command, name)
