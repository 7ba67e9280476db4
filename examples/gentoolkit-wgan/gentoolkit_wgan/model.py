"""The ``wgan-gp`` model: a DCGAN-style generator and a critic without BatchNorm.

The gradient penalty constrains the critic's gradient for each image on its
own, so the critic must treat each image on its own too: BatchNorm mixes the
images of a batch, so the critic uses layer normalisation instead
(Gulrajani et al. 2017, section 4). The generator keeps DCGAN's BatchNorm.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from gentoolkit import GentoolError, ImageSpec, Model, Recipe, from_signed, to_signed

# Kernel sizes of the stride-2 steps from the 4 x 4 state up to the image; 3 turns 4 x 4 into 7 x 7.
UPSAMPLING: dict[int, tuple[int, ...]] = {
    28: (3, 4, 4),  # 4 -> 7 -> 14 -> 28
    32: (4, 4, 4),  # 4 -> 8 -> 16 -> 32
    64: (4, 4, 4, 4),  # 4 -> 8 -> 16 -> 32 -> 64
}


def build_generator(kernels: tuple[int, ...], nz: int, ngf: int, nc: int) -> nn.Sequential:
    """nz x 1 x 1 up to nc x H x W; feature maps halve as the image doubles, Tanh puts pixels in [-1, 1]."""
    width = ngf * 2 ** (len(kernels) - 1)
    modules: list[nn.Module] = [  # state size. (ngf * 2^(steps-1)) x 4 x 4
        nn.ConvTranspose2d(nz, width, 4, 1, 0, bias=False), nn.BatchNorm2d(width), nn.ReLU(True)]
    for i, kernel in enumerate(kernels):
        last = i == len(kernels) - 1
        out = nc if last else width // 2
        modules.append(nn.ConvTranspose2d(width, out, kernel, 2, 1, bias=last))  # state size. out x 2H x 2W (7 from 4)
        modules += [nn.Tanh()] if last else [nn.BatchNorm2d(out), nn.ReLU(True)]
        width = out
    return nn.Sequential(*modules)


def build_critic(kernels: tuple[int, ...], ndf: int, nc: int) -> nn.Sequential:
    """The generator's steps in reverse, down to one unbounded score per image.

    ``GroupNorm(1, c)`` is layer normalisation over each image's c x H x W
    features; the first layer has none, as in DCGAN.
    """
    modules: list[nn.Module] = []
    width, out = nc, ndf
    for i, kernel in enumerate(reversed(kernels)):
        modules.append(nn.Conv2d(width, out, kernel, 2, 1, bias=i == 0))  # state size. out x H/2 x W/2 (4 from 7)
        if i > 0:
            modules.append(nn.GroupNorm(1, out))
        modules.append(nn.LeakyReLU(0.2, inplace=True))
        width, out = out, out * 2
    modules += [nn.Conv2d(width, 1, 4, 1, 0), nn.Flatten(0)]  # state size. 1 x 1 x 1 -> N scores
    return nn.Sequential(*modules)


def init_weights(module: nn.Module) -> None:
    """DCGAN's initialisation: convolution weights N(0, 0.02)."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)


class WGANGP(Model):
    """Wasserstein GAN with gradient penalty (Gulrajani et al. 2017) for 28, 32 and 64 pixel images."""

    name = "wgan-gp"
    family = "gan"
    default_objective = "wasserstein-gp"
    default_trainer = "wgan-gp"
    recipe = Recipe(lr=1e-4, batch_size=64, epochs=20)  # the paper's learning rate and batch size
    standard_normal_prior = True  # its codes are N(0, I): --temperature works

    @dataclass
    class Config:
        nz: int = 128  # size of the latent code z
        ngf: int = 64  # generator feature maps in its last hidden layer (doubling towards z)
        ndf: int = 64  # critic feature maps in its first layer (doubling towards the score)

        def __post_init__(self) -> None:
            for key in ("nz", "ngf", "ndf"):
                if getattr(self, key) <= 0:
                    raise ValueError(f"{key} must be a positive integer, got {getattr(self, key)}")

    def __init__(self, config: Config, spec: ImageSpec):
        super().__init__(config, spec)
        if spec.height != spec.width or spec.height not in UPSAMPLING:
            raise GentoolError(f"wgan-gp supports 28x28, 32x32 and 64x64 images; got {spec.height}x{spec.width}. "
                               "Use --image-size 32 (or 28, 64) to resize the data.")
        kernels = UPSAMPLING[spec.height]
        self.netg = build_generator(kernels, config.nz, config.ngf, spec.channels)
        self.netd = build_critic(kernels, config.ndf, spec.channels)
        self.apply(init_weights)

    def prepare(self, batch: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Pixels in [-1, 1], the range of the generator's Tanh."""
        return to_signed(batch)

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return torch.randn(n, self.config.nz, 1, 1, generator=generator, device=self.device)

    def generate(self, z: Tensor) -> Tensor:
        return from_signed(self.netg(z))

    def discriminator_score(self, images: Tensor) -> Tensor:
        """The critic's value for images in [0, 1]: higher looks more real, so ``ranking`` can use it."""
        return self.netd(images * 2.0 - 1.0)
