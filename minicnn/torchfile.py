"""Reading PyTorch checkpoints (``torch.save(model.state_dict())``) without PyTorch and without ``pickle.load``.

A PyTorch checkpoint is a pickle of tensor-rebuild calls plus the tensors' raw storages, either in a zip
(``<name>/data.pkl`` and ``<name>/data/<key>``, PyTorch 1.6 and later) or, in the legacy format, as five
pickles in a row (magic number, protocol, system info, the state dict, the storage keys) followed by each
storage's element count and bytes. A pickle is a program: unpickling runs whatever functions it names.
So the unpickler here names only the few globals a state dict of tensors needs, as PyTorch's own
``weights_only=True`` does, each mapped to a harmless local stand-in, and refuses every other name
before anything runs. The tensors come back as NumPy arrays.
"""
import collections
import hashlib
import io
import os
import pickle
import struct
import zipfile
import zlib

import numpy as np

_LEGACY_MAGIC = 0x1950a86a20f9469cfc6c  # the first pickle of a legacy checkpoint
_LEGACY_PROTOCOL = 1001
_STORAGE_DTYPES = {"FloatStorage": "f4", "DoubleStorage": "f8", "HalfStorage": "f2", "LongStorage": "i8",
                   "IntStorage": "i4", "ShortStorage": "i2", "CharStorage": "i1", "ByteStorage": "u1", "BoolStorage": "b1"}


class _FileError(ValueError):
    """A ValueError whose message already names the file (raised as it is, not wrapped)."""


class UnsafeCheckpointError(_FileError):
    """A checkpoint's pickle names a global that a state dict of tensors does not need: it is not read."""


class _StorageType:
    """Stands for ``torch.FloatStorage`` and its kin in a checkpoint's pickle: just the element type."""

    def __init__(self, name):
        self.name, self.dtype = name, np.dtype(_STORAGE_DTYPES[name])


class _StorageRef:
    """A storage named by the pickle; its bytes are read after the pickle (they follow it in legacy files)."""

    def __init__(self, key, dtype, numel):
        self.key, self.dtype, self.numel = key, dtype, numel


class _TensorRef:
    """What ``torch._utils._rebuild_tensor_v2`` would build: a strided view of a storage, made an array later."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride


def _rebuild_tensor(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    return data  # an nn.Parameter is its tensor here


_GLOBALS = {("collections", "OrderedDict"): collections.OrderedDict,
            ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
            ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
            **{("torch", name): _StorageType(name) for name in _STORAGE_DTYPES}}
"""Every global a state dict's pickle may name, and the harmless stand-in it gets instead."""


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, data, path):
        super().__init__(io.BytesIO(data) if isinstance(data, bytes) else data)
        self.path = path

    def find_class(self, module, name):
        allowed = _GLOBALS.get((module, name))
        if allowed is None:
            raise UnsafeCheckpointError(
                f"refusing to load {self.path}: its pickle names {module}.{name}, which a state dict of tensors "
                "does not need, and a pickle can run code (a whole pickled model is refused too: save its "
                "state_dict() instead)")
        return allowed

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[4], int) and pid[4] >= 0):
            raise _FileError(f"{self.path}: an unexpected storage reference {str(pid)[:80]} in its pickle")
        if len(pid) == 6 and pid[5] is not None:
            raise _FileError(f"{self.path}: a storage view (old PyTorch's view_metadata), which this reader does not handle")
        return _StorageRef(str(pid[2]), pid[1].dtype, pid[4])


def read_state_dict(path, sha256=None):
    """The tensors of the PyTorch checkpoint at ``path`` (a saved state dict) as ``{name: NumPy array}``.

    Args:
        path: a file written by ``torch.save(state_dict)``, zip or legacy format.
        sha256: if given, the file's expected SHA-256 (hex); any other file is refused before it is read.

    Each array has the tensor's shape and dtype (float32 ``(F, C, kh, kw)`` for a conv weight), C-contiguous
    whatever the tensor's strides. Raises :class:`UnsafeCheckpointError` (a ValueError) when the pickle names
    any global but the few a state dict needs, and ValueError naming the file for a wrong hash, a file that is
    no checkpoint, or a damaged or truncated one.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()  # hashed and parsed from the same bytes: what was checked is what is read
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256.lower():
        raise _FileError(f"{path}: its SHA-256 is {hashlib.sha256(data).hexdigest()}, expected {sha256.lower()}: "
                         "another or a damaged file; refusing to read it")
    try:
        tensors, storages = (_read_zip if data.startswith(b"PK\x03\x04") else _read_legacy)(data, path)
        return {name: _materialize(name, ref, storages, path) for name, ref in tensors.items()}
    except _FileError:  # UnsafeCheckpointError too
        raise
    except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, zlib.error, KeyError, IndexError, TypeError,
            struct.error, AttributeError, ValueError, OverflowError, RecursionError) as e:
        raise _FileError(f"{path}: not a readable PyTorch checkpoint, or a damaged or truncated one "
                         f"({type(e).__name__}: {e})") from e


def _state_dict(obj, path):
    if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, _TensorRef) for k, v in obj.items()):
        raise _FileError(f"{path}: not a state dict (a dict of tensor names to tensors)")
    return obj


def _read_zip(data, path):
    """The state dict's tensor references and a function giving a storage's bytes, from the zip format."""
    archive = zipfile.ZipFile(io.BytesIO(data))
    pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
        raise _FileError(f"{path}: a zip archive, but not a PyTorch checkpoint (no <name>/data.pkl)")
    prefix = pickles[0][:-len("data.pkl")]
    order = archive.read(prefix + "byteorder").decode() if prefix + "byteorder" in archive.namelist() else "little"
    tensors = _state_dict(_RestrictedUnpickler(archive.read(pickles[0]), path).load(), path)
    return tensors, _storages(tensors, lambda ref: archive.read(f"{prefix}data/{ref.key}"), order, path)


def _read_legacy(data, path):
    """The same from the legacy format: five pickles, then per storage its int64 element count and its bytes."""
    f = io.BytesIO(data)

    def load():
        return _RestrictedUnpickler(f, path).load()
    if load() != _LEGACY_MAGIC:
        raise _FileError(f"{path}: not a PyTorch checkpoint (neither a zip archive nor the legacy format)")
    if load() != _LEGACY_PROTOCOL:
        raise _FileError(f"{path}: a legacy PyTorch checkpoint of an unknown protocol version")
    info = load()
    order = "little" if not isinstance(info, dict) or info.get("little_endian", True) else "big"
    tensors = _state_dict(load(), path)
    keys, raw = load(), {}
    if not isinstance(keys, list):
        raise _FileError(f"{path}: a legacy PyTorch checkpoint without its list of storages")
    refs = {ref.storage.key: ref.storage for ref in tensors.values()}
    for key in keys:
        count, = struct.unpack("<q", f.read(8))
        size = count * refs[key].dtype.itemsize if key in refs else -1
        raw[key] = f.read(size)
        if size < 0 or len(raw[key]) != size:
            raise _FileError(f"{path}: truncated or damaged (storage {key} of {count} elements)")
    return tensors, _storages(tensors, lambda ref: raw[ref.key], order, path)


def _storages(tensors, read, order, path):
    """Each storage the tensors use, read once, as a 1-D array of its element type in native byte order."""
    storages = {}
    for ref in (t.storage for t in tensors.values()):
        if ref.key not in storages:
            dtype = ref.dtype.newbyteorder("<" if order == "little" else ">")
            buffer = read(ref)
            if len(buffer) < ref.numel * dtype.itemsize:
                raise _FileError(f"{path}: storage {ref.key} holds {len(buffer)} bytes, expected "
                                 f"{ref.numel * dtype.itemsize} (truncated?)")
            storages[ref.key] = np.frombuffer(buffer, dtype, ref.numel).astype(ref.dtype.newbyteorder("="))
    return storages


def _materialize(name, ref, storages, path):
    """The tensor ``name`` as a C-contiguous array, its view checked to lie inside its storage."""
    storage = storages[ref.storage.key]
    size, stride, offset = tuple(ref.size), tuple(ref.stride), ref.offset
    if not (all(isinstance(v, int) and v >= 0 for v in (*size, *stride, offset)) and len(size) == len(stride)):
        raise _FileError(f"{path}: tensor {name} has an invalid size {size}, stride {stride} or offset {offset}")
    last = offset + sum((n - 1) * s for n, s in zip(size, stride)) if all(size) else offset - 1
    if last >= len(storage):
        raise _FileError(f"{path}: tensor {name} (size {size}, stride {stride}, offset {offset}) reaches past its "
                         f"storage of {len(storage)} elements")
    items = storage.itemsize
    view = np.lib.stride_tricks.as_strided(storage[offset:] if all(size) else storage[:0], size,
                                           tuple(s * items for s in stride), writeable=False)
    return np.array(view, order="C")  # a copy of its own (ascontiguousarray would make 0-d arrays 1-d)
