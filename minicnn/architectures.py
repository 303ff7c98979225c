"""Named networks for the command line and the examples.

Each builder takes the input image size S and the number of classes K and
returns ``(model, loss_fn)`` for inputs of shape (N, 3, S, S), built on the
active backend.
"""
from .windows import output_size
from .layers import AvgPool2D, BatchNorm2D, Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU
from .losses import BinaryCrossEntropy, SoftmaxCrossEntropy
from .model import Sequential


def catdog_bn(image_size, num_classes):
    """The default recipe: four conv-BN-ReLU-pool blocks (32-64-128-256), global average pooling, dropout, dense."""
    layers, channels, size = [], 3, image_size
    for width in (32, 64, 128, 256):
        layers += [Conv2D(channels, width, 3, padding=1), BatchNorm2D(width), ReLU(), MaxPool2D(2)]
        channels, size = width, size // 2
    _check_size("catdog-bn", image_size, size)
    layers += [AvgPool2D(size), Flatten(), Dropout(0.3), Dense(channels, num_classes, init="xavier")]
    return Sequential(layers), SoftmaxCrossEntropy()


def catdog_small(image_size, num_classes):
    """The benchmark reference: conv 32/64/128 (3x3, pad 1) + ReLU + 2x2 max-pool, dense 128, dense K."""
    layers, channels, size = [], 3, image_size
    for width in (32, 64, 128):
        layers += [Conv2D(channels, width, 3, padding=1), ReLU(), MaxPool2D(2)]
        channels, size = width, size // 2
    _check_size("catdog-small", image_size, size)
    layers += [Flatten(), Dense(channels * size * size, 128), ReLU(), Dense(128, num_classes, init="xavier")]
    return Sequential(layers), SoftmaxCrossEntropy()


def keras_catdog(image_size, num_classes):
    """The classic Keras recipe (150x150): conv 32/64/128 (3x3, valid) + ReLU + 2x2 max-pool,
    dense 512 + ReLU, dense 1 + sigmoid with binary cross-entropy."""
    if num_classes != 2:
        raise ValueError(f"keras-catdog is a binary classifier (one sigmoid output), got {num_classes} classes")
    layers, channels, size = [], 3, image_size
    for width in (32, 64, 128):
        layers += [Conv2D(channels, width, 3), ReLU(), MaxPool2D(2)]
        channels, size = width, output_size(size, 3, 1, 0) // 2
    _check_size("keras-catdog", image_size, size)
    layers += [Flatten(), Dense(channels * size * size, 512), ReLU(), Dense(512, 1, init="xavier")]
    return Sequential(layers), BinaryCrossEntropy()


def _check_size(name, image_size, final_size):
    if final_size < 1:
        raise ValueError(f"{name}: image size {image_size} is too small for its pooling stages")


ARCHITECTURES = {"catdog-bn": catdog_bn, "catdog-small": catdog_small, "keras-catdog": keras_catdog}
DEFAULT_ARCHITECTURE = "catdog-bn"


def build(name, image_size, num_classes, backend=None):
    """``(model, loss_fn)`` for the architecture called ``name``, on ``backend`` (default: the active one).

    The initial weights are drawn on the host, so they do not depend on the backend.
    """
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; choose one of {', '.join(sorted(ARCHITECTURES))}")
    model, loss_fn = ARCHITECTURES[name](image_size, num_classes)
    return (model, loss_fn) if backend is None else (model.to(backend), loss_fn.to(backend))
