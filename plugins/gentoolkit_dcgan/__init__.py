"""The DCGAN plugin: the ``dcgan`` model, the ``gan`` objective and the ``adversarial`` trainer.

The article's anime-face GAN, with its errors fixed: the discriminator returns
logits for ``binary_cross_entropy_with_logits`` instead of a Sigmoid feeding
BCELoss, and no tensor is written through ``.data``.
"""

from gentoolkit import hookimpl
from gentoolkit_dcgan.adversarial import AdversarialTrainer, DiscriminatorLogits, GANObjective
from gentoolkit_dcgan.model import DCGAN

__all__ = ["DCGAN", "AdversarialTrainer", "DiscriminatorLogits", "GANObjective"]


@hookimpl
def register_models(register):
    register(DCGAN)


@hookimpl
def register_objectives(register):
    register(GANObjective)


@hookimpl
def register_trainers(register):
    register(AdversarialTrainer)
