"""Random training-time distortions of image batches, computed on the batch's device in its dtype."""
import numpy as np

from ..backend import backend_of
from ..validate import flag, int_pair, real


class Augment:
    """Random training-time distortions of a batch, as in the classic Keras cat/dog recipe.

    Each image gets its own horizontal flip (probability 1/2), zoom (scale
    in ``[1, 1 + zoom]``, i.e. a random crop), shift (up to ``shift`` of the
    size), rotation (up to ``rotation`` degrees), shear (up to ``shear``)
    and brightness factor (in ``1 ± brightness``); each amount is a finite
    number >= 0, rotation at most 180 and brightness below 1. The geometric part is one
    affine map per image, applied to the whole batch at once by bilinear
    sampling with edge replication: no loop over images.

    ``augment(x, rng)``: x (N, C, H, W) float on any backend (0..255 scale);
    ``rng`` a NumPy Generator. ``augment(x, rng, rows=(start, stop, total))``:
    x is rows ``start:stop`` of a batch of ``total`` images (one process's part
    in data-parallel training); the draws are made for the whole batch and
    sliced, so each image is distorted as if the batch were augmented at once.
    ``augment(x, rng, size=(Ho, Wo))`` (or an int for Ho = Wo): the output is
    (N, C, Ho, Wo), sampled over the same field of view as at full size (the
    same distortions, fewer pixels): progressive resizing trains the early
    epochs at a low resolution with no second decoding. The random draws (a few numbers per image) are
    made on the host from ``rng``, so the same generator gives the same
    distortions on every backend; the sampling grid and the images never
    leave the device and stay in ``x``'s dtype.
    """

    def __init__(self, flip=True, zoom=0.15, shift=0.1, rotation=5.0, shear=0.05, brightness=0.2):
        self.flip = flag(flip, "flip", "Augment")
        self.zoom, self.shift, self.shear = (real(v, name, "Augment", 0) for name, v in
                                             (("zoom", zoom), ("shift", shift), ("shear", shear)))
        self.rotation = real(rotation, "rotation", "Augment", 0, 180)
        self.brightness = real(brightness, "brightness", "Augment", 0, 1, high_open=True)

    def __repr__(self):
        return (f"Augment(flip={self.flip}, zoom={self.zoom}, shift={self.shift}, rotation={self.rotation}, "
                f"shear={self.shear}, brightness={self.brightness})")

    def draw(self, n, h, w, rng):
        """The random part for ``n`` images of ``h x w``: affine maps (n, 2, 3) and brightness factors (n,), float64 host arrays.

        Output pixel (u, v), measured from the image centre, samples the input
        at ``A @ (u, v) + t`` (also from the centre), where ``[A | t]`` is a row of the maps.
        """
        angle = np.deg2rad(rng.uniform(-self.rotation, self.rotation, n))
        scale = 1 / rng.uniform(1, 1 + self.zoom, n)  # < 1: sample a smaller region, i.e. zoom in
        shear = rng.uniform(-self.shear, self.shear, n)
        flip = np.where(rng.random(n) < 0.5, -1.0, 1.0) if self.flip else np.ones(n)
        cos, sin = np.cos(angle) * scale, np.sin(angle) * scale
        a = np.stack([np.stack([cos, -sin + shear * cos], -1), np.stack([sin, cos + shear * sin], -1)], -2)  # (n, 2, 2)
        a[:, :, 1] *= flip[:, None]
        t = rng.uniform(-self.shift, self.shift, (n, 2)) * np.array([h, w])
        factor = rng.uniform(1 - self.brightness, 1 + self.brightness, n) if self.brightness else np.ones(n)
        return np.concatenate([a, t[:, :, None]], axis=2), factor

    def __call__(self, x, rng, rows=None, size=None):
        """Augment ``x`` (N, C, H, W): a new array of ``x``'s dtype, (N, C, H, W) or (N, C, Ho, Wo) for ``size``."""
        backend = backend_of(x)
        n, c, h, w = x.shape
        start, stop, total = rows if rows is not None else (0, n, n)
        if stop - start != n:
            raise ValueError(f"Augment: rows {start}:{stop} of a batch of {total} do not fit x of shape {tuple(x.shape)}")
        maps, factor = (drawn[start:stop] for drawn in self.draw(total, h, w, rng))
        maps = backend.asarray(maps, dtype=x.dtype)
        u, v = _output_grid(x, size, "Augment")
        a, t = maps[:, :, :2, None, None], maps[:, :, 2, None, None]  # (N, 2, 2, 1, 1), (N, 2, 1, 1)
        src_y = a[:, 0, 0] * u + a[:, 0, 1] * v + (t[:, 0] + (h - 1) / 2)  # (N, Ho, Wo), from the top-left corner
        src_x = a[:, 1, 0] * u + a[:, 1, 1] * v + (t[:, 1] + (w - 1) / 2)
        out = bilinear_sample(x, src_y, src_x)
        if self.brightness:
            out *= backend.asarray(factor, dtype=x.dtype)[:, None, None, None]
        return out


def resize(x, size):
    """``x`` (N, C, H, W) resampled to (N, C, Ho, Wo) by bilinear interpolation (``size``: (Ho, Wo), or an int
    for both), pixel centres aligned as in PyTorch's ``interpolate(..., align_corners=False)``."""
    n, c, h, w = x.shape
    u, v = _output_grid(x, size, "resize")
    shape = (n, u.shape[0], v.shape[1])
    xp = backend_of(x).xp
    return bilinear_sample(x, xp.broadcast_to(u + (h - 1) / 2, shape), xp.broadcast_to(v + (w - 1) / 2, shape))


def _output_grid(x, size, owner):
    """The output pixels' positions in ``x``'s (N, C, H, W) pixels, measured from the image centre: rows (Ho, 1)
    and columns (1, Wo), H / Ho and W / Wo apart so that the output covers the image; ``size`` None: (H, W)."""
    xp = backend_of(x).xp
    h, w = x.shape[2:]
    out_h, out_w = (h, w) if size is None else int_pair(size, "size", owner, minimum=1)
    u = (xp.arange(out_h, dtype=x.dtype)[:, None] - (out_h - 1) / 2) * (h / out_h)
    v = (xp.arange(out_w, dtype=x.dtype)[None, :] - (out_w - 1) / 2) * (w / out_w)
    return u, v


def bilinear_sample(x, src_y, src_x):
    """``out[n, :, i, j] = x[n, :, src_y[n, i, j], src_x[n, i, j]]`` with bilinear interpolation.

    Args:
        x: (N, C, H, W).  src_y, src_x: (N, Ho, Wo) fractional source coordinates;
        points outside the image take the value of the nearest edge pixel.

    Returns:
        (N, C, Ho, Wo), dtype of ``x``; the weights are computed in that dtype too. Each image on its own,
        in slices of the batch (several at a time on the CPU).
    """
    n, c = x.shape[:2]
    backend = backend_of(x)
    # a (1, Ho, Wo) grid serves every image: broadcast before the batch is sliced
    src_y, src_x = (backend.xp.broadcast_to(src, (n, *src.shape[1:])) for src in (src_y, src_x))
    return backend.batched(_bilinear_sample, x, src_y, src_x, shape=(n, c, *src_y.shape[1:]))


def _bilinear_sample(x, src_y, src_x, out):
    xp = backend_of(x).xp
    n, c, h, w = x.shape
    src_y = xp.clip(src_y, 0, h - 1)
    src_x = xp.clip(src_x, 0, w - 1)
    # The top-left corner, at most one before the last row/column so that its neighbour exists;
    # kept as floats for the weights (float - int64 would be float64).
    y0 = xp.minimum(xp.floor(src_y), max(h - 2, 0))
    x0 = xp.minimum(xp.floor(src_x), max(w - 2, 0))
    wy, wx = (src_y - y0)[:, None], (src_x - x0)[:, None]
    flat = x.transpose(1, 0, 2, 3).reshape(c, -1)  # (C, N H W): one gather per corner
    base = (xp.arange(n) * h * w)[:, None, None] + y0.astype(xp.int64) * w + x0.astype(xp.int64)
    dy, dx = (w if h > 1 else 0), (1 if w > 1 else 0)

    def corner(offset):
        return flat[:, base + offset].transpose(1, 0, 2, 3)

    top = corner(0) * (1 - wx) + corner(dx) * wx
    bottom = corner(dy) * (1 - wx) + corner(dy + dx) * wx
    xp.multiply(top, 1 - wy, out=out)
    out += bottom * wy
