"""The built-in data sets: MNIST, Fashion-MNIST, image folders, the article's anime faces, procedural shapes.

See docs/datasets.md for where each reads its data from and its options.
"""

from gentoolkit import hookimpl
from gentoolkit_datasets.folder import AnimeFaces, ImageFolder
from gentoolkit_datasets.shapes import Shapes
from gentoolkit_datasets.torchvision_sets import MNIST, FashionMNIST

__all__ = ["MNIST", "AnimeFaces", "FashionMNIST", "ImageFolder", "Shapes"]


@hookimpl
def register_datasets(register):
    register(MNIST)
    register(FashionMNIST)
    register(ImageFolder)
    register(AnimeFaces)
    register(Shapes)
