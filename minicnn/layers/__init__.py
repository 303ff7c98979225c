"""The layers of minicnn; each obeys the contract documented in :class:`Layer`."""
from .activations import ReLU, Sigmoid
from .base import Layer
from .batchnorm import BatchNorm2D
from .conv import Conv2D
from .dense import Dense
from .dropout import Dropout
from .pooling import AvgPool2D, MaxPool2D
from .reshape import Flatten

LAYER_TYPES = {cls.__name__: cls for cls in (Conv2D, ReLU, Sigmoid, Flatten, MaxPool2D, AvgPool2D, Dense, Dropout, BatchNorm2D)}
"""Layer classes by name, for loading saved models."""

__all__ = ["Layer", *LAYER_TYPES]
