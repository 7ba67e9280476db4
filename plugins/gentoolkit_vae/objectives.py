"""The evidence lower bound, its two SGVB estimators (Kingma & Welling 2013, section 2.3)
and the importance-weighted bound (Burda et al. 2015).

ELBO(x) = E_q(z|x)[log p(x|z)] - KL(q(z|x) || p(z)) <= log p(x). Each
objective minimises its negated bound averaged over the batch and reports it
in nats per image, for any model with a Gaussian encoder and a standard
normal prior (a :class:`~gentoolkit.VariationalModel`). A class-conditional model
gets the batch's labels and is trained on the conditional bound on log p(x | y),
through its ``given(labels)`` (see :class:`~gentoolkit_vae.models.GivenLabels`).
"""

from __future__ import annotations

import math
from abc import abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor

from gentoolkit import Loss, Model, Objective, VariationalModel
from gentoolkit_vae import maths


def conditioned(model: Model, labels: Tensor | None) -> Model:
    """The model whose bound is computed: for a class-conditional model, p(x | y) with the batch's
    labels fixed (its ``given``), so every bound below is the conditional one."""
    return model if labels is None else model.given(labels)


def posterior_draws(model: VariationalModel, x: Tensor, samples: int,
                    generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Encode x, draw ``samples`` codes per image from q(z|x) and score each with log p(x|z).

    Returns mu and logvar (N x L), the codes z (S x N x L) and log p(x|z) (S x N).
    """
    mu, logvar = model.encode(x)  # N x L
    z = maths.reparameterize(mu.expand(samples, *mu.shape), logvar.expand(samples, *logvar.shape),
                             generator)  # S x N x L
    decoded = model.decode(z.flatten(0, 1))  # S*N x C x H x W
    log_px = model.log_likelihood(x.expand(samples, *x.shape).flatten(0, 1), decoded)  # S*N
    return mu, logvar, z, log_px.view(samples, -1)  # S x N


def importance_weighted_bound(model: VariationalModel, x: Tensor, samples: int,
                              generator: torch.Generator | None = None) -> Tensor:
    """log (1/K) sum_k p(x, z_k) / q(z_k|x) per image (Burda et al. 2015).

    A lower bound on log p(x) that is the ELBO for K = 1 and tightens as K grows,
    so with many samples it estimates the log-likelihood itself.
    """
    mu, logvar, z, log_px = posterior_draws(model, x, samples, generator)
    log_weights = log_px - maths.sampled_kl(z, mu, logvar)  # S x N
    return log_weights.logsumexp(0) - math.log(samples)


class EvidenceBound(Objective):
    """The negative ELBO as a loss, with the ELBO and its two terms as metrics."""

    requires = (VariationalModel,)

    @dataclass
    class Config:
        samples: int = 1  # codes z drawn per image; their terms are averaged (the article draws 1)

        def __post_init__(self) -> None:
            if self.samples <= 0:
                raise ValueError(f"samples must be a positive integer, got {self.samples}")

    def loss(self, model: Model, x: Tensor, labels: Tensor | None = None) -> Loss:
        log_px, kl = self.terms(conditioned(model, labels), x)  # N each
        elbo = log_px - kl
        metrics = {"elbo": elbo.mean(), "kl": kl.mean(), "recon": -log_px.mean()}
        return Loss(value=-elbo.mean(), metrics={k: v.detach() for k, v in metrics.items()})

    @abstractmethod
    def terms(self, model: Model, x: Tensor) -> tuple[Tensor, Tensor]:
        """Estimates of E_q[log p(x|z)] and of KL(q(z|x) || p(z)), per image."""


class ELBO(EvidenceBound):
    """Evidence lower bound with the KL in closed form (SGVB estimator B, the usual one)."""

    name = "elbo"

    def terms(self, model: Model, x: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar, _, log_px = posterior_draws(model, x, self.config.samples)
        return log_px.mean(0), maths.gaussian_kl(mu, logvar)


class MonteCarloELBO(EvidenceBound):
    """Evidence lower bound estimated wholly by sampling: log p(x|z) + log p(z) - log q(z|x) (SGVB estimator A)."""

    name = "elbo-mc"

    def terms(self, model: Model, x: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar, z, log_px = posterior_draws(model, x, self.config.samples)
        return log_px.mean(0), maths.sampled_kl(z, mu, logvar).mean(0)


class ImportanceWeightedBound(Objective):
    """The IWAE bound with K samples as a loss: tighter than the ELBO, so the decoder is trained
    on a better estimate of log p(x) and the encoder need not cover the posterior's every mode."""

    name = "iwae"
    requires = (VariationalModel,)

    @dataclass
    class Config(EvidenceBound.Config):
        samples: int = 5  # K: the bound is the ELBO for 1 and log p(x) as K grows; costs K decoder passes

    def loss(self, model: Model, x: Tensor, labels: Tensor | None = None) -> Loss:
        bound = importance_weighted_bound(conditioned(model, labels), x, self.config.samples).mean()
        return Loss(value=-bound, metrics={"iwae": bound.detach()})
