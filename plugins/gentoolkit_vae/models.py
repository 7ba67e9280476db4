"""Variational autoencoders (Kingma & Welling 2013) with a Bernoulli or a Gaussian decoder.

Both share the encoder q(z|x) = N(mu, diag(exp(logvar))), the prior
p(z) = N(0, I) and the networks; they differ in what the decoder's outputs
mean, how pixels are prepared and how log p(x|z) is computed.

With ``conditional=true`` either is a conditional VAE (Sohn et al. 2015): the
one-hot class label y joins the encoder's input and the decoder's code, so the
model is q(z|x, y) and p(x|z, y) and draws the class it is asked for.
"""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gentoolkit import ImageSpec, Model, Recipe, binarize, importance_weighted_log_prob, to_unit
from gentoolkit_vae import maths
from gentoolkit_vae.networks import conv_networks, mlp_networks

Arch = Literal["mlp", "conv"]
Binarize = Literal["auto", "dynamic", "none"]
Variance = Literal["learned", "fixed"]


def check_choice(key: str, value: Any, choices: Any) -> None:
    """Raise ValueError unless ``value`` is one of the ``Literal`` type's ``choices``."""
    options = typing.get_args(choices)
    if value not in options:
        raise ValueError(f"{key} must be one of {', '.join(options)}, got {value!r}")


@dataclass
class VAEConfig:
    arch: Arch = "mlp"  # mlp: fully connected networks; conv: strided convolutions
    latent_dim: int = 20  # size of the latent code z
    hidden: tuple[int, ...] = (400,)  # mlp hidden sizes from the image to z; the decoder mirrors them
    channels: tuple[int, ...] = (32, 64)  # conv feature maps, each layer halving H and W; the decoder mirrors them
    conditional: bool = False  # class-conditional: the one-hot label joins the encoder's image and the decoder's code

    def __post_init__(self) -> None:
        check_choice("arch", self.arch, Arch)
        if self.latent_dim <= 0:
            raise ValueError(f"latent_dim must be a positive integer, got {self.latent_dim}")
        if any(size <= 0 for size in self.hidden):
            raise ValueError(f"hidden sizes must be positive integers, got {self.hidden}")
        if not self.channels or any(width <= 0 for width in self.channels):
            raise ValueError(f"channels must be one or more positive integers, got {self.channels}")


class VAE(Model):
    """What both VAEs share: Gaussian encoder, standard normal prior, MLP or conv networks."""

    family = "vae"
    default_objective = "elbo"
    default_trainer = "adam"
    default_sampler = "prior"
    # the source article's MNIST training (batch 128, 20 epochs), but Adam at 1e-3 instead of its 3e-4:
    # in the same 20 epochs that beats the article's own loop (docs/benchmarks.md)
    recipe = Recipe(lr=1e-3, batch_size=128, epochs=20)
    Config = VAEConfig
    standard_normal_prior = True
    nll_kind = "iwae"
    default_nll_k = 5000  # importance samples per image, as in Burda et al. 2015
    # the conv decoder's transposed convolutions, most of an importance-weighted NLL, run faster
    # channels-last: the families table's nll took 1.3-1.5x less time (docs/benchmarks.md); the MLP
    # has no 4-D weights
    channels_last = True

    def __init__(self, config: VAEConfig, spec: ImageSpec):
        super().__init__(config, spec)
        if config.conditional:
            if not spec.classes:
                raise ValueError("conditional=true needs a data set with class labels (mnist, fashion-mnist, shapes, "
                                 "an image folder of class folders)")
            self.num_classes = spec.classes
        if config.arch == "mlp":
            self.encoder, self.decoder = mlp_networks(spec, config.hidden, config.latent_dim, self.num_classes)
        else:
            self.encoder, self.decoder = conv_networks(spec, config.channels, config.latent_dim, self.num_classes)

    def joined(self, x: Tensor, labels: Tensor | None) -> Tensor:
        """What a network takes: ``x`` itself, or for a conditional model ``x`` with the one-hot label
        attached, as extra channels of an image for the conv encoder and as extra entries otherwise."""
        if not self.num_classes:
            return x
        if labels is None:
            raise ValueError(f"model '{self.name}' is class-conditional: it needs the labels of the batch")
        onehot = F.one_hot(labels, self.num_classes).to(x.dtype)  # N x classes
        if x.dim() == 4 and self.config.arch == "conv":
            return torch.cat([x, onehot[:, :, None, None].expand(-1, -1, *x.shape[2:])], dim=1)
        return torch.cat([x.flatten(1), onehot], dim=1)

    def given(self, labels: Tensor) -> GivenLabels:
        """This conditional model with the labels of a batch fixed: the unconditional model of
        p(x | y) that the objectives and the likelihood metrics evaluate."""
        return GivenLabels(self, labels)

    def encode(self, x: Tensor, labels: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Mean and log-variance of q(z|x) (q(z|x, y) given labels); a log-variance keeps sigma
        positive without constraints."""
        mu, logvar = self.encoder(self.joined(x, labels)).chunk(2, dim=1)  # N x L each
        return mu, logvar

    def encode_latent(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        """The mean of q(z|x) (q(z|x, y) given labels): the code reconstructions and interpolations
        start from."""
        return self.encode(x, labels)[0]

    def reparameterize(self, mu: Tensor, logvar: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """A differentiable sample of q(z|x): mu + exp(logvar / 2) * eps."""
        return maths.reparameterize(mu, logvar, generator)

    def decode(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """One unbounded value per pixel: Bernoulli logits (stabler in the loss than
        probabilities), which the Gaussian VAE squashes into means."""
        return self.decoder(self.joined(z, labels))  # N x C x H x W

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return torch.randn(n, self.config.latent_dim, generator=generator, device=self.device)

    def log_prob(self, x: Tensor, *, k: int | None, generator: torch.Generator, max_floats: int) -> Tensor:
        """log p(x) estimated with k importance samples from q(z|x) (the IWAE bound)."""
        return importance_weighted_log_prob(self, x, k or self.default_nll_k, generator, max_floats)


class BernoulliVAE(VAE):
    """VAE with a Bernoulli decoder (the source article's MNIST VAE, with its maths fixed)."""

    name = "bernoulli-vae"

    @dataclass
    class Config(VAEConfig):
        # auto: dynamic for binary data such as MNIST; dynamic: always draw {0, 1} pixels
        # with the grey levels as probabilities; none: use grey levels as they are
        binarize: Binarize = "auto"

        def __post_init__(self) -> None:
            super().__post_init__()
            check_choice("binarize", self.binarize, Binarize)

    def __init__(self, config: Config, spec: ImageSpec):
        super().__init__(config, spec)
        self.dynamic = config.binarize == "dynamic" or (config.binarize == "auto" and spec.binary)

    def prepare(self, batch: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Pixels in [0, 1], the support of a Bernoulli (the article's [-1, 1] is not);
        with dynamic binarisation a fresh {0, 1} image is drawn every time."""
        x = to_unit(batch)
        return binarize(x, generator) if self.dynamic else x

    def log_likelihood(self, x: Tensor, decoded: Tensor) -> Tensor:
        return maths.bernoulli_log_likelihood(x, decoded)

    def bits_per_dim(self, log_likelihood: float) -> float | None:
        """A probability of {0, 1} pixels when they are binarised; grey levels read as
        probabilities (binarize=none) are not a distribution over the stored data."""
        return maths.bits_per_dim(log_likelihood, self.spec.pixels, levels=1) if self.dynamic else None

    def generate(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """The mean image: each pixel's probability of being 1."""
        return torch.sigmoid(self.decode(z, labels))


class GaussianVAE(VAE):
    """VAE with a Gaussian decoder, fixed or learned variance."""

    name = "gaussian-vae"

    @dataclass
    class Config(VAEConfig):
        variance: Variance = "learned"  # learned: one sigma per pixel, trained with the networks; fixed: sigma
        sigma: float = 0.1  # the decoder's standard deviation when fixed, its starting value when learned
        dequantize: bool = True  # add uniform noise within each pixel's 1/256 bin, so the ELBO bounds 8-bit data

        def __post_init__(self) -> None:
            super().__post_init__()
            check_choice("variance", self.variance, Variance)
            if not self.sigma > 0:
                raise ValueError(f"sigma must be positive, got {self.sigma}")
            if self.variance == "learned" and not self.dequantize:
                raise ValueError("variance=learned needs dequantize=true: on discrete pixels a learned sigma can "
                                 "shrink to 0 and the density grows without bound; use variance=fixed")

    def __init__(self, config: Config, spec: ImageSpec):
        super().__init__(config, spec)
        log_sigma = torch.full(spec.shape, math.log(config.sigma))  # C x H x W
        if config.variance == "learned":
            self.log_sigma = nn.Parameter(log_sigma)
        else:
            self.register_buffer("log_sigma", log_sigma)

    def prepare(self, batch: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Pixels in [0, 1]; dequantised, x = (pixel + u) / 256 with u ~ U[0, 1)."""
        if not self.config.dequantize:
            return to_unit(batch)
        noise = torch.rand(batch.shape, generator=generator, device=batch.device)
        return (batch.float() + noise) / 256

    def decode(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """The means of p(x|z), squashed into [0, 1] where the pixels live."""
        return torch.sigmoid(super().decode(z, labels))

    def log_likelihood(self, x: Tensor, decoded: Tensor) -> Tensor:
        return maths.gaussian_log_likelihood(x, decoded, self.log_sigma)

    def bits_per_dim(self, log_likelihood: float) -> float | None:
        """A density of dequantised 8-bit pixels bounds their probability; of raw grey levels it does not."""
        return maths.bits_per_dim(log_likelihood, self.spec.pixels) if self.config.dequantize else None

    def generate(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """The mean image (a sample would add per-pixel noise)."""
        return self.decode(z, labels)


class GivenLabels:
    """A conditional VAE with the labels of one batch fixed: p(x | y) as an unconditional
    VariationalModel and Likelihood, so code written for those (the bounds, the importance-weighted
    estimate, the likelihood metrics) evaluates a conditional model unchanged.

    That code stacks S draws for each of the N images of a batch into S x N rows, sample by
    sample (``z.flatten(0, 1)`` of S x N x L codes), so the labels are repeated S times to match.
    """

    def __init__(self, model: VAE, labels: Tensor):
        self.model = model
        self.labels = labels

    def labels_for(self, rows: int) -> Tensor:
        if rows % len(self.labels):
            raise ValueError(f"{rows} rows are not whole copies of a batch of {len(self.labels)} labelled images")
        return self.labels.repeat(rows // len(self.labels))

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.model.encode(x, self.labels_for(len(x)))

    def decode(self, z: Tensor) -> Tensor:
        return self.model.decode(z, self.labels_for(len(z)))

    def log_likelihood(self, x: Tensor, decoded: Tensor) -> Tensor:
        return self.model.log_likelihood(x, decoded)

    def generate(self, z: Tensor) -> Tensor:
        return self.model.generate(z, self.labels_for(len(z)))

    def log_prob(self, x: Tensor, *, k: int | None, generator: torch.Generator, max_floats: int) -> Tensor:
        """log p(x | y), estimated as the model's log_prob estimates log p(x)."""
        return importance_weighted_log_prob(self, x, k or self.model.default_nll_k, generator, max_floats)
