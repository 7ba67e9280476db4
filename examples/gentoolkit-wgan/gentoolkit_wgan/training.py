"""The ``wasserstein-gp`` objective and the ``wgan-gp`` trainer (Gulrajani et al. 2017, algorithm 1)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from gentoolkit import AdversarialObjective, GentoolError, Loss, Model, Trainer, has_capability


@runtime_checkable
class GeneratorCritic(Protocol):
    """A generator and a critic that work in the model's input space (``prepare``'s output).

    The names are DCGAN's, so these components also work with other models that have them.
    """

    netg: nn.Module  # latent codes from sample_latent -> images
    netd: nn.Module  # images -> one unbounded score per image, shape (N,)

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> Tensor: ...


def gradient_penalty(critic: nn.Module, real: Tensor, fake: Tensor) -> Tensor:
    """E[(||grad critic(x)|| - 1)^2] at random points x on the lines between real and fake images.

    A 1-Lipschitz critic has gradient norm 1 almost everywhere between the two
    distributions, so this softly enforces what weight clipping enforced crudely.
    """
    mix = torch.rand(len(real), *[1] * (real.dim() - 1), device=real.device, dtype=real.dtype)
    between = (mix * real + (1 - mix) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(between).sum(), between, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1).square().mean()


class WassersteinGP(AdversarialObjective):
    """Wasserstein-1 distance estimated by a critic, with a gradient penalty (WGAN-GP)."""

    name = "wasserstein-gp"
    requires = (GeneratorCritic,)

    @dataclass
    class Config:
        gp_weight: float = 10.0  # lambda, the weight of the gradient penalty; the paper's 10 works across data sets

        def __post_init__(self) -> None:
            if not self.gp_weight >= 0:
                raise ValueError(f"gp_weight must be 0 or more, got {self.gp_weight}")

    def discriminator_loss(self, model: Model, real: Tensor, fake: Tensor) -> Loss:
        """E[D(fake)] - E[D(real)] + lambda * penalty: the critic maximises its Wasserstein estimate."""
        wasserstein = model.netd(real).mean() - model.netd(fake).mean()
        gp = gradient_penalty(model.netd, real, fake)
        loss = -wasserstein + self.config.gp_weight * gp
        return Loss(loss, {"d_loss": loss.detach(), "wasserstein": wasserstein.detach(), "gp": gp.detach()})

    def generator_loss(self, model: Model, fake: Tensor) -> Loss:
        """-E[D(fake)]: the generator lowers the critic's estimate by raising the scores of its images."""
        loss = -model.netd(fake).mean()
        return Loss(loss, {"g_loss": loss.detach()})


class WGANGPTrainer(Trainer):
    """n_critic critic updates per generator update, both with Adam(beta1=0, beta2=0.9)."""

    name = "wgan-gp"
    objective_type = AdversarialObjective
    drop_last = True  # the generator's BatchNorm statistics of a tiny last batch are noise
    monitor = None  # the critic's loss moves with the critic, not only with the images: no epoch is "best" by it

    @dataclass
    class Config:
        n_critic: int = 5  # critic updates per generator update; each one sees a new batch of real images
        beta1: float = 0.0  # Adam's first-moment decay; 0 as in the paper, since momentum destabilises WGANs
        beta2: float = 0.9  # Adam's second-moment decay

        def __post_init__(self) -> None:
            if self.n_critic <= 0:
                raise ValueError(f"n_critic must be a positive integer, got {self.n_critic}")
            for key in ("beta1", "beta2"):
                if not 0 <= getattr(self, key) < 1:
                    raise ValueError(f"{key} must be in [0, 1), got {getattr(self, key)}")

    def __init__(self, model: Model, objective: AdversarialObjective, config: Config, lr: float):
        super().__init__(model, objective, config, lr)
        if not has_capability(model, GeneratorCritic):
            raise GentoolError(f"trainer 'wgan-gp' does not work with model '{model.name}': "
                               "it needs a model with a generator 'netg' and a critic 'netd'.")
        betas = (self.config.beta1, self.config.beta2)
        self.optimizer_g = self.adam(model.netg.parameters(), lr, betas=betas)
        self.optimizer_d = self.adam(model.netd.parameters(), lr, betas=betas)
        self.critic_steps = 0  # saved, so a resumed run keeps the n_critic rhythm

    def train_step(self, x: Tensor) -> dict[str, Tensor]:
        """One critic update on this batch; after every n_critic-th, one generator update."""
        model = self.model
        with torch.no_grad():  # the critic's update must not reach the generator
            fake = model.netg(model.sample_latent(len(x)))
        critic = self.objective.discriminator_loss(model, x, fake)
        self.optimize(self.optimizer_d, critic.value)
        self.critic_steps += 1
        metrics = {"loss": critic.value.detach(), **critic.metrics}
        if self.critic_steps % self.config.n_critic == 0:
            model.netd.requires_grad_(False)  # gradients flow through the critic to the generator only
            try:
                generator = self.objective.generator_loss(model, model.netg(model.sample_latent(len(x))))
                self.optimize(self.optimizer_g, generator.value)
            finally:
                model.netd.requires_grad_(True)
            metrics.update(generator.metrics)
        return metrics

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer_g": self.optimizer_g.state_dict(), "optimizer_d": self.optimizer_d.state_dict(),
                "critic_steps": self.critic_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer_g.load_state_dict(state["optimizer_g"])
        self.optimizer_d.load_state_dict(state["optimizer_d"])
        self.critic_steps = state["critic_steps"]
