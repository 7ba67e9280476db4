"""Sample-quality metrics: fid, kid and precision-recall for any model, label-accuracy for
class-conditional ones.

fid, kid and precision-recall embed the evaluated real images and ``k`` generated
ones in one feature space (see :mod:`gentoolkit_metrics.features`) and compare the
two sets there; only the comparison differs. label-accuracy asks the classifier
behind the offline features which class each generated image shows.

Every generated set is drawn with the evaluation's sampler, ``batch_size`` at a
time; a class-conditional model draws the classes in turn (image i is of class i
mod the number of classes), so each class is equally represented.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from gentoolkit import GentoolError, ImageData, Metric, Model, Sampler, check_memory, conditional, phase
from gentoolkit_metrics.checks import sample_count
from gentoolkit_metrics.distances import frechet_distance, kernel_distance, precision_recall
from gentoolkit_metrics.features import Features, FeatureSpace, classifier_features, feature_space

DEFAULT_IMAGES = 10_000  # generated images when k is not given (fewer if the split is smaller)


def generated_batches(model: Model, sampler: Sampler, n: int, batch_size: int,
                      generator: torch.Generator) -> Iterator[tuple[Tensor, Tensor | None]]:
    """``n`` images drawn with ``sampler``, ``batch_size`` at a time, as uint8 batches rounded as the
    real images are (and as saving them would), each with the labels it was drawn for: the
    classes in turn for a class-conditional model, None for others."""
    for start in range(0, n, batch_size):
        count = min(batch_size, n - start)
        if conditional(model):
            labels = torch.arange(start, start + count, device=model.device) % model.num_classes
            images = sampler.sample(model, count, generator, labels).images
        else:
            labels, images = None, sampler.sample(model, count, generator).images
        yield images.mul(255).round().clamp(0, 255).to(torch.uint8), labels


def generated_features(model: Model, sampler: Sampler, space: FeatureSpace, n: int, batch_size: int,
                       generator: torch.Generator) -> Tensor:
    """Features of ``n`` images drawn with ``sampler``."""
    chunks = []
    with phase(f"generating {n:,} images", total=n) as progress:
        for images, _ in generated_batches(model, sampler, n, batch_size, generator):
            chunks.append(space.embed(images, batch_size))
            progress.advance(len(images))
    return torch.cat(chunks)


class SampleQuality(Metric):
    """What fid, kid and precision-recall share: the features, k and the reported extras."""

    key: ClassVar[str]  # prefix of the extra keys: <key>_k (images generated) and <key>_features
    min_images: ClassVar[int] = 2  # the comparison needs at least this many real and generated images

    @dataclass
    class Config:
        # auto: Inception-v3 when torch-fidelity and its weights are installed, else classifier;
        # classifier: a small CNN trained on the data set's labelled training split (cached);
        # inception: fail unless Inception-v3 is available
        features: Features = "auto"

    def compute(self, model: Model, images: Tensor, *, k: int | None, batch_size: int,
                generator: torch.Generator, data: ImageData, sampler: Sampler) -> dict[str, Any]:
        n = sample_count(self.name, k, min(DEFAULT_IMAGES, len(images)))
        if min(n, len(images)) < self.min_images:
            raise GentoolError(f"{self.name} needs at least {self.min_images} real and {self.min_images} generated "
                               f"images; got {len(images)} real and k={n}.")
        space = feature_space(self.config.features, data, images.device, self.name)
        with phase(f"embedding {len(images):,} real images"):
            real = space.embed(images, batch_size)
        check_memory(f"{self.name} with k={n}", 2 * n * real[0].numel() * real.element_size(),
                     "lower --k")  # the generated features, and their copy when joined
        fake = generated_features(model, sampler, space, n, batch_size, generator)
        with phase("comparing real and generated features"):
            values = self.compare(real, fake, generator)
        return {**values, f"{self.key}_k": n, f"{self.key}_features": space.name}

    @abstractmethod
    def compare(self, real: Tensor, fake: Tensor, generator: torch.Generator) -> dict[str, float]:
        """The metric's values from real and generated features (float64, N x F and k x F)."""


class FID(SampleQuality):
    """Frechet distance between real and generated images in a feature space (lower is better)."""

    name = "fid"
    key = "fid"

    def compare(self, real: Tensor, fake: Tensor, generator: torch.Generator) -> dict[str, float]:
        return {"fid": frechet_distance(real, fake)}


class KID(SampleQuality):
    """Kernel distance (unbiased MMD^2, cubic kernel) between real and generated features (lower is better)."""

    name = "kid"
    key = "kid"

    def compare(self, real: Tensor, fake: Tensor, generator: torch.Generator) -> dict[str, float]:
        mean, std = kernel_distance(real, fake, generator)
        return {"kid": mean, "kid_std": std}


class PrecisionRecall(SampleQuality):
    """Share of generated images that look real (precision) and of real ones the model covers (recall)."""

    name = "precision-recall"
    key = "precision_recall"
    higher_is_better = True
    neighbours: ClassVar[int] = 3  # the k of the k-NN radii, as in Kynkaanniemi et al. 2019
    min_images = neighbours + 1

    def compare(self, real: Tensor, fake: Tensor, generator: torch.Generator) -> dict[str, float]:
        precision, recall = precision_recall(real, fake, self.neighbours)
        return {"precision": precision, "recall": recall}


class LabelAccuracy(Metric):
    """Share of a class-conditional model's samples that the data set's classifier assigns to the
    class they were drawn for (higher is better)."""

    name = "label-accuracy"
    higher_is_better = True

    def compute(self, model: Model, images: Tensor, *, k: int | None, batch_size: int,
                generator: torch.Generator, data: ImageData, sampler: Sampler) -> dict[str, Any]:
        """The classifier is the one the offline fid features come from, trained on the data set's
        own labels, so a model that ignores its labels scores about 1 / classes and a perfect one
        about the classifier's accuracy on real test images."""
        if not conditional(model):
            raise GentoolError(f"label-accuracy needs a class-conditional model; '{model.name}' was trained without "
                               "--set conditional=true.")
        n = sample_count(self.name, k, DEFAULT_IMAGES)
        space = classifier_features(data, images.device, self.name)
        correct = 0
        with torch.no_grad():
            for batch, labels in generated_batches(model, sampler, n, batch_size, generator):
                correct += int((space.network.logits(batch).argmax(1) == labels).sum())
        return {"label_accuracy": correct / n, "label_accuracy_k": n, "label_accuracy_features": space.name}
