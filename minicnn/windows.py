"""Window geometry shared by convolution (im2col) and pooling.

A 2-D window layer slides a ``kh x kw`` kernel over an (N, C, H, W) image
with stride ``(sh, sw)`` after padding ``(ph, pw)`` rows and columns on each
side. These helpers size the output, pad, pick the pixels that one kernel
offset touches, and fold per-offset values back onto the image.
"""
from .backend import backend_of
from .validate import int_pair as pair  # noqa: F401  (3 -> (3, 3), (3, 5) -> (3, 5), for im2col and the layers)


def output_size(size, kernel, stride, padding):
    """Number of window positions along one axis: ``(size + 2p - k) // s + 1``."""
    return (size + 2 * padding - kernel) // stride + 1


def pad2d(x, padding, value=0):
    """``x`` (N, C, H, W) with ``padding = (ph, pw)`` rows/columns of ``value`` added on each side."""
    ph, pw = padding
    if ph == 0 and pw == 0:
        return x
    n, c, h, w = x.shape
    out = backend_of(x).xp.full((n, c, h + 2 * ph, w + 2 * pw), value, dtype=x.dtype)
    out[:, :, ph:ph + h, pw:pw + w] = x
    return out


def offset_slices(i, j, out_hw, stride):
    """Index of the input pixels that kernel offset ``(i, j)`` touches, for every output pixel."""
    (ho, wo), (sh, sw) = out_hw, stride
    return (slice(None), slice(None), slice(i, i + sh * (ho - 1) + 1, sh), slice(j, j + sw * (wo - 1) + 1, sw))


def fold(per_offset, image_shape, kernel, stride, padding):
    """Sum per-window values back onto the image the windows were cut from.

    Args:
        per_offset: ``kh * kw`` arrays of shape (A, B, Ho, Wo), in row-major
            kernel-offset order: entry ``i * kw + j`` holds, for every
            window, the value that belongs to its cell ``(i, j)``.
        image_shape: the unpadded image shape (A, B, H, W); (A, B) is
            (N, C) or (C, N), fold does not mind which.
        kernel, stride, padding: ``(h, w)`` pairs.

    Returns:
        array (A, B, H, W): each pixel holds the sum over the windows covering it.
    """
    a, b, h, w = image_shape
    kw, (ph, pw) = kernel[1], padding
    out = None
    for k, values in enumerate(per_offset):
        if out is None:
            out = backend_of(values).xp.zeros((a, b, h + 2 * ph, w + 2 * pw), dtype=values.dtype)
        out[offset_slices(k // kw, k % kw, values.shape[2:], stride)] += values
    return out[:, :, ph:ph + h, pw:pw + w]
