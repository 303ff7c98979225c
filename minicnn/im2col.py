"""im2col / col2im: turn a convolution into one matrix product, and back.

Layout (chosen so that the forward and both backward products are single
GEMMs with no hidden transposes of the big matrix)::

    x     (N, C, H, W)
    cols  (C * kh * kw, N * Ho * Wo)
    cols[(c, i, j), (n, y, x)] = x_padded[n, c, y * sh + i, x * sw + j]

Neither function loops over the batch or over pixels: ``im2col`` is one copy
of a strided window view, ``col2im`` is one slice ``+=`` per kernel offset.
The dtype of the input is kept.
"""
from .backend import backend_of


def pair(value, name="value"):
    """``3 -> (3, 3)``; ``(3, 5) -> (3, 5)``."""
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return tuple(value)
    raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")


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


def im2col(x, kernel_size, stride=1, padding=0):
    """Unfold image patches into columns.

    Args:
        x: input of shape (N, C, H, W).
        kernel_size, stride, padding: ints or ``(h, w)`` pairs.

    Returns:
        cols of shape (C * kh * kw, N * Ho * Wo), same dtype as ``x``.
    """
    kh, kw = pair(kernel_size, "kernel_size")
    backend = backend_of(x)
    n, c = x.shape[:2]
    windows = backend.windows(pad2d(x, pair(padding, "padding")), (kh, kw), pair(stride, "stride"))
    ho, wo = windows.shape[2:4]
    # (N, C, Ho, Wo, kh, kw) -> (C, kh, kw, N, Ho, Wo): the only copy.
    cols = backend.xp.ascontiguousarray(windows.transpose(1, 4, 5, 0, 2, 3))
    return cols.reshape(c * kh * kw, n * ho * wo)


def col2im(cols, x_shape, kernel_size, stride=1, padding=0):
    """Fold columns back into an image, summing where patches overlap.

    The adjoint of :func:`im2col` (what backpropagation needs), not its
    inverse: a pixel covered by k patches receives the sum of k entries.

    Args:
        cols: array of shape (C * kh * kw, N * Ho * Wo).
        x_shape: the image shape (N, C, H, W) given to ``im2col``.

    Returns:
        contiguous array of shape (N, C, H, W), same dtype as ``cols``. The
        sums are taken in (C, N, H, W) order, where ``cols`` is read
        contiguously, then copied once to NCHW: the layer below would run
        about 30% slower on a transposed view.
    """
    (kh, kw), stride, padding = pair(kernel_size), pair(stride), pair(padding)
    n, c, h, w = x_shape
    ho, wo = output_size(h, kh, stride[0], padding[0]), output_size(w, kw, stride[1], padding[1])
    per_offset = cols.reshape(c, kh, kw, n, ho, wo)  # per_offset[:, i, j] is (C, N, Ho, Wo)
    summed = fold((per_offset[:, i, j] for i in range(kh) for j in range(kw)), (c, n, h, w), (kh, kw), stride, padding)
    return backend_of(cols).xp.ascontiguousarray(summed.transpose(1, 0, 2, 3))


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
