"""Evaluation metrics for ``gentool evaluate``: likelihoods of variational models and sample quality.

- ``elbo``, ``nll``, ``recon``: models with an encoder (a VariationalModel), in nats per image.
- ``fid``, ``kid``, ``precision-recall``: any model, comparing generated and real images in a
  feature space (offline classifier features by default; see docs/evaluation.md).
- ``label-accuracy``: class-conditional models, how often the offline classifier sees the
  class a sample was drawn for.
"""

from gentoolkit import hookimpl
from gentoolkit_metrics.distances import frechet_distance, kernel_distance, precision_recall
from gentoolkit_metrics.features import FeatureSpace, feature_space
from gentoolkit_metrics.likelihood import ELBO, NLL, Reconstruction
from gentoolkit_metrics.sample_quality import FID, KID, LabelAccuracy, PrecisionRecall, SampleQuality

__all__ = ["ELBO", "FID", "KID", "NLL", "FeatureSpace", "LabelAccuracy", "PrecisionRecall", "Reconstruction",
           "SampleQuality", "feature_space", "frechet_distance", "kernel_distance", "precision_recall"]


@hookimpl
def register_metrics(register):
    for metric in (ELBO, NLL, Reconstruction, FID, KID, PrecisionRecall, LabelAccuracy):
        register(metric)
