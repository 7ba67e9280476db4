"""The interfaces every component implements: Model, Objective, Sampler, Trainer, Dataset.

A component is a class with a ``name`` and a ``Config`` dataclass. The registry
builds it from that config, so every option a user can set with ``--set`` is a
typed, documented dataclass field, and a run can be rebuilt from its
``config.json`` alone.

A :class:`Model` has only what every family of generative model has: a config,
the :class:`ImageSpec` it is built for, ``prepare`` and its default objective,
trainer and sampler. Everything else is a *capability*, a small protocol that a
model has or has not (:class:`LatentModel`, :class:`Likelihood`,
:class:`VariationalModel`, :class:`DiscriminatorScored`, ...). Objectives,
samplers and metrics ask for capabilities, never for a family, so a sampler
written for one model works for any model that has what it needs, and a model
never has to pretend to have what it has not (a diffusion model has no latent
code to draw from, an autoregressive model no encoder).
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from gentoolkit.distributed import average_gradients


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
    classes: int = 0  # number of class labels the data set has; 0 when it has none

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

    def __post_init__(self) -> None:
        if self.train_labels is not None and not self.spec.classes and len(self.train_labels):
            self.spec = dataclasses.replace(self.spec, classes=int(self.train_labels.max()) + 1)


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
    in as uint8 batches (:meth:`prepare` maps them to the model's input space);
    how images come out is up to the samplers that fit the model's capabilities.
    """

    family: ClassVar[str] = ""  # "vae", "gan", "flow", ...: shown by list-models
    default_objective: ClassVar[str]
    default_trainer: ClassVar[str] = "adam"
    default_sampler: ClassVar[str] = "prior"
    # the sampler and options for the per-epoch samples/epoch-NNN.png grids, where a cheaper
    # setting than the default sampler's does (a few diffusion steps); None: default_sampler
    grid_sampler: ClassVar[str | None] = None
    grid_options: ClassVar[Mapping[str, Any]] = {}
    recipe: ClassVar[Recipe] = Recipe()
    # train with 4-D weights in channels-last (NHWC) memory unless --no-channels-last: for conv
    # nets it measures faster (docs/benchmarks.md); a model that reshapes feature maps with
    # .view() must keep False, since a channels-last tensor cannot be viewed across channels
    channels_last: ClassVar[bool] = False
    # > 0 for a class-conditional model: it receives the labels of every batch it trains on,
    # and samplers pass the labels asked for (``gentool sample --label N``) on to it
    num_classes: int = 0

    def __init__(self, config: Any, spec: ImageSpec):
        super().__init__()
        self.config = config
        self.spec = spec

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @abstractmethod
    def prepare(self, batch: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Turn a uint8 batch into model input (scale, binarise, dequantise, ...).

        Random only through ``generator``. The training loop passes ``generator=None``
        (draws then come from the global stream it seeds and resumes); evaluation
        passes a seeded generator, so held-out numbers repeat.
        """


# ------------------------------------------------------------- capabilities


@runtime_checkable
class LatentModel(Protocol):
    """A model that draws an image by mapping a code from its prior: ``generate(sample_latent(n))``.

    A conditional model (``num_classes > 0``) takes ``generate(z, labels)``.
    """

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``n`` latent codes from the prior, on the model's device."""

    def generate(self, z: Tensor) -> Tensor:
        """Map latent codes to images, N x C x H x W floats in [0, 1]."""


@runtime_checkable
class LatentEncoder(Protocol):
    """A :class:`LatentModel` that maps images to the latent codes ``generate`` maps back: the mean
    of q(z|x) for a VAE, the exact code for a flow. Reconstructions and interpolations between
    real images need it (the ``reconstruct`` and ``interpolate`` samplers).

    A conditional model (``num_classes > 0``) takes ``encode_latent(x, labels)``.
    """

    def encode_latent(self, x: Tensor) -> Tensor:
        """The latent codes of prepared images ``x`` (what ``prepare`` returns), one per image."""


@runtime_checkable
class StandardNormalPrior(Protocol):
    """A :class:`LatentModel` whose ``sample_latent`` draws standard normal codes, N(0, I).

    Scaling such codes by a temperature T draws from N(0, T^2 I), the usual way to
    trade diversity for quality (``gentool sample glow --temperature 0.7``).
    """

    standard_normal_prior: bool  # True; declares the capability


@runtime_checkable
class Likelihood(Protocol):
    """A model that gives each image's log-likelihood, or a bound on it, in nats.

    The ``nll`` metric works for every such model and reports the same keys for all of
    them, so the numbers of different families land in one table.
    """

    nll_kind: str  # "exact" (flows), "iwae" (importance weighted, VAEs) or "bound" (a variational bound)
    default_nll_k: int | None  # samples (or terms) log_prob uses when --k is not given; None: it uses none

    def log_prob(self, x: Tensor, *, k: int | None, generator: torch.Generator, max_floats: int) -> Tensor:
        """log p(x), or its estimate or bound, for each prepared image: float64, shape N.

        ``k`` is the number of samples (or terms) for estimates, None for exact ones;
        all randomness comes from ``generator``; at most about ``max_floats`` floats
        of intermediate results are held at once, so memory is bounded for any k.
        """


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


CAPABILITIES: tuple[type, ...] = (LatentModel, LatentEncoder, StandardNormalPrior, Likelihood, VariationalModel,
                                  DiscriminatorScored, BitsPerDim)


def has_capability(model: Any, capability: type) -> bool:
    """Whether ``model`` (an instance or a class) has every member of a capability protocol.

    Use this rather than ``isinstance``: since Python 3.12, ``isinstance`` with a protocol
    looks attributes up statically and misses what ``nn.Module`` keeps in its own dicts
    (submodules, parameters, buffers), so a model with a ``netg`` submodule would not count.
    """
    return all(hasattr(model, name) for name in _protocol_members(capability))


def capabilities(model: Any) -> list[str]:
    """The names of the capabilities ``model`` (an instance or a class) has, for listings."""
    return [c.__name__ for c in CAPABILITIES if has_capability(model, c)]


def _protocol_members(protocol: type) -> list[str]:
    return [name for name in {*vars(protocol), *getattr(protocol, "__annotations__", {})}
            if not name.startswith("_")]


def conditional(model: Model) -> bool:
    """Whether ``model`` is class-conditional: it gets labels in training and sampling."""
    return getattr(model, "num_classes", 0) > 0


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
        return all(has_capability(model, capability) for capability in cls.requires)


class Objective(Component, Requires, ABC):
    """A single loss to minimise, such as the negative ELBO."""

    def __init__(self, config: Any = None):
        self.config = config if config is not None else self.Config()

    @abstractmethod
    def loss(self, model: Model, x: Tensor, labels: Tensor | None = None) -> Loss:
        """The loss on a prepared batch ``x``, averaged over its images; ``labels`` (class
        indices, N) are given for class-conditional models only."""


class AdversarialObjective(Component, Requires, ABC):
    """A two-player objective: one loss for the discriminator, one for the generator."""

    def __init__(self, config: Any = None):
        self.config = config if config is not None else self.Config()

    @abstractmethod
    def discriminator_loss(self, model: Model, real: Tensor, fake: Tensor, labels: Tensor | None = None) -> Loss:
        """Loss of the discriminator on prepared real images and detached fakes (of the same
        ``labels``, for class-conditional models)."""

    @abstractmethod
    def generator_loss(self, model: Model, fake: Tensor, labels: Tensor | None = None) -> Loss:
        """Loss of the generator on fakes it just produced."""


# ------------------------------------------------------------------ trainer


def _stay_fused(optimizer: torch.optim.Optimizer) -> None:
    for group in optimizer.param_groups:
        group["fused"] = True


class Trainer(Component, ABC):
    """Owns the optimisers and performs one update per batch; the loop around it is shared."""

    objective_type: ClassVar[type] = Objective  # the kind of objective it can optimise
    drop_last: ClassVar[bool] = False  # skip an incomplete last batch (BatchNorm needs this)
    # the metric (a key of train_step's and evaluate's results, lower is better) that early stopping
    # and --keep-best watch: test_<monitor> where the data has a test split, else train_<monitor>;
    # None when no number honestly says which epoch is best (a GAN's losses do not)
    monitor: ClassVar[str | None] = "loss"

    def __init__(self, model: Model, objective: Any, config: Any, lr: float):
        self.model = model
        self.objective = objective
        self.config = config if config is not None else self.Config()
        self.lr = lr
        self.grad_scaler: torch.amp.GradScaler | None = None  # set by the loop for --precision fp16
        self.skip_nonfinite = False  # set by the loop for --on-nan skip
        self.skipped_steps = 0  # updates skipped because their loss was NaN or infinite

    @staticmethod
    def adam(params: Iterable[nn.Parameter], lr: float, **options: Any) -> torch.optim.Adam:
        """``torch.optim.Adam`` with its fused kernel (one pass over each tensor for the whole
        update) where the parameters' device has one: the same update in less time
        (docs/benchmarks.md). A run saved by an unfused Adam resumes fused as well (loading
        its state would otherwise turn the kernel off, half-way, under fp16 loss scaling)."""
        params = list(params)
        try:
            optimizer = torch.optim.Adam(params, lr=lr, fused=True, **options)
        except RuntimeError:  # a device or dtype without the fused kernel
            return torch.optim.Adam(params, lr=lr, **options)
        optimizer.register_load_state_dict_post_hook(_stay_fused)
        return optimizer

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
        average_gradients(optimizer)  # under torchrun: clip and step on the average over all processes
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
    def train_step(self, x: Tensor, labels: Tensor | None = None) -> dict[str, Tensor]:
        """Update on a prepared batch; return scalar metrics (``monitor`` among them).

        The loop passes ``labels`` (class indices, N) for class-conditional models only."""

    @torch.no_grad()
    def evaluate(self, x: Tensor, labels: Tensor | None = None) -> dict[str, Tensor]:
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
    """A way to draw images from a trained model.

    A sampler that starts from real images (``reconstruct``, ``interpolate``) sets
    ``needs_data`` (a class attribute, or a property when its config decides); whoever
    builds it for a run (``Run.sampler``) then hands it the run's data set as ``data``
    before it samples. ``group`` is how many consecutive images belong together (an
    image and its reconstruction, an interpolation path): grids keep a group within a
    row, and output written in batches never splits one.
    """

    needs_data: ClassVar[bool] = False
    group: ClassVar[int] = 1

    def __init__(self, config: Any = None):
        self.config = config if config is not None else self.Config()
        self.data: ImageData | None = None  # the run's data set, for a sampler that needs data

    @abstractmethod
    def sample(self, model: Model, n: int, generator: torch.Generator, labels: Tensor | None = None) -> Samples:
        """Draw ``n`` images; all randomness comes from ``generator``, which lives on the model's
        device. ``labels`` (class indices, n) are given for class-conditional models only."""


# ------------------------------------------------------------------- metric


class Metric(Component, Requires, ABC):
    """A number saying how good a trained model is, computed on one split of its data."""

    higher_is_better: ClassVar[bool] = False

    def __init__(self, config: Any = None):
        self.config = config if config is not None else self.Config()

    @abstractmethod
    def compute(self, model: Model, images: Tensor, *, k: int | None, batch_size: int,
                generator: torch.Generator, data: ImageData, sampler: Sampler) -> dict[str, Any]:
        """Values named by what they are (e.g. ``{"nll": 86.2}``) on uint8 ``images``.

        ``images`` is the evaluated split, on the model's device; ``data`` the whole data
        set (metrics that learn features use its training split and labels). ``k`` is
        the sample count the metric is known by (importance samples for an NLL,
        generated images for a Frechet distance); None means its default. Metrics that
        compare generated images draw them with ``sampler`` (``gentool evaluate --sampler``),
        ``batch_size`` at a time. All randomness comes from ``generator``, so results repeat.
        """
