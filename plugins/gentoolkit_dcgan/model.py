"""The DCGAN generator and discriminator (Radford et al. 2015), sized for the data.

Every architecture is one list of (kernel, stride, padding) for the generator's
transposed convolutions, from the nz x 1 x 1 latent code up to the image. The
discriminator runs the same convolutions in reverse, so it passes through the
generator's state sizes backwards (ndf in place of ngf) and the shapes of the
two networks always mirror each other exactly.

With ``conditional=true`` the GAN is class-conditional: the one-hot label joins z
at the generator's input (the first transposed convolution is linear in it, so
this is a learned per-class embedding), and the discriminator adds a projection
of its last features onto a learned class embedding to its logit (Miyato &
Koyama 2018, "cGANs with Projection Discriminator").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gentoolkit import GentoolError, ImageSpec, Model, Recipe, from_signed, to_signed

Layer = tuple[int, int, int]  # kernel, stride, padding

LAYERS: dict[int, list[Layer]] = {
    28: [  # MNIST-sized; a 3 x 3 kernel turns 4 x 4 into 7 x 7
        (4, 1, 0),  # state size. (ngf*4) x 4 x 4
        (3, 2, 1),  # state size. (ngf*2) x 7 x 7
        (4, 2, 1),  # state size. (ngf) x 14 x 14
        (4, 2, 1),  # state size. (nc) x 28 x 28
    ],
    32: [  # CIFAR-sized
        (4, 1, 0),  # state size. (ngf*4) x 4 x 4
        (4, 2, 1),  # state size. (ngf*2) x 8 x 8
        (4, 2, 1),  # state size. (ngf) x 16 x 16
        (4, 2, 1),  # state size. (nc) x 32 x 32
    ],
    64: [  # the classic DCGAN of pytorch/examples
        (4, 1, 0),  # state size. (ngf*8) x 4 x 4
        (4, 2, 1),  # state size. (ngf*4) x 8 x 8
        (4, 2, 1),  # state size. (ngf*2) x 16 x 16
        (4, 2, 1),  # state size. (ngf) x 32 x 32
        (4, 2, 1),  # state size. (nc) x 64 x 64
    ],
    96: [  # the article's anime-face GAN: the last layer triples 32 x 32 to 96 x 96
        (4, 1, 0),  # state size. (ngf*8) x 4 x 4
        (4, 2, 1),  # state size. (ngf*4) x 8 x 8
        (4, 2, 1),  # state size. (ngf*2) x 16 x 16
        (4, 2, 1),  # state size. (ngf) x 32 x 32
        (5, 3, 1),  # state size. (nc) x 96 x 96
    ],
}


def widths(layers: list[Layer], base: int) -> list[int]:
    """Feature maps of the hidden states from the smallest up: 8*base, 4*base, 2*base, base."""
    return [base * 2 ** i for i in reversed(range(len(layers) - 1))]


def build_generator(layers: list[Layer], nz: int, ngf: int, nc: int) -> nn.Sequential:
    """ConvTranspose2d + BatchNorm + ReLU blocks, then Tanh so pixels land in [-1, 1]."""
    channels = [nz, *widths(layers, ngf), nc]
    modules: list[nn.Module] = []
    for i, (kernel, stride, padding) in enumerate(layers):
        modules.append(nn.ConvTranspose2d(channels[i], channels[i + 1], kernel, stride, padding, bias=False))
        if i < len(layers) - 1:
            modules += [nn.BatchNorm2d(channels[i + 1]), nn.ReLU(True)]
    modules.append(nn.Tanh())
    return nn.Sequential(*modules)


def build_discriminator(layers: list[Layer], ndf: int, nc: int) -> nn.Sequential:
    """The generator's convolutions in reverse, with LeakyReLU(0.2), down to one logit per image.

    No BatchNorm on the input layer (as in the paper) and no Sigmoid: the loss takes
    logits, which is numerically safer than probabilities fed to BCELoss.
    """
    channels = [nc, *reversed(widths(layers, ndf)), 1]
    modules: list[nn.Module] = []
    for i, (kernel, stride, padding) in enumerate(reversed(layers)):
        modules.append(nn.Conv2d(channels[i], channels[i + 1], kernel, stride, padding, bias=False))
        if i < len(layers) - 1:
            if i > 0:
                modules.append(nn.BatchNorm2d(channels[i + 1]))
            modules.append(nn.LeakyReLU(0.2, inplace=True))
    return nn.Sequential(*modules)


class ConditionalGenerator(nn.Module):
    """The generator of a class-conditional GAN: the one-hot label joins z as ``classes`` more
    input channels."""

    def __init__(self, layers: list[Layer], nz: int, ngf: int, nc: int, classes: int):
        super().__init__()
        self.classes = classes
        self.net = build_generator(layers, nz + classes, ngf, nc)

    def forward(self, z: Tensor, labels: Tensor) -> Tensor:
        onehot = F.one_hot(labels, self.classes).to(z.dtype)[:, :, None, None]  # N x classes x 1 x 1
        return self.net(torch.cat([z, onehot], dim=1))


class ProjectionDiscriminator(nn.Module):
    """The discriminator of a class-conditional GAN: its logit for (x, y) is the unconditional
    head's plus the inner product of the class's embedding with the sum-pooled last features,
    psi(phi(x)) + embed(y) . sum phi(x) (Miyato & Koyama 2018). The projection makes the logit
    a log density ratio of the class's images rather than of the label's guess from the image."""

    def __init__(self, layers: list[Layer], ndf: int, nc: int, classes: int):
        super().__init__()
        net = build_discriminator(layers, ndf, nc)
        self.features, self.head = net[:-1], net[-1]  # phi: ... -> width x 4 x 4; psi: -> 1 x 1 x 1
        self.embed = nn.Embedding(classes, self.head.in_channels)

    def forward(self, x: Tensor, labels: Tensor) -> Tensor:
        """One logit per image, N."""
        features = self.features(x)  # N x width x 4 x 4
        projection = (self.embed(labels) * features.sum((2, 3))).sum(1)  # N
        return self.head(features).view(-1) + projection


def init_weights(module: nn.Module) -> None:
    """The paper's init: convolutions N(0, 0.02), BatchNorm scale N(1, 0.02) and shift 0; the
    class embeddings of a conditional GAN N(0, 0.02) too."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Embedding)):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def layers_for(spec: ImageSpec) -> list[Layer]:
    """The architecture for the data's image size, or a clear error naming the sizes there are."""
    if spec.height != spec.width or spec.height not in LAYERS:
        raise GentoolError(f"dcgan supports 28x28, 32x32, 64x64 and 96x96 images; got {spec.height}x{spec.width}. "
                           "Use --image-size 64 (or 28, 32, 96) to resize the data.")
    return LAYERS[spec.height]


class DCGAN(Model):
    """Deep convolutional GAN for 28, 32, 64 and 96 pixel images (the article's anime-face GAN)."""

    name = "dcgan"
    family = "gan"
    default_objective = "gan"
    default_trainer = "adversarial"
    default_sampler = "prior"
    recipe = Recipe(lr=2e-4, batch_size=128, epochs=25)
    standard_normal_prior = True
    # NCHW: --channels-last trains 1.22x as fast at 96 x 96 on a CPU with the same losses, but its 5-epoch
    # MNIST FIDs came out worse at both seeds tried (docs/benchmarks.md), so it stays a choice for now
    channels_last = False

    @dataclass
    class Config:
        nz: int = 100  # size of the latent code z
        ngf: int = 64  # generator feature maps in its last hidden layer (doubling towards z)
        ndf: int = 64  # discriminator feature maps in its first layer (doubling towards the logit)
        conditional: bool = False  # class-conditional: the label joins z in G and is projected in D

        def __post_init__(self) -> None:
            for key in ("nz", "ngf", "ndf"):
                if getattr(self, key) <= 0:
                    raise ValueError(f"{key} must be a positive integer, got {getattr(self, key)}")

    def __init__(self, config: Config, spec: ImageSpec):
        super().__init__(config, spec)
        layers = layers_for(spec)
        if config.conditional:
            if not spec.classes:
                raise ValueError("conditional=true needs a data set with class labels (mnist, fashion-mnist, shapes, "
                                 "an image folder of class folders)")
            self.num_classes = spec.classes
            self.netg = ConditionalGenerator(layers, config.nz, config.ngf, spec.channels, spec.classes)
            self.netd = ProjectionDiscriminator(layers, config.ndf, spec.channels, spec.classes)
        else:
            self.netg = build_generator(layers, config.nz, config.ngf, spec.channels)
            self.netd = build_discriminator(layers, config.ndf, spec.channels)
        self.apply(init_weights)

    def prepare(self, batch: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Pixels in [-1, 1], the range of the generator's Tanh."""
        return to_signed(batch)

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return torch.randn(n, self.config.nz, 1, 1, generator=generator, device=self.device)

    def generate(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        return from_signed(self.netg(z) if labels is None else self.netg(z, labels))

    def discriminator_logits(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        """One logit per image in [-1, 1] (and its label, for a conditional model): what the GAN
        objective trains."""
        if labels is None:
            return self.netd(x).view(-1)  # N x 1 x 1 x 1 -> N
        return self.netd(x, labels)

    def discriminator_score(self, images: Tensor, labels: Tensor | None = None) -> Tensor:
        """The logit for images in [0, 1]: ranked like D's probability, without the ties
        a saturated sigmoid gives the best images."""
        return self.discriminator_logits(images * 2.0 - 1.0, labels)
