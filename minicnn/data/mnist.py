"""The MNIST digits from the four original IDX ``.gz`` files."""
import gzip
import math
import os
import struct

import numpy as np


def read_mnist(folder, split="train"):
    """The MNIST images and labels of ``split`` ("train" or "test") from the four IDX ``.gz`` files in ``folder``.

    Returns:
        images uint8 (N, 1, 28, 28) and labels int64 (N,).
    """
    if split not in ("train", "test"):
        raise ValueError(f"read_mnist: split must be 'train' or 'test', got {split!r}")
    prefix = {"train": "train", "test": "t10k"}[split]
    images = _read_idx(os.path.join(folder, f"{prefix}-images-idx3-ubyte.gz"))
    labels = _read_idx(os.path.join(folder, f"{prefix}-labels-idx1-ubyte.gz"))
    if len(images) != len(labels):
        raise ValueError(f"read_mnist: {len(images)} images but {len(labels)} labels in {folder!r}")
    return images[:, None], labels.astype(np.int64)


def _read_idx(path):
    """One IDX file: a big-endian header (magic, dims) then unsigned bytes."""
    try:
        with gzip.open(path, "rb") as f:
            zero, dtype, ndim = struct.unpack(">HBB", f.read(4))
            if zero != 0 or dtype != 0x08:
                raise ValueError(f"{path}: not an IDX file of unsigned bytes")
            shape = struct.unpack(f">{ndim}I", f.read(4 * ndim))
            data = np.frombuffer(f.read(), dtype=np.uint8)
    except (gzip.BadGzipFile, EOFError, struct.error) as e:  # not gzip, or cut short
        raise ValueError(f"{path}: not a complete gzip-compressed IDX file ({e})") from e
    if data.size != math.prod(shape):
        raise ValueError(f"{path}: expected {math.prod(shape)} values for shape {shape}, found {data.size}")
    return data.reshape(shape)
