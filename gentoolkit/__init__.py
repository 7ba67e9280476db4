"""gentoolkit: train and sample generative image models, extended by plugins.

This module is the public API: plugins and notebooks import from here only.

The names that need torch are imported on first use (PEP 562), so ``import gentoolkit``
stays light: ``gentool --help``, ``--version`` and shell completion never import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from gentoolkit.errors import GentoolError
from gentoolkit.hookspecs import hookimpl

__version__ = "0.2.0"

# Each public name that is imported on first use, by the module that defines it.
_LAZY = {
    "gentoolkit.cache": ("cache_dir",),
    "gentoolkit.callbacks": ("MetricLogger",),
    "gentoolkit.config": ("apply_overrides", "from_dict", "to_dict"),
    "gentoolkit.data": ("batch_count", "binarize", "from_signed", "index_batches", "to_signed", "to_unit"),
    "gentoolkit.estimators": ("importance_weighted_log_prob", "posterior_chunks"),
    "gentoolkit.interfaces": (
        "CAPABILITIES", "AdversarialObjective", "BitsPerDim", "Component", "DataOptions", "Dataset",
        "DiscriminatorScored", "ImageData", "ImageSpec", "LatentEncoder", "LatentModel", "Likelihood", "Loss",
        "Metric", "Model", "NoConfig", "Objective", "Recipe", "Sampler", "Samples", "StandardNormalPrior", "Trainer",
        "VariationalModel", "capabilities", "conditional", "has_capability",
    ),
    "gentoolkit.phases": ("phase",),
    "gentoolkit.resources": ("check_memory", "format_bytes", "memory_limit", "usable_memory"),
    "gentoolkit.standard": ("AdamTrainer", "eval_mode"),
    "gentoolkit.training": ("Callback",),
}
_MODULE_OF = {name: module for module, names in _LAZY.items() for name in names}

__all__ = ["GentoolError", "__version__", "hookimpl", *_MODULE_OF]


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'gentoolkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next lookup is an ordinary one
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_MODULE_OF})
