"""Feature spaces for the sample-quality metrics (fid, kid, precision-recall).

Two kinds, chosen by the metric's ``features`` option:

- ``classifier``: the penultimate layer (128 numbers, standardised) of a small CNN
  trained to classify the run's own data set. Always available offline; trained once per
  data set (under a minute on two CPU cores for MNIST) and cached as safetensors
  in ``$XDG_CACHE_HOME/gentoolkit/features/``, keyed by a hash of the training
  images and labels. Its numbers are NOT comparable to Inception FIDs in papers.
- ``inception``: the 2048-d pool features of the Inception-v3 that published FIDs
  use, from torch-fidelity, when it is installed and its weights are already in
  the torch hub cache (gentoolkit never downloads them while evaluating).
"""

from __future__ import annotations

import hashlib
import itertools
import os
import warnings
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import safetensors.torch
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from torch import Tensor, nn

from gentoolkit import GentoolError, ImageData, cache_dir, eval_mode, index_batches, phase, to_unit

Features = Literal["auto", "classifier", "inception"]

# Part of the cache key: change it whenever the network or its training changes,
# so old cached classifiers are not mistaken for new ones.
CLASSIFIER_VERSION = "classifier-v2"
INCEPTION_DOWNLOAD = ('python -c "from torch_fidelity.feature_extractor_inceptionv3 import '
                      "FeatureExtractorInceptionV3 as F; F('inception-v3-compat', ['2048'])\"")


@dataclass
class FeatureSpace:
    """A network mapping uint8 images to feature vectors, and the name results report it by."""

    name: str  # e.g. "classifier-3f2a9c01b7de" or "inception-v3"
    network: nn.Module  # uint8 N x C x H x W -> N x F

    def embed(self, images: Tensor, batch_size: int) -> Tensor:
        """Features of uint8 images, batch by batch, in float64 for the statistics after."""
        with eval_mode(self.network):
            return torch.cat([self.network(images[i:i + batch_size]).double()
                              for i in range(0, len(images), batch_size)])


def feature_space(choice: Features, data: ImageData, device: torch.device, metric: str) -> FeatureSpace:
    """The feature space ``choice`` names; ``auto`` is Inception when it is here, else the classifier."""
    weights = inception_weights() if choice != "classifier" else None
    if weights is not None:
        with phase("loading Inception-v3"):
            return FeatureSpace("inception-v3", InceptionNet(weights).to(device))
    if choice == "inception":
        raise GentoolError(f"{metric} with features=inception needs the torch-fidelity package and its "
                           f"Inception-v3 weights in the torch hub cache; gentoolkit never downloads them while "
                           f"evaluating. Install them once with: pip install torch-fidelity && {INCEPTION_DOWNLOAD}")
    return classifier_features(data, device, metric)


# --------------------------------------------------------------- classifier


class ClassifierNet(nn.Module):
    """Two strided convolutions and a 128-unit layer whose values (before the ReLU, so no unit is
    ever dead) are the features; the head on top is only there to train them. Small enough
    to train on a CPU.

    The features are standardised with the training set's mean and spread per unit, so their
    scale does not depend on how training happened to go, and the cubic kernel of KID sees
    values of order one, as with Inception features.
    """

    def __init__(self, shape: tuple[int, int, int], classes: int):
        super().__init__()
        channels, height, width = shape
        self.body = nn.Sequential(
            nn.Conv2d(channels, 16, 4, 2, 1), nn.ReLU(),  # N x 16 x H/2 x W/2
            nn.Conv2d(16, 32, 4, 2, 1), nn.ReLU(),  # N x 32 x H/4 x W/4
            nn.Flatten(),  # N x 32*H/4*W/4
            nn.Linear(32 * (height // 4) * (width // 4), 128),  # N x 128
        )
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(128, classes))
        self.register_buffer("mean", torch.zeros(128))  # of the raw features on the training set
        self.register_buffer("std", torch.ones(128))

    def raw(self, images: Tensor) -> Tensor:
        return self.body(to_unit(images) - 0.5)

    def forward(self, images: Tensor) -> Tensor:
        """The 128 standardised features of uint8 images."""
        return (self.raw(images) - self.mean) / self.std

    def logits(self, images: Tensor) -> Tensor:
        return self.head(self.raw(images))


def shuffled_batches(n: int, batch_size: int, generator: torch.Generator, device: torch.device) -> Iterator[Tensor]:
    """Index batches over a new random order of range(n) each epoch, without end."""
    while True:
        yield from index_batches(n, batch_size, shuffle=True, drop_last=False, generator=generator, device=device)


def train_classifier(images: Tensor, labels: Tensor, device: torch.device, steps: int = 500,
                     batch_size: int = 256, lr: float = 2e-3) -> ClassifierNet:
    """Fit the classifier with Adam on uint8 images and int labels.

    A fixed number of updates rather than epochs: 500 are about two epochs of MNIST (98%
    test accuracy, well under a minute on two CPU cores) and still enough for a small data
    set. Then the features' mean and spread on the training set are measured. Seeded, without
    touching the global random state, so one data set gets the same network on one device.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = ClassifierNet(images.shape[1:], int(labels.max()) + 1).to(device)
    images, labels = images.to(device), labels.to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    batches = shuffled_batches(len(images), batch_size, torch.Generator().manual_seed(0), device)
    with phase("training the feature classifier (once per data set)", total=steps) as progress:
        for index in itertools.islice(batches, steps):
            loss = F.cross_entropy(net.logits(images[index]), labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            progress.advance()
    with torch.no_grad():
        raw = torch.cat([net.raw(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])
        net.mean.copy_(raw.mean(0))
        net.std.copy_(raw.std(0).clamp(min=1e-6))  # a unit constant on the data would divide by 0
    return net.eval()


def features_cache() -> Path:
    """Where trained classifiers are kept: ``$XDG_CACHE_HOME`` (else ``~/.cache``) / gentoolkit/features."""
    return cache_dir("features")


def data_digest(images: Tensor, labels: Tensor) -> str:
    """SHA-256 of the classifier version and the training images and labels, shapes and dtypes included."""
    digest = hashlib.sha256(CLASSIFIER_VERSION.encode())
    for tensor in (images, labels):
        digest.update(f"{tuple(tensor.shape)} {tensor.dtype}".encode())
        digest.update(tensor.cpu().contiguous().numpy())
    return digest.hexdigest()


def classifier_features(data: ImageData, device: torch.device, metric: str) -> FeatureSpace:
    """The cached classifier for this data set, trained (and cached) first if there is none yet.

    A cache file that cannot be used (truncated, not safetensors, other tensors) costs
    a retraining and a warning, never the evaluation: the file is only a shortcut.
    """
    if data.train_labels is None:
        raise GentoolError(f"{metric} with classifier features needs a data set with labels (mnist, fashion-mnist, "
                           "shapes); this one has none. Install torch-fidelity and its Inception-v3 weights to use "
                           "Inception features instead (see docs/evaluation.md).")
    with phase("loading the feature classifier"):
        digest = data_digest(data.train, data.train_labels)
        path = features_cache() / f"{digest}.safetensors"
        net = cached_classifier(path, data.train.shape[1:], int(data.train_labels.max()) + 1) if path.is_file() \
            else None
    if net is None:
        net = train_classifier(data.train, data.train_labels, device)
        save_classifier(net, path)
    return FeatureSpace(f"classifier-{digest[:12]}", net.to(device).eval())


def cached_classifier(path: Path, shape: tuple[int, int, int], classes: int) -> ClassifierNet | None:
    """The classifier cached at ``path``, or None (with a warning saying why) when the file cannot be used."""
    net = ClassifierNet(shape, classes)
    try:
        state = safetensors.torch.load_file(path)
    except (SafetensorError, OSError) as exc:
        problem = f"not a readable safetensors file: {exc}"
    else:
        if {k: v.shape for k, v in state.items()} != {k: v.shape for k, v in net.state_dict().items()}:
            problem = "its tensors are not this classifier's: other names or shapes"
        elif not all(t.is_floating_point() and t.isfinite().all() for t in state.values()):
            problem = "its weights are not all finite numbers"
        else:
            net.load_state_dict(state)
            return net
    warnings.warn(f"the cached feature classifier {path} is damaged ({problem}); training it again and "
                  "overwriting it.", stacklevel=3)
    return None


def save_classifier(net: ClassifierNet, path: Path) -> None:
    """Cache a trained classifier, atomically: concurrent evaluations never see half a file.

    A cache that cannot be written is only a warning: the classifier is trained already.
    """
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        safetensors.torch.save_file(net.state_dict(), partial, metadata={"version": CLASSIFIER_VERSION})
        os.replace(partial, path)
    except (OSError, SafetensorError) as exc:
        warnings.warn(f"could not cache the feature classifier in {path} ({exc}); it will be trained again "
                      "next time.", stacklevel=3)
    finally:
        with suppress(OSError):  # no folder to hold it: nothing to remove
            partial.unlink(missing_ok=True)


# ---------------------------------------------------------------- inception


def inception_weights() -> Path | None:
    """torch-fidelity's Inception-v3 weights file when the package is installed and the file is already in
    the torch hub cache; None otherwise."""
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3
    except ImportError:
        return None
    path = Path(torch.hub.get_dir()) / "checkpoints" / URL_INCEPTION_V3.rsplit("/", 1)[-1]
    return path if path.is_file() else None


class InceptionNet(nn.Module):
    """torch-fidelity's Inception-v3 (the TensorFlow FID network, ported), 2048 pool features."""

    def __init__(self, weights: Path):
        super().__init__()
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
        self.inception = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                                     feature_extractor_weights_path=str(weights))

    def forward(self, images: Tensor) -> Tensor:
        """2048 features of uint8 images; grey images are repeated into three channels."""
        return self.inception(images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images)[0]
