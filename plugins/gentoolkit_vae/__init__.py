"""Variational autoencoders: Bernoulli and Gaussian decoders, the ELBO and IWAE objectives.

See docs/vae.md for the maths and the options.
"""

from gentoolkit import hookimpl
from gentoolkit_vae.maths import bits_per_dim, gaussian_kl
from gentoolkit_vae.models import VAE, BernoulliVAE, GaussianVAE, GivenLabels
from gentoolkit_vae.objectives import (
    ELBO,
    EvidenceBound,
    ImportanceWeightedBound,
    MonteCarloELBO,
    importance_weighted_bound,
)

__all__ = ["ELBO", "VAE", "BernoulliVAE", "EvidenceBound", "GaussianVAE", "GivenLabels", "ImportanceWeightedBound",
           "MonteCarloELBO", "bits_per_dim", "gaussian_kl", "importance_weighted_bound"]


@hookimpl
def register_models(register):
    register(BernoulliVAE, aliases=("vae",))
    register(GaussianVAE)


@hookimpl
def register_objectives(register):
    register(ELBO)
    register(MonteCarloELBO)
    register(ImportanceWeightedBound)
