"""Window geometry shared by convolution (im2col) and pooling.

A 2-D window layer slides a ``kh x kw`` kernel over an (N, C, H, W) image
with stride ``(sh, sw)`` after padding it: ``padding`` is an int (every side),
``(ph, pw)`` (both ends of each axis) or ``(left, right, top, bottom)`` (as
PyTorch's ``F.pad``; TensorFlow's "same" padding of a stride-2 layer puts the
odd row at the bottom). These helpers size the output, pad, pick the pixels
that one kernel offset touches, and fold per-offset values back onto the image.
"""
from .backend import backend_of
from .validate import int_pair as pair  # noqa: F401  (3 -> (3, 3), (3, 5) -> (3, 5), for im2col and the layers)
from .validate import padding as checked_padding


def edges(padding):
    """``((top, bottom), (left, right))`` from any form of ``padding`` (see the module's docstring)."""
    padding = checked_padding(padding, "padding", None)
    if len(padding) == 2:
        (ph, pw) = padding
        return (ph, ph), (pw, pw)
    left, right, top, bottom = padding
    return (top, bottom), (left, right)


def output_size(size, kernel, stride, padding):
    """Number of window positions along one axis: ``(size + 2p - k) // s + 1``, for ``padding`` an int ``p``
    (each end) or a pair ``(before, after)`` (then ``size + before + after - k``)."""
    total = sum(padding) if isinstance(padding, (tuple, list)) else 2 * padding
    return (size + total - kernel) // stride + 1


def output_hw(hw, kernel, stride, padding):
    """``(Ho, Wo)`` for an ``(H, W)`` image; ``padding`` in any form."""
    return tuple(output_size(n, k, s, p) for n, k, s, p in zip(hw, kernel, stride, edges(padding)))


def padded_hw(hw, padding):
    """The image's ``(H, W)`` after padding."""
    return tuple(n + sum(p) for n, p in zip(hw, edges(padding)))


def pad2d(x, padding, value=0):
    """``x`` (N, C, H, W) with rows and columns of ``value`` added as ``padding`` (any form) says; ``x`` itself
    without padding."""
    (top, bottom), (left, right) = edges(padding)
    if top == bottom == left == right == 0:
        return x
    n, c, h, w = x.shape
    out = backend_of(x).xp.full((n, c, h + top + bottom, w + left + right), value, dtype=x.dtype)
    out[:, :, top:top + h, left:left + w] = x
    return out


def offset_slices(i, j, out_hw, stride):
    """Index of the input pixels that kernel offset ``(i, j)`` touches, for every output pixel."""
    (ho, wo), (sh, sw) = out_hw, stride
    return (slice(None), slice(None), slice(i, i + sh * (ho - 1) + 1, sh), slice(j, j + sw * (wo - 1) + 1, sw))


def fold(per_offset, image_shape, kernel, stride, padding, into=None):
    """Sum per-window values back onto the image the windows were cut from.

    Args:
        per_offset: ``kh * kw`` arrays of shape (A, B, Ho, Wo), in row-major
            kernel-offset order: entry ``i * kw + j`` holds, for every
            window, the value that belongs to its cell ``(i, j)``.
        image_shape: the unpadded image shape (A, B, H, W); (A, B) is
            (N, C) or (C, N), fold does not mind which.
        kernel, stride: ``(h, w)`` pairs; padding: any form.
        into: zeros of the padded shape (A, B, Hp, Wp) to sum into, in whatever memory order suits the
            values (default: new C-ordered zeros).

    Returns:
        array (A, B, H, W): each pixel holds the sum over the windows covering it.
    """
    a, b, h, w = image_shape
    kw, ((top, bottom), (left, right)) = kernel[1], edges(padding)
    out = into
    for k, values in enumerate(per_offset):
        if out is None:
            out = backend_of(values).xp.zeros((a, b, h + top + bottom, w + left + right), dtype=values.dtype)
        out[offset_slices(k // kw, k % kw, values.shape[2:], stride)] += values
    return out[:, :, top:top + h, left:left + w]
