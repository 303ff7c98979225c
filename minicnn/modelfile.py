"""The model file: one ``.npz`` holding a model's architecture, weights, buffers and metadata.

Layout: ``__header__`` is JSON text ``{"format": 1, "layers": [layer specs],
"metadata": {...}}``, where a layer spec is ``{"type": "Conv2D", "config":
{constructor arguments}}`` (layers made of layers nest their parts' specs in
their config); every parameter and buffer is an array named like
``model.params`` (``"0.W"``, ``"3.body.0.b"``); ``extra/<name>`` arrays hold
whatever a caller stored beside the model (a checkpoint's optimizer state).
Writes are atomic: an interrupted save leaves the previous file intact.
"""
import json

import numpy as np

from .fileio import atomic_write
from .init import no_random_init
from .layers.base import build_layer

FORMAT = 1
_EXTRA = "extra/"


def save_model(model, path, extra_arrays=None):
    """Write ``model`` (a Sequential) to ``path``; ``extra_arrays`` (host arrays by name) are stored beside it."""
    header = {"format": FORMAT, "layers": model.config()["layers"], "metadata": model.metadata}
    arrays = {name: model.backend.to_numpy(v) for name, v in {**model.params, **model.buffers}.items()}
    arrays.update({_EXTRA + name: value for name, value in (extra_arrays or {}).items()})
    arrays["__header__"] = np.array(json.dumps(header))
    atomic_write(path, lambda f: np.savez(f, **arrays))


def load_model(path, backend=None):
    """The Sequential saved at ``path``, rebuilt on ``backend`` (default: the active one).

    The layers are built without drawing random initial weights (they are
    overwritten at once), so loading leaves :func:`minicnn.seed`'s stream alone.
    """
    header, arrays = _read(path)
    with no_random_init():
        try:
            model = build_layer({"type": "Sequential", "config": {"layers": header["layers"]}}, backend)
        except (TypeError, ValueError, KeyError) as e:
            raise ValueError(f"{path}: cannot rebuild the model it describes ({e})") from e
    model.metadata = header.get("metadata", {})
    _assign(model, arrays, path)
    return model


def load_weights(model, path):
    """Load the weights saved at ``path`` into ``model``, whose architecture must match."""
    header, arrays = _read(path)
    mine, theirs = json.loads(json.dumps(model.config()["layers"])), header["layers"]
    if len(mine) != len(theirs):
        raise ValueError(f"{path}: holds {len(theirs)} layers, this model has {len(mine)}")
    for i, (a, b) in enumerate(zip(mine, theirs)):
        if a != b:
            raise ValueError(f"{path}: layer {i} is {b['type']}({b['config']}), this model has {a['type']}({a['config']})")
    _assign(model, arrays, path)
    model.metadata = header.get("metadata", {})
    return model


def read_extra_arrays(path):
    """The ``extra_arrays`` stored by :func:`save_model`, by name."""
    _, arrays = _read(path)
    return {k[len(_EXTRA):]: v for k, v in arrays.items() if k.startswith(_EXTRA)}


def _assign(model, arrays, path):
    """Put the saved arrays into the layers that own them (layers made of layers own none)."""
    for name, layer in model.named_layers():
        if layer.sublayers():
            continue
        for store in (layer.params, layer.buffers):
            for key, current in store.items():
                full = f"{name}.{key}"
                if full not in arrays:
                    raise ValueError(f"{path}: no array {full!r} for {layer!r}")
                value = arrays[full]
                if value.shape != current.shape:
                    raise ValueError(f"{path}: {full} of {layer!r} has shape {value.shape}, expected {current.shape}")
                store[key] = layer.backend.asarray(value)
        layer.grads = {}


def _read(path):
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable minicnn model file ({e})") from e
    if "__header__" not in arrays:
        raise ValueError(f"{path}: not a minicnn model file (no architecture header)")
    header = json.loads(str(arrays.pop("__header__")))
    if header.get("format") != FORMAT:
        raise ValueError(f"{path}: model file format {header.get('format')} is not supported (expected {FORMAT})")
    return header, arrays
