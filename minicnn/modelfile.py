"""The model file: one ``.npz`` holding a model's architecture, weights, buffers and metadata.

Layout: ``__header__`` is JSON text ``{"format": 1, "layers": [layer specs],
"metadata": {...}}``, where a layer spec is ``{"type": "Conv2D", "config":
{constructor arguments}}`` (layers made of layers nest their parts' specs in
their config); every parameter and buffer is an array named like
``model.params`` (``"0.W"``, ``"3.body.0.b"``); ``extra/<name>`` arrays hold
whatever a caller stored beside the model (a checkpoint's optimizer state).
Writes are atomic: an interrupted save leaves the previous file intact. This module
imports no layer (``Sequential.load`` passes the class to rebuild), so the layers can
save through it.
"""
import errno
import json
import os
import zipfile
import zlib

import numpy as np

from .fileio import atomic_write
from .init import no_random_init

FORMAT = 1
_EXTRA = "extra/"
_HEADER = "__header__"


def save_model(model, path, extra_arrays=None):
    """Write ``model`` (a Sequential) to ``path``; ``extra_arrays`` (host arrays by name) are stored beside it."""
    path = _path(path, "save")
    header = {"format": FORMAT, "layers": model.config()["layers"], "metadata": model.metadata}
    try:
        header_text = json.dumps(header)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{path}: cannot save the model: its metadata (or a layer's config) is not JSON-friendly "
                        f"({e}); use plain lists, numbers and strings") from e
    arrays = {name: model.backend.to_numpy(v) for name, v in {**model.params, **model.buffers}.items()}
    arrays.update({_EXTRA + name: value for name, value in (extra_arrays or {}).items()})
    arrays[_HEADER] = np.array(header_text)
    atomic_write(path, lambda f: np.savez(f, **arrays))


def load_model(path, model_type, backend=None):
    """The model saved at ``path``, rebuilt as ``model_type`` (Sequential) on ``backend`` (default: the active one).

    The layers are built without drawing random initial weights (they are
    overwritten at once), so loading leaves :func:`minicnn.seed`'s stream alone.
    """
    path = _path(path, "load")
    header, arrays = _read(path)
    with no_random_init():
        try:
            model = model_type.from_config({"layers": header["layers"]}, backend)
        except (TypeError, ValueError, KeyError, AttributeError) as e:
            raise ValueError(f"{path}: cannot rebuild the model it describes ({e})") from e
    model.metadata = header.get("metadata", {})
    _assign(model, arrays, path, keep_dtype=False)
    return model


def load_weights(model, path):
    """Load the weights saved at ``path`` into ``model``, whose architecture must match.

    The arrays are cast to the model's dtype (as PyTorch's ``load_state_dict`` copies into existing tensors).
    Nothing in ``model`` changes unless the whole file fits it.
    """
    path = _path(path, "load")
    header, arrays = _read(path)
    mine, theirs = json.loads(json.dumps(model.config()["layers"])), header["layers"]
    if len(mine) != len(theirs):
        raise ValueError(f"{path}: holds {len(theirs)} layers, this model has {len(mine)}")
    for i, (a, b) in enumerate(zip(mine, theirs)):
        if a != b:
            shown = f"{b.get('type')}({b.get('config')})" if isinstance(b, dict) else repr(b)
            raise ValueError(f"{path}: layer {i} is {shown}, this model has {a['type']}({a['config']})")
    _assign(model, arrays, path, keep_dtype=True)
    model.metadata = header.get("metadata", {})
    return model


def read_extra_arrays(path, names=None):
    """The ``extra_arrays`` stored by :func:`save_model`, by name (only those in ``names`` if given)."""
    path = _path(path, "read")
    wanted = None if names is None else {_EXTRA + name for name in names}
    _, arrays = _read(path, lambda key: key.startswith(_EXTRA) and (wanted is None or key in wanted))
    return {k[len(_EXTRA):]: v for k, v in arrays.items()}


def _assign(model, arrays, path, keep_dtype):
    """Put the saved arrays into the layers that own them (layers made of layers own none).

    Every array is checked (present, shape, floating, finite) before any is assigned.
    """
    assignments = []
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
                if value.dtype.kind != "f":
                    raise ValueError(f"{path}: {full} of {layer!r} has dtype {value.dtype}, expected floating-point numbers")
                if not np.isfinite(value).all():
                    raise ValueError(f"{path}: {full} of {layer!r} holds NaN or infinite values (saved from a diverged "
                                     "model?); an earlier file of the run may be sound")
                assignments.append((layer, store, key, value.astype(current.dtype, copy=False) if keep_dtype else value))
    for layer, store, key, value in assignments:
        store[key] = layer.backend.asarray(value)
        layer.grads = {}


def _path(path, action):
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"cannot {action} a model file: the path must be a str or os.PathLike, got {path!r}")
    return os.fspath(path)


def _read(path, wanted=None):
    """The header and the arrays (those whose name ``wanted(name)`` accepts) of the model file at ``path``.

    Anything but a sound minicnn model file gives one ValueError saying what the file is (or
    FileNotFoundError / IsADirectoryError / PermissionError for a path that is no readable file).
    """
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, "a folder, not a minicnn model file", path)
    with open(path, "rb") as f:
        start = f.read(6)
    if not start:
        raise ValueError(f"{path}: an empty file, not a minicnn model file (an interrupted copy?)")
    if start.startswith(b"\x93NUMPY"):
        raise ValueError(f"{path}: a NumPy .npy array, not a minicnn model file (the .npz that model.save writes)")
    if not start.startswith(b"PK"):
        raise ValueError(f"{path}: not a minicnn model file (it is not a .npz archive)")
    try:
        with np.load(path, allow_pickle=False) as f:
            if _HEADER not in f.files:
                raise LookupError
            header_text = f[_HEADER]
            arrays = {k: f[k] for k in f.files if k != _HEADER and (wanted is None or wanted(k))}
    except LookupError:
        raise ValueError(f"{path}: a .npz archive, but not a minicnn model file (it has no architecture header)") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError) as e:
        raise ValueError(f"{path}: a damaged or truncated model file ({type(e).__name__}: {e})") from e
    odd = [k for k, v in arrays.items() if not isinstance(v, np.ndarray)]
    if odd:
        raise ValueError(f"{path}: not a minicnn model file (its entries {odd[:3]} are not NumPy arrays)")
    try:
        header = json.loads(str(header_text))
    except ValueError as e:
        raise ValueError(f"{path}: a damaged model file (its header is not JSON: {e})") from e
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        found = header.get("format") if isinstance(header, dict) else None
        raise ValueError(f"{path}: model file format {found} is not supported (expected {FORMAT})")
    if not isinstance(header.get("layers"), list) or not isinstance(header.get("metadata", {}), dict):
        raise ValueError(f"{path}: a damaged model file (its header lacks the list of layers)")
    return header, arrays
