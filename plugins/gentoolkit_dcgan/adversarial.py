"""The GAN objective and the trainer that alternates discriminator and generator steps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gentoolkit import AdversarialObjective, GentoolError, Loss, Model, Trainer


@runtime_checkable
class DiscriminatorLogits(Protocol):
    """A model whose discriminator gives one logit per image in its input space (what ``prepare`` returns);
    a class-conditional one takes ``discriminator_logits(x, labels)``."""

    def discriminator_logits(self, x: Tensor) -> Tensor: ...


def logits(model: Model, x: Tensor, labels: Tensor | None) -> Tensor:
    """The discriminator's logits, of images and their labels for a class-conditional model; an
    unconditional model is called without labels, so it need not take them."""
    return model.discriminator_logits(x) if labels is None else model.discriminator_logits(x, labels)


class GANObjective(AdversarialObjective):
    """Non-saturating GAN loss (Goodfellow et al. 2014) on discriminator logits."""

    name = "gan"
    requires = (DiscriminatorLogits,)

    def discriminator_loss(self, model: Model, real: Tensor, fake: Tensor, labels: Tensor | None = None) -> Loss:
        """-log D(real) - log(1 - D(fake)); real and fake pass separately, so BatchNorm sees pure batches."""
        real_logits = logits(model, real, labels)
        fake_logits = logits(model, fake, labels)
        loss = (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
                + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))
        return Loss(loss, {"d_loss": loss.detach(),
                           "d_real": torch.sigmoid(real_logits.detach()).mean(),
                           "d_fake": torch.sigmoid(fake_logits.detach()).mean()})

    def generator_loss(self, model: Model, fake: Tensor, labels: Tensor | None = None) -> Loss:
        """-log D(G(z)) rather than log(1 - D(G(z))): strong gradients while D still wins easily."""
        fake_logits = logits(model, fake, labels)
        loss = F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
        return Loss(loss, {"g_loss": loss.detach()})


class AdversarialTrainer(Trainer):
    """Alternating Adam updates of the discriminator and the generator (the DCGAN recipe)."""

    name = "adversarial"
    objective_type = AdversarialObjective
    drop_last = True  # BatchNorm statistics of a tiny last batch are noise
    monitor = None  # a GAN's losses say who is winning, not how good the images are

    @dataclass
    class Config:
        d_every: int = 1  # update the discriminator on every d_every-th batch
        g_every: int = 1  # update the generator on every g_every-th batch (the article uses 5)
        beta1: float = 0.5  # Adam's first-moment decay; 0.5 as in the DCGAN paper
        beta2: float = 0.999  # Adam's second-moment decay
        lr_d: float | None = None  # the discriminator's learning rate; None uses --lr

        def __post_init__(self) -> None:
            for key in ("d_every", "g_every"):
                if getattr(self, key) <= 0:
                    raise ValueError(f"{key} must be a positive integer, got {getattr(self, key)}")
            if self.lr_d is not None and not self.lr_d > 0:
                raise ValueError(f"lr_d must be a positive number, got {self.lr_d}")

    def __init__(self, model: Model, objective: AdversarialObjective, config: Config, lr: float):
        super().__init__(model, objective, config, lr)
        if not all(isinstance(getattr(model, net, None), nn.Module) for net in ("netg", "netd")):
            raise GentoolError(f"trainer 'adversarial' does not work with model '{model.name}': "
                               "it needs a model with a generator 'netg' and a discriminator 'netd'.")
        betas = (self.config.beta1, self.config.beta2)
        lr_d = lr if self.config.lr_d is None else self.config.lr_d
        self.optimizer_g = self.adam(model.netg.parameters(), lr, betas=betas)
        self.optimizer_d = self.adam(model.netd.parameters(), lr_d, betas=betas)
        self.batches = 0  # batches seen, for d_every and g_every; saved so a resume keeps the rhythm

    def fakes(self, n: int, labels: Tensor | None) -> Tensor:
        """n images from fresh codes, in the model's input space; of the given classes for a
        class-conditional model, whose generator takes ``netg(z, labels)``."""
        z = self.model.sample_latent(n)
        return self.model.netg(z) if labels is None else self.model.netg(z, labels)

    def train_step(self, x: Tensor, labels: Tensor | None = None) -> dict[str, Tensor]:
        """One batch; a class-conditional model's fakes get the real batch's labels, so both players
        see each class as often as the data has it."""
        model, metrics = self.model, {}
        extra = () if labels is None else (labels,)  # the objective's calls stay label-free for unconditional models
        if self.batches % self.config.d_every == 0:
            with torch.no_grad():  # the discriminator step must not reach the generator
                fake = self.fakes(len(x), labels)
            loss = self.objective.discriminator_loss(model, x, fake, *extra)
            self.optimize(self.optimizer_d, loss.value)
            metrics.update(loss.metrics)
        if self.batches % self.config.g_every == 0:
            model.netd.requires_grad_(False)  # gradients flow through netd to netg, not into its weights
            try:
                fake = self.fakes(len(x), labels)
                loss = self.objective.generator_loss(model, fake, *extra)
                self.optimize(self.optimizer_g, loss.value)
            finally:
                model.netd.requires_grad_(True)
            metrics.update(loss.metrics)
        self.batches += 1
        return metrics

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer_g": self.optimizer_g.state_dict(), "optimizer_d": self.optimizer_d.state_dict(),
                "batches": self.batches}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer_g.load_state_dict(state["optimizer_g"])
        self.optimizer_d.load_state_dict(state["optimizer_d"])
        self.batches = state["batches"]
