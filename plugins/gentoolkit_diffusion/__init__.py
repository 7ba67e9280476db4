"""Denoising diffusion: the ``ddpm`` model (alias ``diffusion``), the ``eps-mse`` objective, the
``ema-adam`` trainer and the ``ddpm`` and ``ddim`` samplers.

See docs/diffusion.md for the model, its options, the samplers and the bound in bits/dim.
"""

from gentoolkit import hookimpl
from gentoolkit_diffusion.diffusion import GaussianDiffusion, betas_for, discretized_gaussian_log_likelihood
from gentoolkit_diffusion.model import DDPM, AveragedModel, NoisePredictor
from gentoolkit_diffusion.samplers import AncestralSampler, DDIMSampler, guided_noise
from gentoolkit_diffusion.training import EMAAdam, NoiseMSE
from gentoolkit_diffusion.unet import UNet

__all__ = ["DDPM", "AncestralSampler", "AveragedModel", "DDIMSampler", "EMAAdam", "GaussianDiffusion",
           "NoiseMSE", "NoisePredictor", "UNet", "betas_for", "discretized_gaussian_log_likelihood", "guided_noise"]


@hookimpl
def register_models(register):
    register(DDPM, aliases=("diffusion",))


@hookimpl
def register_objectives(register):
    register(NoiseMSE)


@hookimpl
def register_trainers(register):
    register(EMAAdam)


@hookimpl
def register_samplers(register):
    register(AncestralSampler)
    register(DDIMSampler)
