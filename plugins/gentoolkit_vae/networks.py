"""Encoder and decoder networks, MLP or convolutional, sized for the data.

The encoder ends in 2 * latent_dim outputs (the mean and log-variance of
q(z|x)); the decoder maps a code to one value per pixel, N x C x H x W, with no
output activation: the model decides what those values parameterise.

A class-conditional model passes ``classes`` > 0: each network then takes that
many more inputs, for the one-hot label the model attaches to its image or code
(extra entries of the flat MLP input and of the code, extra channels of the conv
encoder's image). With ``classes=0`` the networks are exactly the unconditional ones.
"""

from __future__ import annotations

from torch import nn

from gentoolkit import GentoolError, ImageSpec


def mlp(sizes: list[int]) -> list[nn.Module]:
    """Linear layers between consecutive sizes, with a ReLU after each but the last."""
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return layers


def mlp_networks(spec: ImageSpec, hidden: tuple[int, ...], latent_dim: int,
                 classes: int = 0) -> tuple[nn.Module, nn.Module]:
    """The article's MLP (784-400-20-400-784 for MNIST), with any hidden sizes."""
    encoder = nn.Sequential(
        nn.Flatten(),  # N x (D + classes)
        *mlp([spec.pixels + classes, *hidden, 2 * latent_dim]),  # N x 2L
    )
    decoder = nn.Sequential(
        *mlp([latent_dim + classes, *reversed(hidden), spec.pixels]),  # N x D
        nn.Unflatten(1, spec.shape),  # N x C x H x W
    )
    return encoder, decoder


def conv_sizes(spec: ImageSpec, layers: int) -> list[tuple[int, int]]:
    """Height and width before each stride-2 convolution and after the last one."""
    sizes = [(spec.height, spec.width)]
    for _ in range(layers):
        height, width = sizes[-1]
        if height < 2 or width < 2:
            raise GentoolError(f"the conv VAE with {layers} layers needs images of at least {2 ** layers} pixels "
                               f"a side; got {spec.height}x{spec.width}. Set fewer channels or arch=mlp.")
        sizes.append((height // 2, width // 2))
    return sizes


def conv_networks(spec: ImageSpec, channels: tuple[int, ...], latent_dim: int,
                  classes: int = 0) -> tuple[nn.Module, nn.Module]:
    """Stride-2 convolutions down to a linear layer, and their exact mirror back up.

    A 4 x 4 convolution with stride 2 and padding 1 halves a side, rounding down;
    the transposed convolution doubles it and adds one through ``output_padding``
    where the side was odd, so every size (28 -> 14 -> 7 -> 14 -> 28, 96, ...) comes
    back exactly.
    """
    sizes = conv_sizes(spec, len(channels))
    widths = [spec.channels, *channels]
    height, width = sizes[-1]
    features = channels[-1] * height * width

    encoder: list[nn.Module] = []
    for i in range(len(channels)):
        inputs = widths[i] + (classes if i == 0 else 0)  # the label's channels join the image
        encoder += [nn.Conv2d(inputs, widths[i + 1], 4, 2, 1), nn.ReLU()]  # N x widths[i+1] x sizes[i+1]
    encoder += [nn.Flatten(), nn.Linear(features, 2 * latent_dim)]  # N x 2L

    decoder: list[nn.Module] = [
        nn.Linear(latent_dim + classes, features),
        nn.ReLU(),
        nn.Unflatten(1, (channels[-1], height, width)),  # N x channels[-1] x sizes[-1]
    ]
    for i in reversed(range(len(channels))):
        odd = (sizes[i][0] % 2, sizes[i][1] % 2)  # add back the row or column that halving dropped
        deconv = nn.ConvTranspose2d(widths[i + 1], widths[i], 4, 2, 1, output_padding=odd)
        decoder.append(deconv)  # N x widths[i] x sizes[i]
        if i > 0:
            decoder.append(nn.ReLU())
    return nn.Sequential(*encoder), nn.Sequential(*decoder)
