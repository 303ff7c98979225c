"""minicnn: a from-scratch CNN library on NumPy and CuPy, with hand-written backward passes.

Every layer is an explicit class with ``forward(x)`` and ``backward(dout)``;
see :class:`minicnn.layers.Layer` for the contract.
"""
from .backend import BackendError, available_backends, get_backend, seed, use_backend
from .gradcheck import GradcheckResult, gradcheck
from .im2col import col2im, im2col
from .layers import AvgPool2D, BatchNorm2D, Conv2D, Dense, Dropout, Flatten, Layer, MaxPool2D, ReLU, Sigmoid
from .losses import BinaryCrossEntropy, Loss, SoftmaxCrossEntropy, softmax
from .model import Sequential
from .optim import SGD, Adam, Optimizer, RMSProp

__version__ = "0.1.0"

__all__ = [
    "BackendError", "available_backends", "get_backend", "seed", "use_backend",
    "GradcheckResult", "gradcheck", "im2col", "col2im",
    "AvgPool2D", "BatchNorm2D", "Conv2D", "Dense", "Dropout", "Flatten", "Layer", "MaxPool2D", "ReLU", "Sigmoid",
    "BinaryCrossEntropy", "Loss", "SoftmaxCrossEntropy", "softmax",
    "Sequential", "SGD", "Adam", "Optimizer", "RMSProp",
]
