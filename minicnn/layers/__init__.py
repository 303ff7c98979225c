"""The layers of minicnn; each obeys the contract documented in :class:`Layer`."""
from .activations import ReLU, Sigmoid
from .base import LAYER_TYPES, Layer
from .batchnorm import BatchNorm2D, SyncBatchNorm2D
from .container import Container
from .conv import Conv2D
from .dense import Dense
from .dropout import Dropout
from .pooling import AvgPool2D, GlobalAvgPool2D, MaxPool2D
from .reshape import Flatten
from .residual import Residual
from .sequential import Sequential

__all__ = ["Layer", "Container", "LAYER_TYPES", "AvgPool2D", "BatchNorm2D", "Conv2D", "Dense", "Dropout", "Flatten",
           "GlobalAvgPool2D", "MaxPool2D", "ReLU", "Residual", "Sequential", "Sigmoid",
           "SyncBatchNorm2D"]
