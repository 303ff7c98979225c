"""Normalization: per-channel statistics of a training set, and the transform that applies them."""
import numpy as np

from ..backend import get_backend


def channel_stats(images):
    """Per-channel mean and std of uint8 images (N, C, H, W), on the [0, 1] scale: two float32 (C,) arrays."""
    if not isinstance(images, np.ndarray) or images.ndim != 4 or images.size == 0:
        shape = getattr(images, "shape", None)
        raise ValueError(f"channel_stats: expected a non-empty NumPy array of images (N, C, H, W), got "
                         f"{'shape ' + str(shape) if shape is not None else 'a ' + type(images).__name__}")
    x = images.reshape(images.shape[0], images.shape[1], -1)
    mean = np.zeros(images.shape[1])
    sq = np.zeros(images.shape[1])
    for start in range(0, len(x), 256):  # in slices: a float64 copy of all images would be large
        chunk = x[start:start + 256].astype(np.float64) / 255
        mean += chunk.sum(axis=(0, 2))
        sq += (chunk ** 2).sum(axis=(0, 2))
    count = x.shape[0] * x.shape[2]
    mean /= count
    std = np.sqrt(np.maximum(sq / count - mean ** 2, 1e-12))
    return mean.astype(np.float32), std.astype(np.float32)


class Normalize:
    """``(x / 255 - mean) / std`` per channel, for images (N, C, H, W) on the 0..255 scale.

    Args:
        mean, std: (C,) per-channel statistics on the [0, 1] scale (see :func:`channel_stats`).
        dtype: of the output: float32, or float64 for a model cast to float64.
        backend: where the images live (default: the active backend).

    ``normalize(x)`` takes uint8 or float images on the backend and returns
    float images of ``dtype``: what a model trained on normalized data
    expects. ``Normalize.from_metadata(model.metadata)`` rebuilds the one a
    model saved by ``minicnn train`` was trained with.
    """

    def __init__(self, mean, std, dtype=np.float32, backend=None):
        self.backend = get_backend(backend)
        self.dtype = np.dtype(dtype)
        mean, std = np.asarray(mean, dtype=np.float64).ravel(), np.asarray(std, dtype=np.float64).ravel()
        if mean.shape != std.shape or mean.size == 0:
            raise ValueError(f"Normalize: mean has {mean.size} channels but std has {std.size}")
        if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()):
            raise ValueError(f"Normalize: mean must be finite and std finite and positive, got mean {mean.tolist()}, "
                             f"std {std.tolist()}")
        self.mean, self.std = mean, std
        shape = (1, -1, 1, 1)
        self.offset = self.backend.asarray((255 * mean).reshape(shape), dtype=self.dtype)
        self.scale = self.backend.asarray((1 / (255 * std)).reshape(shape), dtype=self.dtype)

    @classmethod
    def from_metadata(cls, metadata, dtype=np.float32, backend=None):
        """The normalization stored in a model's metadata (``mean`` and ``std``)."""
        missing = [k for k in ("mean", "std") if k not in metadata]
        if missing:
            raise ValueError(f"Normalize: the model's metadata lacks {missing} (was it saved by 'minicnn train'?)")
        return cls(metadata["mean"], metadata["std"], dtype, backend)

    def __repr__(self):
        return f"Normalize(mean={self.mean.round(4).tolist()}, std={self.std.round(4).tolist()})"

    def __call__(self, x):
        """x (N, C, H, W) uint8 or float on the 0..255 scale -> normalized (N, C, H, W) of ``dtype``."""
        if x.ndim != 4 or x.shape[1] != self.offset.shape[1]:
            raise ValueError(f"Normalize: expected images (N, {self.offset.shape[1]}, H, W), got shape {tuple(x.shape)}")
        y = x.astype(self.dtype)  # a copy: the caller's images stay as they were
        y -= self.offset
        y *= self.scale
        return y
