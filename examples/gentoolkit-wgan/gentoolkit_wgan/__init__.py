"""gentoolkit-wgan: WGAN-GP (Gulrajani et al. 2017) as a gentoolkit plugin.

Registers the ``wgan-gp`` model, the ``wasserstein-gp`` objective, the
``wgan-gp`` trainer and the ``gentool wgan-critic`` command through the
``gentoolkit`` entry point in pyproject.toml.
"""

from gentoolkit import hookimpl
from gentoolkit_wgan.critic import wgan_critic
from gentoolkit_wgan.model import WGANGP
from gentoolkit_wgan.training import GeneratorCritic, WassersteinGP, WGANGPTrainer, gradient_penalty

__all__ = ["WGANGP", "GeneratorCritic", "WGANGPTrainer", "WassersteinGP", "gradient_penalty"]
__version__ = "0.1.0"


@hookimpl
def register_models(register):
    register(WGANGP)


@hookimpl
def register_objectives(register):
    register(WassersteinGP)


@hookimpl
def register_trainers(register):
    register(WGANGPTrainer)


@hookimpl
def register_commands(cli):
    cli.add_command(wgan_critic)
