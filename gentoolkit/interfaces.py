"""The interfaces every component implements: Model, Objective, Sampler, Trainer, Dataset.

A component is a class with a ``name`` and a ``Config`` dataclass. The registry
builds it from that config, so every option a user can set with ``--set`` is a
typed, documented dataclass field, and a run can be rebuilt from its
``config.json`` alone.

Capabilities (:class:`VariationalModel`, :class:`DiscriminatorScored`) are small
protocols that objectives, samplers and metrics check for, so a sampler written
for one model works for any model that has what it needs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from torch import Tensor, nn


@dataclass
class NoConfig:
    """The config of a component that has no options."""


class Component:
    """What every registered class has: a name, a config dataclass and a description."""

    name: ClassVar[str]
    Config: ClassVar[type] = NoConfig

    @classmethod
    def description(cls) -> str:
        """The first line of the class docstring, shown by ``gentool list-*``."""
        doc = (cls.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""


# --------------------------------------------------------------------- data


@dataclass(frozen=True)
class ImageSpec:
    """The shape of the images a model is built for."""

    channels: int
    height: int
    width: int
    binary: bool = False  # pixels are (almost) all black or white, as in MNIST

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)

    @property
    def pixels(self) -> int:
        return self.channels * self.height * self.width


@dataclass
class ImageData:
    """A data set decoded once into memory: uint8 tensors of shape N x C x H x W."""

    train: Tensor
    test: Tensor | None
    spec: ImageSpec
    train_labels: Tensor | None = None  # class indices (int64, N), where the data set has classes
    test_labels: Tensor | None = None


@dataclass
class DataOptions:
    """Where and how a data set is read; filled in from the CLI."""

    root: Path  # the data root: --data-dir, else $GENTOOL_DATA_DIR, else the user cache
    data_dir: Path | None = None  # the --data-dir the user gave, if any
    download: bool = True  # fetch missing files (torchvision data sets)
    image_size: int | None = None  # resize and centre-crop to this square size


class Dataset(Component, ABC):
    """A named source of images, decoded into an :class:`ImageData`."""

    def __init__(self, config: Any = None):
        self.config = config if config is not None else self.Config()

    @abstractmethod
    def load(self, options: DataOptions) -> ImageData:
        """Read (and download if allowed) the data; raise GentoolError when it is missing."""


# -------------------------------------------------------------------- model


@dataclass(frozen=True)
class Recipe:
    """A model's training defaults, used where the user sets nothing."""

    lr: float = 1e-3
    batch_size: int = 128
    epochs: int = 10


class Model(nn.Module, Component, ABC):
    """A generative model of images.

    Built from its ``Config`` and the :class:`ImageSpec` of the data. Images go
    in as uint8 batches (:meth:`prepare` maps them to the model's input space)
    and come out of :meth:`generate` as floats in [0, 1].
    """

    family: ClassVar[str] = ""  # "vae", "gan", ...: shown by list-models
    default_objective: ClassVar[str]
    default_trainer: ClassVar[str] = "adam"
    default_sampler: ClassVar[str] = "prior"
    recipe: ClassVar[Recipe] = Recipe()

    def __init__(self, config: Any, spec: ImageSpec):
        super().__init__()
        self.config = config
        self.spec = spec

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @abstractmethod
    def prepare(self, batch: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Turn a uint8 batch into model input (scale, binarise, ...). Random only through ``generator``."""

    @abstractmethod
    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``n`` latent codes from the prior, on the model's device."""

    @abstractmethod
    def generate(self, z: Tensor) -> Tensor:
        """Map latent codes to images, N x C x H x W floats in [0, 1]."""


@runtime_checkable
class VariationalModel(Protocol):
    """A latent-variable model with a Gaussian encoder q(z|x) and a standard normal prior."""

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log-variance of q(z|x)."""

    def decode(self, z: Tensor) -> Tensor:
        """The parameters of p(x|z) (logits, means, ...)."""

    def log_likelihood(self, x: Tensor, decoded: Tensor) -> Tensor:
        """log p(x|z) per image, in nats, for ``decoded = decode(z)``."""


@runtime_checkable
class DiscriminatorScored(Protocol):
    """A model that can score how real an image looks (higher is more real)."""

    def discriminator_score(self, images: Tensor) -> Tensor:
        """One score per image; ``images`` are N x C x H x W floats in [0, 1]."""


@runtime_checkable
class BitsPerDim(Protocol):
    """A likelihood model that can express its bound in bits per dimension of the stored data."""

    def bits_per_dim(self, log_likelihood: float) -> float | None:
        """-log2 P(pixels) / D for a log-likelihood (or bound) in nats per image, or None
        when log_likelihood is not a likelihood of the discrete pixels (grey levels read
        as Bernoulli probabilities, a density of data that was not dequantised)."""


# ---------------------------------------------------------------- objective


@dataclass
class Loss:
    """A loss to minimise and the per-image metrics that explain it."""

    value: Tensor  # scalar
    metrics: dict[str, Tensor] = field(default_factory=dict)  # scalars, averaged per epoch


class Requires:
    """Mixin for components that only work with models having some capabilities."""

    requires: ClassVar[tuple[type, ...]] = ()

    @classmethod
    def fits(cls, model: Model) -> bool:
        return all(isinstance(model, capability) for capability in cls.requires)


class Objective(Component, Requires, ABC):
    """A single loss to minimise, such as the negative ELBO."""

    def __init__(self, config: Any = None):
        self.config = config if config is not None else self.Config()

    @abstractmethod
    def loss(self, model: Model, x: Tensor) -> Loss:
        """The loss on a prepared batch ``x``, averaged over its images."""


class AdversarialObjective(Component, Requires, ABC):
    """A two-player objective: one loss for the discriminator, one for the generator."""

    def __init__(self, config: Any = None):
        self.config = config if config is not None else self.Config()

    @abstractmethod
    def discriminator_loss(self, model: Model, real: Tensor, fake: Tensor) -> Loss:
        """Loss of the discriminator on prepared real images and detached fakes."""

    @abstractmethod
    def generator_loss(self, model: Model, fake: Tensor) -> Loss:
        """Loss of the generator on fakes it just produced."""


# ------------------------------------------------------------------ trainer


class Trainer(Component, ABC):
    """Owns the optimisers and performs one update per batch; the loop around it is shared."""

    objective_type: ClassVar[type] = Objective  # the kind of objective it can optimise
    drop_last: ClassVar[bool] = False  # skip an incomplete last batch (BatchNorm needs this)

    def __init__(self, model: Model, objective: Any, config: Any, lr: float):
        self.model = model
        self.objective = objective
        self.config = config if config is not None else self.Config()
        self.lr = lr
        self.grad_scaler: torch.amp.GradScaler | None = None  # set by the loop for --precision fp16
        self.skip_nonfinite = False  # set by the loop for --on-nan skip
        self.skipped_steps = 0  # updates skipped because their loss was NaN or infinite

    def optimize(self, optimizer: torch.optim.Optimizer, loss: Tensor, clip: float = 0.0) -> None:
        """Backward and step for one optimiser: gradient clipping when ``clip > 0``, loss
        scaling when training in fp16, and skipping non-finite losses under ``--on-nan skip``.
        Trainers call this rather than ``backward``."""
        optimizer.zero_grad(set_to_none=True)
        if self.skip_nonfinite and not torch.isfinite(loss):
            self.skipped_steps += 1
            return
        scaler = self.grad_scaler
        (scaler.scale(loss) if scaler else loss).backward()
        if clip > 0:
            if scaler:
                scaler.unscale_(optimizer)
            params = [p for group in optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, clip)
        if scaler:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()

    @abstractmethod
    def train_step(self, x: Tensor) -> dict[str, Tensor]:
        """Update on a prepared batch; return scalar metrics, ``"loss"`` among them."""

    @torch.no_grad()
    def evaluate(self, x: Tensor) -> dict[str, Tensor]:
        """Scalar metrics on a prepared held-out batch; none by default."""
        return {}

    def optimizers(self) -> list[torch.optim.Optimizer]:
        """The optimisers whose learning rate a schedule scales: by default every attribute that is one."""
        return [v for v in vars(self).values() if isinstance(v, torch.optim.Optimizer)]

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """The optimiser state needed to resume."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""


# ------------------------------------------------------------------ sampler


@dataclass
class Samples:
    """Generated images in [0, 1], with per-image scores when the sampler has them."""

    images: Tensor
    scores: Tensor | None = None


class Sampler(Component, Requires, ABC):
    """A way to draw images from a trained model."""

    def __init__(self, config: Any = None):
        self.config = config if config is not None else self.Config()

    @abstractmethod
    def sample(self, model: Model, n: int, generator: torch.Generator) -> Samples:
        """Draw ``n`` images; all randomness comes from ``generator``."""


# ------------------------------------------------------------------- metric


class Metric(Component, Requires, ABC):
    """A number saying how good a trained model is, computed on one split of its data."""

    higher_is_better: ClassVar[bool] = False

    def __init__(self, config: Any = None):
        self.config = config if config is not None else self.Config()

    @abstractmethod
    def compute(self, model: Model, images: Tensor, *, k: int | None, batch_size: int,
                generator: torch.Generator, data: ImageData) -> dict[str, Any]:
        """Values named by what they are (e.g. ``{"nll": 86.2}``) on uint8 ``images``.

        ``images`` is the evaluated split, on the model's device; ``data`` the whole data
        set (metrics that learn features use its training split and labels). ``k`` is
        the sample count the metric is known by (importance samples for an NLL,
        generated images for a Frechet distance); None means its default. All
        randomness comes from ``generator``, so results repeat.
        """
