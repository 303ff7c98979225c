"""The layers of minicnn; each obeys the contract documented in :class:`Layer`."""
from .activations import Clip, ReLU, ReLU6, Sigmoid
from .base import LAYER_TYPES, Layer
from .batchnorm import BatchNorm2D, SyncBatchNorm2D
from .container import Container
from .conv import Conv2D
from .dense import Dense
from .dropout import Dropout
from .padding import ZeroPad2D
from .pooling import AvgPool2D, GlobalAvgPool2D, MaxPool2D
from .reshape import Flatten
from .residual import Residual
from .sequential import Sequential

__all__ = ["Layer", "Container", "LAYER_TYPES", "AvgPool2D", "BatchNorm2D", "Clip", "Conv2D", "Dense", "Dropout",
           "Flatten", "GlobalAvgPool2D", "MaxPool2D", "ReLU", "ReLU6", "Residual", "Sequential", "Sigmoid",
           "SyncBatchNorm2D", "ZeroPad2D"]
