"""Samplers that use a GAN's discriminator: ``ranking`` keeps the candidates it likes best,
``drs`` accepts each candidate with the probability its density-ratio estimate gives.

Both work for any model with a ``discriminator_score`` (the
:class:`~gentoolkit.DiscriminatorScored` capability) and a prior to draw from
(:class:`~gentoolkit.LatentModel`), unconditional or class-conditional.
"""

from gentoolkit import hookimpl
from gentoolkit_ranking.drs import DiscriminatorRejectionSampler
from gentoolkit_ranking.ranking import RankingSampler

__all__ = ["DiscriminatorRejectionSampler", "RankingSampler"]


@hookimpl
def register_samplers(register):
    register(RankingSampler)
    register(DiscriminatorRejectionSampler)
