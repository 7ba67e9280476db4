"""Normalizing flows: the ``glow`` model (alias ``flow``) and the ``mle`` objective.

See docs/flow.md for the model, its options and the bits/dim convention.
"""

from gentoolkit import hookimpl
from gentoolkit_flow.layers import ActNorm, Chain, Coupling, InvertibleConv1x1, Layer, Squeeze
from gentoolkit_flow.maths import bits_per_dim
from gentoolkit_flow.model import Glow
from gentoolkit_flow.objectives import ExactLikelihood, MaximumLikelihood

__all__ = ["ActNorm", "Chain", "Coupling", "ExactLikelihood", "Glow", "InvertibleConv1x1", "Layer",
           "MaximumLikelihood", "Squeeze", "bits_per_dim"]


@hookimpl
def register_models(register):
    register(Glow, aliases=("flow",))


@hookimpl
def register_objectives(register):
    register(MaximumLikelihood)
