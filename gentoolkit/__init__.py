"""gentoolkit: train and sample generative image models, extended by plugins.

This module is the public API: plugins and notebooks import from here only.
"""

from gentoolkit.config import apply_overrides, from_dict, to_dict
from gentoolkit.data import batch_count, binarize, from_signed, index_batches, to_signed, to_unit
from gentoolkit.errors import GentoolError
from gentoolkit.estimators import importance_weighted_log_prob, posterior_chunks
from gentoolkit.hookspecs import hookimpl
from gentoolkit.interfaces import (
    CAPABILITIES,
    AdversarialObjective,
    BitsPerDim,
    Component,
    DataOptions,
    Dataset,
    DiscriminatorScored,
    ImageData,
    ImageSpec,
    LatentModel,
    Likelihood,
    Loss,
    Metric,
    Model,
    NoConfig,
    Objective,
    Recipe,
    Sampler,
    Samples,
    StandardNormalPrior,
    Trainer,
    VariationalModel,
    capabilities,
    conditional,
    has_capability,
)
from gentoolkit.resources import check_memory, format_bytes, memory_limit, usable_memory
from gentoolkit.standard import eval_mode
from gentoolkit.training import Callback

__version__ = "0.2.0"

__all__ = [
    "CAPABILITIES", "AdversarialObjective", "BitsPerDim", "Callback", "Component", "DataOptions", "Dataset",
    "DiscriminatorScored", "GentoolError", "ImageData", "ImageSpec", "LatentModel", "Likelihood", "Loss", "Metric",
    "Model", "NoConfig", "Objective", "Recipe", "Sampler", "Samples", "StandardNormalPrior", "Trainer",
    "VariationalModel", "__version__", "apply_overrides", "batch_count", "binarize", "capabilities", "check_memory",
    "conditional", "format_bytes", "has_capability", "memory_limit", "usable_memory",
    "eval_mode", "from_dict", "from_signed", "hookimpl", "importance_weighted_log_prob", "index_batches",
    "posterior_chunks", "to_dict", "to_signed", "to_unit",
]
