"""Data: image folders, MNIST, batches and augmentation.

Images are decoded once into memory as uint8 (N, 3, S, S); each batch is
moved to the backend as uint8 (four times less traffic than float32), then
turned into normalized float32 (or float64) NCHW there, augmented on the
device when training.
"""
import gzip
import math
import os
import struct
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

from .backend import backend_of, get_backend

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def class_folders(root):
    """The sorted names of the sub-folders of ``root`` (one per class); empty if ``root`` is no folder."""
    if not os.path.isdir(root):
        return []
    return sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))


def load_image(path, size):
    """Decode ``path`` to RGB uint8 of shape (3, size, size).

    The shorter side is resized to ``size`` (bilinear, antialiased), then the
    centre ``size x size`` square is cropped, so the aspect ratio is kept
    and only the edges of the longer side are lost.
    """
    with Image.open(path) as im:
        im.draft("RGB", (size, size))  # lets the JPEG decoder skip detail we would throw away
        im = im.convert("RGB")
        w, h = im.size
        scale = size / min(w, h)
        new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
        im = im.resize((new_w, new_h), Image.BILINEAR, reducing_gap=2.0)
        left, top = (new_w - size) // 2, (new_h - size) // 2
        im = im.crop((left, top, left + size, top + size))
        return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)


class ImageFolder:
    """The images of ``root/<class name>/*.jpg`` (and png, bmp, ...), decoded once into memory.

    Args:
        root: the folder holding one sub-folder per class.
        image_size: S; every image becomes (3, S, S), see :func:`load_image`.
        classes: the class names in index order; by default the sorted
            sub-folder names. Pass the training set's classes for the
            validation set so that the indices agree.
        workers: decoding threads (Pillow releases the GIL while decoding).

    Attributes:
        images: uint8 (N, 3, S, S).   labels: int64 (N,).
        classes: list of names.       paths: list of N file paths.
        skipped: files that could not be decoded (each warned about once).
    """

    def __init__(self, root, image_size, classes=None, workers=None):
        root = os.fspath(root)
        if not os.path.isdir(root):
            raise FileNotFoundError(f"ImageFolder: no such folder {root!r}")
        found = class_folders(root)
        classes = list(classes) if classes is not None else found
        if len(classes) < 2:
            raise ValueError(f"ImageFolder: {root!r} needs a sub-folder per class and at least two classes, found {found}")
        missing = [c for c in classes if c not in found]
        if missing:
            raise ValueError(f"ImageFolder: {root!r} has no folder for the classes {missing} (it has {found})")
        paths, labels = [], []
        for index, name in enumerate(classes):
            folder = os.path.join(root, name)
            files = sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS))
            if not files:
                raise ValueError(f"ImageFolder: the class folder {folder!r} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
            paths += [os.path.join(folder, f) for f in files]
            labels += [index] * len(files)

        def decode(path):
            try:
                return load_image(path, image_size)
            except (OSError, ValueError, SyntaxError):  # what Pillow raises for truncated or corrupt files
                return None

        with ThreadPoolExecutor(workers or min(8, (os.cpu_count() or 1) * 2)) as pool:
            decoded = list(pool.map(decode, paths))
        self.skipped = [p for p, im in zip(paths, decoded) if im is None]
        if self.skipped:
            shown = ", ".join(self.skipped[:5]) + (" ..." if len(self.skipped) > 5 else "")
            warnings.warn(f"ImageFolder: skipped {len(self.skipped)} unreadable image(s) in {root!r}: {shown}", stacklevel=2)
        keep = [i for i, im in enumerate(decoded) if im is not None]
        if not keep:
            raise ValueError(f"ImageFolder: none of the {len(paths)} images in {root!r} could be decoded")
        self.root, self.classes, self.image_size = root, classes, image_size
        self.paths = [paths[i] for i in keep]
        self.images = np.stack([decoded[i] for i in keep])
        self.labels = np.array([labels[i] for i in keep], dtype=np.int64)

    def __len__(self):
        return len(self.labels)

    def __repr__(self):
        counts = ", ".join(f"{c}: {int((self.labels == i).sum())}" for i, c in enumerate(self.classes))
        return f"ImageFolder({self.root!r}, {len(self)} images of {self.image_size}x{self.image_size}; {counts})"


def channel_stats(images):
    """Per-channel mean and std of uint8 images (N, C, H, W), on the [0, 1] scale: two float32 (C,) arrays."""
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


class Augment:
    """Random training-time distortions of a batch, as in the classic Keras cat/dog recipe.

    Each image gets its own horizontal flip (probability 1/2), zoom (scale
    in ``[1, 1 + zoom]``, i.e. a random crop), shift (up to ``shift`` of the
    size), rotation (up to ``rotation`` degrees), shear (up to ``shear``)
    and brightness factor (in ``1 ± brightness``). The geometric part is one
    affine map per image, applied to the whole batch at once by bilinear
    sampling with edge replication: no loop over images.
    """

    def __init__(self, flip=True, zoom=0.15, shift=0.1, rotation=5.0, shear=0.05, brightness=0.2):
        self.flip, self.zoom, self.shift = flip, zoom, shift
        self.rotation, self.shear, self.brightness = rotation, shear, brightness

    def __repr__(self):
        return (f"Augment(flip={self.flip}, zoom={self.zoom}, shift={self.shift}, rotation={self.rotation}, "
                f"shear={self.shear}, brightness={self.brightness})")

    def __call__(self, x, rng):
        """Augment ``x`` (N, C, H, W) float on any backend, with random draws from the NumPy Generator ``rng``."""
        backend = backend_of(x)
        n, c, h, w = x.shape
        angle = np.deg2rad(rng.uniform(-self.rotation, self.rotation, n))
        scale = 1 / rng.uniform(1, 1 + self.zoom, n)  # < 1: sample a smaller region, i.e. zoom in
        shear = rng.uniform(-self.shear, self.shear, n)
        flip = np.where(rng.random(n) < 0.5, -1.0, 1.0) if self.flip else np.ones(n)
        # Output pixel (u, v) around the centre samples the input at A @ (u, v) + t.
        cos, sin = np.cos(angle) * scale, np.sin(angle) * scale
        a = np.stack([np.stack([cos, -sin + shear * cos], -1), np.stack([sin, cos + shear * sin], -1)], -2)  # (N, 2, 2)
        a[:, :, 1] *= flip[:, None]
        t = rng.uniform(-self.shift, self.shift, (n, 2)) * np.array([h, w])
        v, u = np.meshgrid(np.arange(w) - (w - 1) / 2, np.arange(h) - (h - 1) / 2)
        coords = np.einsum("nij,jhw->nihw", a, np.stack([u, v])) + t[:, :, None, None]
        src_y = backend.asarray(coords[:, 0] + (h - 1) / 2, dtype=x.dtype)
        src_x = backend.asarray(coords[:, 1] + (w - 1) / 2, dtype=x.dtype)
        out = bilinear_sample(x, src_y, src_x)
        if self.brightness:
            factor = rng.uniform(1 - self.brightness, 1 + self.brightness, n).astype(x.dtype)
            out *= backend.asarray(factor)[:, None, None, None]
        return out


def bilinear_sample(x, src_y, src_x):
    """``out[n, :, i, j] = x[n, :, src_y[n, i, j], src_x[n, i, j]]`` with bilinear interpolation.

    Args:
        x: (N, C, H, W).  src_y, src_x: (N, Ho, Wo) fractional source coordinates;
        points outside the image take the value of the nearest edge pixel.

    Returns:
        (N, C, Ho, Wo), dtype of ``x``.
    """
    xp = backend_of(x).xp
    n, c, h, w = x.shape
    src_y = xp.clip(src_y, 0, h - 1)
    src_x = xp.clip(src_x, 0, w - 1)
    y0 = xp.minimum(xp.floor(src_y).astype(xp.int64), h - 2) if h > 1 else xp.zeros(src_y.shape, dtype=xp.int64)
    x0 = xp.minimum(xp.floor(src_x).astype(xp.int64), w - 2) if w > 1 else xp.zeros(src_x.shape, dtype=xp.int64)
    wy, wx = (src_y - y0)[:, None], (src_x - x0)[:, None]
    flat = x.transpose(1, 0, 2, 3).reshape(c, -1)  # (C, N H W): one gather per corner
    base = (xp.arange(n) * h * w)[:, None, None] + y0 * w + x0
    dy, dx = (w if h > 1 else 0), (1 if w > 1 else 0)

    def corner(offset):
        return flat[:, base + offset].transpose(1, 0, 2, 3)

    top = corner(0) * (1 - wx) + corner(dx) * wx
    bottom = corner(dy) * (1 - wx) + corner(dy + dx) * wx
    return (top * (1 - wy) + bottom * wy).astype(x.dtype)


class DataLoader:
    """Batches of normalized float images and int64 labels on the active backend.

    Args:
        images: uint8 (N, C, H, W), e.g. ``ImageFolder.images``.
        labels: int (N,).
        batch_size: images per batch; the last batch may be smaller.
        mean, std: per-channel (C,) statistics on the [0, 1] scale (see
            :func:`channel_stats`); a batch is ``(x / 255 - mean) / std``.
        shuffle: a new random order every epoch.
        augment: an :class:`Augment` (or any callable ``(x, rng) -> x``), applied before normalizing.
        seed: seeds shuffling and augmentation, so a run is reproducible.
        backend: where the batches go (default: the active backend).
        dtype: of the images; float64 for a model cast with ``astype(np.float64)``.

    Iterating yields ``(x, y)``: x (B, C, H, W) of ``dtype``, y int64 (B,).
    """

    def __init__(self, images, labels, batch_size, mean, std, shuffle=False, augment=None, seed=0, backend=None,
                 dtype=np.float32):
        if len(images) != len(labels):
            raise ValueError(f"DataLoader: {len(images)} images but {len(labels)} labels")
        if len(labels) == 0:
            raise ValueError("DataLoader: no images; an epoch over them would have no loss or accuracy")
        if batch_size < 1:
            raise ValueError(f"DataLoader: batch_size must be positive, got {batch_size}")
        self.images, self.labels, self.batch_size = images, np.asarray(labels), batch_size
        self.shuffle, self.augment = shuffle, augment
        self.backend = get_backend(backend)
        shape = (1, -1, 1, 1)
        self.dtype = np.dtype(dtype)
        self.mean = self.backend.asarray(np.asarray(mean, dtype=self.dtype).reshape(shape))
        self.scale = self.backend.asarray(1 / (255 * np.asarray(std, dtype=self.dtype)).reshape(shape))
        self.rng = np.random.default_rng(seed)

    def __len__(self):
        return math.ceil(len(self.labels) / self.batch_size)

    def __iter__(self):
        order = self.rng.permutation(len(self.labels)) if self.shuffle else np.arange(len(self.labels))
        for start in range(0, len(order), self.batch_size):
            index = np.sort(order[start:start + self.batch_size])  # sorted: faster gathering, same batch
            x = self.backend.asarray(self.images[index]).astype(self.dtype)
            if self.augment is not None:
                x = self.augment(x, self.rng)
            x = (x - 255 * self.mean) * self.scale
            yield x, self.backend.asarray(self.labels[index])


def read_mnist(folder, split="train"):
    """The MNIST images and labels of ``split`` ("train" or "test") from the four IDX ``.gz`` files in ``folder``.

    Returns:
        images uint8 (N, 1, 28, 28) and labels int64 (N,).
    """
    prefix = {"train": "train", "test": "t10k"}[split]
    images = _read_idx(os.path.join(folder, f"{prefix}-images-idx3-ubyte.gz"))
    labels = _read_idx(os.path.join(folder, f"{prefix}-labels-idx1-ubyte.gz"))
    if len(images) != len(labels):
        raise ValueError(f"read_mnist: {len(images)} images but {len(labels)} labels in {folder!r}")
    return images[:, None], labels.astype(np.int64)


def _read_idx(path):
    """One IDX file: a big-endian header (magic, dims) then unsigned bytes."""
    with gzip.open(path, "rb") as f:
        zero, dtype, ndim = struct.unpack(">HBB", f.read(4))
        if zero != 0 or dtype != 0x08:
            raise ValueError(f"{path}: not an IDX file of unsigned bytes")
        shape = struct.unpack(f">{ndim}I", f.read(4 * ndim))
        data = np.frombuffer(f.read(), dtype=np.uint8)
    if data.size != math.prod(shape):
        raise ValueError(f"{path}: expected {math.prod(shape)} values for shape {shape}, found {data.size}")
    return data.reshape(shape)
