"""Batches for training and evaluation, and the loader protocol the Trainer relies on.

The protocol (any object with these works with :class:`minicnn.train.Trainer`):

* iterating yields ``(x, y)``: x float (B, C, H, W) and y int64 (B,), both
  on the model's backend;
* ``len(loader)``: the number of batches per epoch;
* ``state_dict()`` / ``load_state_dict(state)``: the position (epoch and
  batch) and whatever random state decides the batches, as JSON-friendly
  data; after ``load_state_dict`` the next iteration continues from there,
  giving the batches an uninterrupted run would have seen;
* for data-parallel training (:mod:`minicnn.distributed`), ``rows``: after
  each batch, ``(start, stop, total)`` saying that it holds rows
  ``start:stop`` of a global batch of ``total`` images.
"""
import math

import numpy as np

from ..backend import get_backend
from ..validate import flag, integer
from .augment import resize


class DataLoader:
    """Batches of float images and int64 labels on a backend, from uint8 images in host memory.

    Args:
        images: uint8 (N, C, H, W), e.g. ``ImageFolder.images``; or float features (N, D) (a frozen
            network's, say: :func:`~minicnn.data.features.cached_features`), batched as they are.
        labels: int (N,), class indices (>= 0).
        batch_size: images per batch (a positive int); the last batch may be smaller.
        normalize: applied last to each float batch (0..255 scale), e.g. a
            :class:`~minicnn.data.Normalize`; None scales to [0, 1].
        shuffle: a new random order every epoch.
        augment: an :class:`~minicnn.data.Augment` (or any callable
            ``(x, rng) -> x``), applied before normalizing.
        seed: an int >= 0; decides the order and the augmentation: epoch ``e`` is shuffled
            by a generator seeded ``(seed, e)`` and its batch ``b`` augmented
            by one seeded ``(seed, e, b)``, so any batch can be reproduced
            from its position alone (exact resume).
        backend: where the batches go (default: the active backend).
        dtype: of the images; float64 for a model cast with ``astype(np.float64)``.
        shard: ``(rank, size)`` for data-parallel training: every global batch
            of ``batch_size`` images is split into ``size`` nearly equal parts and
            this loader yields part ``rank`` (with ``shuffle``, a random sample of
            the batch, whatever the order of the data set); the augmentation is drawn for the
            whole global batch and sliced (``augment(x, rng, rows=(start, stop, total))``),
            so the parts together are exactly the batch one process would see.
            :attr:`rows` tells which part the last batch was.
        image_size: the side S of the batches' images (N, C, S, S): None keeps
            the stored images' size; an int resamples them (through the
            augmentation's sampling grid, ``augment(x, rng, size=S)``, or
            bilinear :func:`~minicnn.data.augment.resize` without augmentation);
            a function ``epoch -> int`` (or None) changes it by epoch, for
            progressive resizing. Being a function of the epoch alone, it keeps
            resuming exact.

    Each batch is moved to the backend as uint8 (four times less traffic than
    float32) and turned into ``dtype`` there.
    """

    def __init__(self, images, labels, batch_size, normalize=None, shuffle=False, augment=None, seed=0,
                 backend=None, dtype=np.float32, shard=None, image_size=None):
        features = isinstance(images, np.ndarray) and images.dtype.kind == "f" and images.ndim == 2  # float images: refused
        if not features and (not isinstance(images, np.ndarray) or images.ndim != 4 or images.dtype != np.uint8):
            what = (f"{images.dtype} of shape {images.shape}" if isinstance(images, np.ndarray)
                    else f"a {type(images).__module__}.{type(images).__name__}")
            raise TypeError(f"DataLoader: images must be a NumPy uint8 array (N, C, H, W) on the 0..255 scale, or float "
                            f"features (N, D), got {what} (images in [0, 1]: pass (x * 255).round().astype(np.uint8))")
        if features and (normalize, augment, image_size) != (None, None, None):
            raise ValueError("DataLoader: float features are batched as they are: no normalize, augment or image_size")
        labels = np.asarray(labels)
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            raise ValueError(f"DataLoader: labels must be a 1-D array of class indices, got {labels.dtype} of shape {labels.shape}")
        if len(images) != len(labels):
            raise ValueError(f"DataLoader: {len(images)} images but {len(labels)} labels")
        if len(labels) == 0:
            raise ValueError("DataLoader: no images; an epoch over them would have no loss or accuracy")
        if labels.min() < 0:
            raise ValueError(f"DataLoader: labels must be class indices >= 0, got {labels.min()}")
        self.batch_size = integer(batch_size, "batch_size", "DataLoader")
        self.images, self.labels = images, labels.astype(np.int64)
        self.shuffle, self.seed = flag(shuffle, "shuffle", "DataLoader"), integer(seed, "seed", "DataLoader", minimum=0)
        for name, value in (("normalize", normalize), ("augment", augment)):
            if value is not None and not callable(value):
                raise TypeError(f"DataLoader: {name} must be None or callable, got a {type(value).__name__}")
        self.augment = augment
        self.backend = get_backend(backend)
        self.dtype = np.dtype(dtype)
        if self.dtype.kind != "f":
            raise TypeError(f"DataLoader: dtype must be a floating-point type (float32, float64), got {self.dtype}")
        self.normalize = normalize if normalize is not None else (lambda x: x) if features else _scaled
        self.epoch = 0  # the position of the next batch: (epoch, batch)
        self.batch = 0
        self.shard = None if shard is None else _check_shard(shard, len(self.labels), self.batch_size)
        self.rows = None
        if image_size is not None and not callable(image_size):
            image_size = integer(image_size, "image_size (or None, or a function epoch -> size)", "DataLoader")
        self.image_size = image_size

    def size_at(self, epoch):
        """The side of epoch ``epoch``'s images, or None for the stored images' own size."""
        if not callable(self.image_size):
            return self.image_size
        size = self.image_size(epoch)
        return None if size is None else integer(size, f"image_size({epoch})", "DataLoader")

    def __len__(self):
        return math.ceil(len(self.labels) / self.batch_size)

    def state_dict(self):
        """The position of the next batch; the order and augmentation follow from it and the seed."""
        return {"epoch": self.epoch, "batch": self.batch, "seed": self.seed}

    def load_state_dict(self, state):
        try:
            epoch, batch, seed = state["epoch"], state["batch"], state.get("seed", self.seed)
        except (KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"DataLoader: not a loader state (expected epoch, batch and seed): {state!r}") from e
        self.epoch = integer(epoch, "epoch", "DataLoader.load_state_dict", minimum=0)
        self.batch = integer(batch, "batch", "DataLoader.load_state_dict", minimum=0)
        self.seed = integer(seed, "seed", "DataLoader.load_state_dict", minimum=0)

    def __iter__(self):
        """The batches of the current epoch from the current position on; then the position moves to the next epoch."""
        epoch, n = self.epoch, len(self.labels)
        size = self.size_at(epoch)
        order = np.random.default_rng((self.seed, epoch)).permutation(n) if self.shuffle else np.arange(n)
        for b in range(self.batch, len(self)):
            # Not sorted: a data set is stored class by class, and each process's rows must be a fair sample of the batch
            index = order[b * self.batch_size:(b + 1) * self.batch_size]
            if self.shard is not None:
                start, stop = rows_of(len(index), *self.shard)
                self.rows, index = (start, stop, len(index)), index[start:stop]
            x = self.backend.asarray(self.images[index]).astype(self.dtype)
            if self.augment is not None:
                rng = np.random.default_rng((self.seed, epoch, b))
                x = self.augment(x, rng, **({} if self.shard is None else {"rows": self.rows}),
                                 **({} if size is None else {"size": size}))
            elif size is not None:
                x = resize(x, size)
            self.batch = b + 1
            yield self.normalize(x), self.backend.asarray(self.labels[index])
        self.epoch, self.batch = epoch + 1, 0


def _scaled(x):
    return x / x.dtype.type(255)


def rows_of(n, rank, size):
    """``(start, stop)``: the rows of a batch of ``n`` that rank ``rank`` of ``size`` takes (nearly equal parts, in order)."""
    return rank * n // size, (rank + 1) * n // size


def _check_shard(shard, count, batch_size):
    try:
        rank, size = shard
        rank, size = integer(rank, "shard's rank", "DataLoader", minimum=0), integer(size, "shard's size", "DataLoader")
    except (TypeError, ValueError):
        rank = size = None
    if rank is None or rank >= size:
        raise ValueError(f"DataLoader: shard must be (rank, size) with 0 <= rank < size, got {shard!r}")
    smallest = min(batch_size, count % batch_size or batch_size)
    if smallest < size:
        raise ValueError(f"DataLoader: a batch of {smallest} image(s) cannot be split across {size} processes (each needs "
                         f"at least one; {count} images in batches of {batch_size}); choose another batch size")
    return rank, size
