"""im2col / col2im: turn a convolution into one matrix product, and back.

Layout (chosen so that the forward and both backward products are single
GEMMs with no hidden transposes of the big matrix)::

    x     (N, C, H, W)
    cols  (C * kh * kw, N * Ho * Wo)
    cols[(c, i, j), (n, y, x)] = x_padded[n, c, y * sh + i, x * sw + j]

Neither function loops over pixels: ``im2col`` is one copy of a strided
window view, ``col2im`` is one slice ``+=`` per kernel offset. Both are
memory-bound copies, so they go through ``backend.parallel`` in slices of
the channels: on the CPU the slices run on several cores (the matrix
products keep BLAS's own threads). Channels, not the batch, because a
channel's rows of ``cols`` are long contiguous runs of memory.
The dtype of the input is kept.
"""
from .backend import backend_of
from .windows import fold, output_hw, pad2d, pair


def im2col(x, kernel_size, stride=1, padding=0):
    """Unfold image patches into columns.

    Args:
        x: input of shape (N, C, H, W).
        kernel_size, stride: ints or ``(h, w)`` pairs.
        padding: an int, ``(ph, pw)`` or ``(left, right, top, bottom)`` (see :mod:`minicnn.windows`).

    Returns:
        cols of shape (C * kh * kw, N * Ho * Wo), same dtype as ``x``.
    """
    (kh, kw), stride = pair(kernel_size, "kernel_size"), pair(stride, "stride")
    backend = backend_of(x)
    n, c, h, w = x.shape
    ho, wo = output_hw((h, w), (kh, kw), stride, padding)
    cols = backend.xp.empty((c, kh, kw, n, ho, wo), dtype=x.dtype)

    def unfold(channels):
        windows = backend.windows(pad2d(x[:, channels], padding), (kh, kw), stride)  # (N, c, Ho, Wo, kh, kw), a view
        cols[channels] = windows.transpose(1, 4, 5, 0, 2, 3)  # the only copy
    backend.parallel(unfold, c, item_bytes=(kh * kw * ho * wo + h * w) * n * x.dtype.itemsize)
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
        contiguously, then copied to NCHW: the layer below would run about
        30% slower on a transposed view.
    """
    (kh, kw), stride = pair(kernel_size), pair(stride)
    backend = backend_of(cols)
    n, c, h, w = x_shape
    ho, wo = output_hw((h, w), (kh, kw), stride, padding)
    per_offset = cols.reshape(c, kh, kw, n, ho, wo)  # per_offset[:, i, j] is (C, N, Ho, Wo)
    x = backend.xp.empty(x_shape, dtype=cols.dtype)

    def fold_channels(channels):
        summed = fold((per_offset[channels, i, j] for i in range(kh) for j in range(kw)),
                      (len(range(c)[channels]), n, h, w), (kh, kw), stride, padding)
        x[:, channels] = summed.transpose(1, 0, 2, 3)
    backend.parallel(fold_channels, c, item_bytes=(kh * kw * ho * wo + h * w) * n * cols.dtype.itemsize)
    return x


def channels_first(a):
    """A contiguous copy of ``a`` (N, C, ...) in (C, N, ...) order: how a convolution's
    matrix products want its output gradient (its rows are the channels)."""
    backend = backend_of(a)
    out = backend.xp.empty((a.shape[1], a.shape[0], *a.shape[2:]), dtype=a.dtype)

    def copy(batch):
        out[:, batch] = a[batch].swapaxes(0, 1)
    backend.parallel(copy, len(a), item_bytes=a[:1].nbytes)
    return out
