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
from .windows import fold, output_size, pad2d, pair


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
