"""Named networks for the command line and the examples.

Each builder takes the input image size S and the number of classes K and
returns ``(model, loss_fn)`` for inputs of shape (N, 3, S, S), built on its
``backend`` argument (default: the active backend). Each architecture has a recipe (:data:`RECIPES`): the image
size, batch size, epochs, SGD learning rate and weight decay it was measured
with, and any progressive resizing and sparser validation, which
``minicnn train`` uses unless told otherwise.
"""
from .windows import output_size
from .layers import (AvgPool2D, BatchNorm2D, Conv2D, Dense, Dropout, Flatten, GlobalAvgPool2D, MaxPool2D, ReLU, ReLU6,
                     Residual)
from .losses import BinaryCrossEntropy, SoftmaxCrossEntropy
from .model import Sequential
from .validate import integer


def catdog_resnet(image_size, num_classes, backend=None):
    """The default: a small ResNet (He et al. 2015) of 1.2 M parameters for photos of 96x96 or more.

    A 5x5 stride-2 stem conv with BN, ReLU and a 2x2 max-pool takes (3, S, S)
    to (32, S/4, S/4); four stages of one residual block each (32, 64, 128,
    256 channels; the last three halve the size), global average pooling,
    dropout, dense. The stride-2 stem spends the arithmetic on the later
    layers, where it buys more accuracy per second than full-resolution
    early layers (measured: benchmarks/RECIPES.md). Global pooling lets one
    model train on several image sizes (progressive resizing, see RECIPES).
    """
    on = dict(backend=backend)
    layers = [Conv2D(3, 32, 5, stride=2, padding=2, **on), BatchNorm2D(32, **on), ReLU(**on), MaxPool2D(2, **on)]
    channels, size = 32, output_size(image_size, 5, 2, 2) // 2
    for width, stride in ((32, 1), (64, 2), (128, 2), (256, 2)):
        layers += [basic_block(channels, width, stride, backend), ReLU(**on)]
        channels, size = width, output_size(size, 3, stride, 1)
    _check_size("catdog-resnet", image_size, size)
    layers += [GlobalAvgPool2D(**on), Dropout(0.2, **on), Dense(channels, num_classes, init="xavier", **on)]
    return Sequential(layers, **on), SoftmaxCrossEntropy(**on)


def basic_block(in_channels, out_channels, stride=1, backend=None):
    """ResNet's basic block before its final ReLU: conv 3x3 (stride) - BN - ReLU - conv 3x3 - BN, plus the
    input itself or, where the shape changes, its projection by a 1x1 conv (stride) and BN."""
    on = dict(backend=backend)
    body = [Conv2D(in_channels, out_channels, 3, stride=stride, padding=1, **on), BatchNorm2D(out_channels, **on),
            ReLU(**on), Conv2D(out_channels, out_channels, 3, padding=1, **on), BatchNorm2D(out_channels, **on)]
    same_shape = in_channels == out_channels and stride == 1
    shortcut = None if same_shape else [Conv2D(in_channels, out_channels, 1, stride=stride, **on),
                                        BatchNorm2D(out_channels, **on)]
    return Residual(*body, shortcut=shortcut, **on)


def catdog_bn(image_size, num_classes, backend=None):
    """The plain stack: four conv-BN-ReLU-pool blocks (32-64-128-256), global average pooling, dropout, dense."""
    layers, channels, size, on = [], 3, image_size, dict(backend=backend)
    for width in (32, 64, 128, 256):
        layers += [Conv2D(channels, width, 3, padding=1, **on), BatchNorm2D(width, **on), ReLU(**on), MaxPool2D(2, **on)]
        channels, size = width, size // 2
    _check_size("catdog-bn", image_size, size)
    layers += [AvgPool2D(size, **on), Flatten(**on), Dropout(0.3, **on), Dense(channels, num_classes, init="xavier", **on)]
    return Sequential(layers, **on), SoftmaxCrossEntropy(**on)


def catdog_small(image_size, num_classes, backend=None):
    """The benchmark reference: conv 32/64/128 (3x3, pad 1) + ReLU + 2x2 max-pool, dense 128, dense K."""
    layers, channels, size, on = [], 3, image_size, dict(backend=backend)
    for width in (32, 64, 128):
        layers += [Conv2D(channels, width, 3, padding=1, **on), ReLU(**on), MaxPool2D(2, **on)]
        channels, size = width, size // 2
    _check_size("catdog-small", image_size, size)
    layers += [Flatten(**on), Dense(channels * size * size, 128, **on), ReLU(**on),
               Dense(128, num_classes, init="xavier", **on)]
    return Sequential(layers, **on), SoftmaxCrossEntropy(**on)


def keras_catdog(image_size, num_classes, backend=None):
    """The classic Keras recipe (150x150): conv 32/64/128 (3x3, valid) + ReLU + 2x2 max-pool,
    dense 512 + ReLU, dense 1 + sigmoid with binary cross-entropy."""
    if num_classes != 2:
        raise ValueError(f"keras-catdog is a binary classifier (one sigmoid output), got {num_classes} classes")
    layers, channels, size, on = [], 3, image_size, dict(backend=backend)
    for width in (32, 64, 128):
        layers += [Conv2D(channels, width, 3, **on), ReLU(**on), MaxPool2D(2, **on)]
        channels, size = width, output_size(size, 3, 1, 0) // 2
    _check_size("keras-catdog", image_size, size)
    layers += [Flatten(**on), Dense(channels * size * size, 512, **on), ReLU(**on), Dense(512, 1, init="xavier", **on)]
    return Sequential(layers, **on), BinaryCrossEntropy(**on)


EFFICIENTNET_LITE0_STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80), (3, 5, 1, 6, 112),
                             (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
"""EfficientNet-Lite0's stages: (blocks, kernel size, stride of the first block, expansion, output channels)."""


def efficientnet_lite0(image_size, num_classes, backend=None):
    """EfficientNet-Lite0 (Tan & Le 2019, the variant for mobile chips): 4.7 M parameters, 0.4 GFLOPs at 224x224.

    A 3x3 stride-2 stem conv (32 channels) with BN and ReLU6; 16 inverted residual blocks (:func:`mbconv`) in the
    seven stages of :data:`EFFICIENTNET_LITE0_STAGES`, which halve the size four times more; a 1x1 conv to 1280
    channels with BN and ReLU6 (the features), global average pooling, dropout 0.2, dense. Input (N, 3, S, S),
    S >= 32; the features are (N, 1280, S/32, S/32). Lite differs from EfficientNet-B0 in ReLU6 for swish, no
    squeeze-excitation, and a stem and head kept at 32 and 1280 channels. Its ImageNet weights:
    :func:`minicnn.pretrained.efficientnet_lite0`, whose layers and their order this builder must keep.
    """
    on = dict(backend=backend)
    layers = [_tf_same_conv(3, 32, 3, 2, 1, on), *_bn_relu6(32, on)]
    channels = 32
    for blocks, kernel_size, stride, expansion, width in EFFICIENTNET_LITE0_STAGES:
        for i in range(blocks):
            layers.append(mbconv(channels, width, kernel_size, stride if i == 0 else 1, expansion, backend))
            channels = width
    _check_size("efficientnet-lite0", image_size, image_size // 32)
    layers += [Conv2D(channels, 1280, 1, **on), *_bn_relu6(1280, on), GlobalAvgPool2D(**on), Dropout(0.2, **on),
               Dense(1280, num_classes, init="xavier", **on)]
    return Sequential(layers, **on), SoftmaxCrossEntropy(**on)


def mbconv(in_channels, out_channels, kernel_size, stride, expansion, backend=None):
    """MobileNetV2's inverted residual block (Sandler et al. 2018) as EfficientNet-Lite has it, C -> F channels.

    Expand 1x1 (C -> eC, left out when e = 1), BN, ReLU6; depthwise kxk (one filter per channel, ``groups=eC``,
    the stride), BN, ReLU6; project 1x1 (eC -> F), BN, and no activation after it (a ReLU would destroy
    information in the narrow F channels). Where the shape is kept (stride 1, C = F) the block is a
    :class:`Residual` (the input added), otherwise a plain :class:`Sequential` of the same layers.
    """
    on, wide = dict(backend=backend), in_channels * expansion
    expand = [Conv2D(in_channels, wide, 1, **on), *_bn_relu6(wide, on)] if expansion != 1 else []
    body = [*expand, _tf_same_conv(wide, wide, kernel_size, stride, wide, on), *_bn_relu6(wide, on),
            Conv2D(wide, out_channels, 1, **on), BatchNorm2D(out_channels, **_BN_LITE, **on)]
    return Residual(*body, **on) if stride == 1 and in_channels == out_channels else Sequential(body, **on)


_BN_LITE = dict(momentum=0.01, eps=1e-3)  # TensorFlow's decay 0.99 and epsilon 1e-3, as the weights were trained with


def _bn_relu6(channels, on):
    return [BatchNorm2D(channels, **_BN_LITE, **on), ReLU6(**on)]


def _tf_same_conv(in_channels, out_channels, kernel_size, stride, groups, on):
    """A conv with TensorFlow's "same" padding, which the weights were trained with: k - s zeros in all on
    an image side divisible by s, (k - s) // 2 before and the rest after. At stride 2 that is asymmetric:
    (left, right, top, bottom) = (0, 1, 0, 1) for k = 3, (1, 2, 1, 2) for k = 5."""
    before, after = (kernel_size - stride) // 2, kernel_size - stride - (kernel_size - stride) // 2
    padding = before if before == after else (before, after, before, after)
    return Conv2D(in_channels, out_channels, kernel_size, stride=stride, padding=padding, groups=groups, **on)


def check_batch_size(model, image_size, batch_size, count, processes=1):
    """Refuse, before training, batches of one image (``batch_size`` 1, or the last batch of an epoch over
    ``count`` images) where ``model`` cannot train on one: where a BatchNorm2D sees 1x1 feature maps of
    inputs (N, 3, S, S), S = ``image_size``, one image gives it one value per channel, no variance to
    normalize by. The step with that batch would fail, for the last batch after a whole epoch's work.
    ``processes``: how many processes split each batch, each normalizing over its own part."""
    map_sizes = []

    def record(phase, name, layer, x, y):
        if phase == "forward" and isinstance(layer, BatchNorm2D):
            map_sizes.append(x.shape[2] * x.shape[3])
    with model.evaluating(), model.hooked(record):
        model.forward(model.backend.xp.zeros((1, 3, image_size, image_size), dtype=model.dtype or "float32"))
    smallest = min(batch_size, count % batch_size or batch_size)
    if 1 in map_sizes and smallest // processes == 1:
        when = "every batch holds" if smallest == batch_size else "the last batch of each epoch holds"
        each = f" for one of the {processes} processes, which split it" if processes > 1 else ""
        raise ValueError(f"batch size {batch_size} (--batch-size) with {count} training images: {when} one image{each}, "
                         f"but at image size {image_size} the model has BatchNorm2D layers on 1x1 feature maps, which "
                         "need two images per batch or more; choose another batch size (or a larger image size)")


def _check_size(name, image_size, final_size):
    if final_size < 1:
        raise ValueError(f"{name}: image size {image_size} is too small for its pooling stages")


ARCHITECTURES = {"catdog-resnet": catdog_resnet, "catdog-bn": catdog_bn, "catdog-small": catdog_small,
                 "keras-catdog": keras_catdog, "efficientnet-lite0": efficientnet_lite0}
DEFAULT_ARCHITECTURE = "catdog-resnet"
_PLAIN_RECIPE = dict(image_size=64, batch_size=64, epochs=60, lr=0.05, weight_decay=1e-4)
RECIPES = {"catdog-resnet": dict(image_size=112, batch_size=64, epochs=90, lr=0.1, weight_decay=5e-4, low_res_size=64,
                                  full_size_epochs=30, val_every=4),
           "catdog-bn": _PLAIN_RECIPE, "catdog-small": _PLAIN_RECIPE, "keras-catdog": _PLAIN_RECIPE,
           "efficientnet-lite0": dict(image_size=192, batch_size=64, epochs=30, lr=0.1, weight_decay=2e-2)}
"""Per architecture: the training settings it was measured with (``lr`` is SGD's peak learning rate).
catdog-resnet trains with progressive resizing: 60 epochs on images resampled to 64x64 (2.5 times cheaper),
then 30 at 112x112 (measured: benchmarks/RECIPES.md). efficientnet-lite0's is for ``--pretrained``: a new
dense layer trained on the ImageNet features."""


def build(name, image_size, num_classes, backend=None):
    """``(model, loss_fn)`` for the architecture called ``name``, on ``backend`` (default: the active one).

    The initial weights are drawn on the host, so they do not depend on the backend.
    """
    builder = ARCHITECTURES[_known(name)]
    image_size = integer(image_size, "image_size", f"build({name!r})")
    num_classes = integer(num_classes, "num_classes", f"build({name!r})", minimum=2)  # one class: nothing to learn
    return builder(image_size, num_classes, backend)


RECIPE_DEFAULTS = dict(low_res_size=0, full_size_epochs=None, val_every=1)
"""What a recipe leaves out: no progressive resizing (``low_res_size`` > 0: every epoch but the last
``full_size_epochs`` trains on images resampled to that size), validation after every epoch."""


def recipe(name):
    """The training settings the architecture ``name`` was measured with (a new dict): image_size, batch_size,
    epochs, lr (SGD's peak learning rate), weight_decay, low_res_size, full_size_epochs and val_every."""
    return {**RECIPE_DEFAULTS, **RECIPES[_known(name)]}


def _known(name):
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; choose one of {', '.join(sorted(ARCHITECTURES))}")
    return name
