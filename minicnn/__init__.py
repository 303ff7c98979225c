"""minicnn: a from-scratch CNN library on NumPy and CuPy, with hand-written backward passes.

Every layer is an explicit class with ``forward(x)`` and ``backward(dout)``;
see :class:`minicnn.layers.Layer` for the contract.
"""
from .threads import num_threads, set_num_threads  # first: it loads NumPy, telling OpenBLAS's idle threads to sleep
from .backend import BackendError, available_backends, backend_of, get_backend, seed, use_backend
from .functional import probabilities, sigmoid, softmax
from .gradcheck import GradcheckResult, gradcheck
from .im2col import col2im, im2col
from .layers import (AvgPool2D, BatchNorm2D, Clip, Conv2D, Dense, Dropout, Flatten, GlobalAvgPool2D, Layer, MaxPool2D,
                     ReLU, ReLU6, Residual, Sigmoid, SyncBatchNorm2D, ZeroPad2D)
from .losses import BinaryCrossEntropy, Loss, SoftmaxCrossEntropy
from .model import Sequential
from .optim import SGD, Adam, Optimizer, RMSProp

__version__ = "0.1.0"

__all__ = [
    "BackendError", "available_backends", "backend_of", "get_backend", "num_threads", "seed", "set_num_threads", "use_backend",
    "probabilities", "sigmoid", "softmax",
    "GradcheckResult", "gradcheck", "im2col", "col2im",
    "AvgPool2D", "BatchNorm2D", "Clip", "Conv2D", "Dense", "Dropout", "Flatten", "GlobalAvgPool2D", "Layer", "MaxPool2D",
    "ReLU", "ReLU6", "Residual", "Sigmoid", "SyncBatchNorm2D", "ZeroPad2D",
    "BinaryCrossEntropy", "Loss", "SoftmaxCrossEntropy",
    "Sequential", "SGD", "Adam", "Optimizer", "RMSProp",
]
