"""im2col / col2im: turn a convolution into one matrix product, and back.

Layout (chosen so that the forward and both backward products are single
GEMMs with no hidden transposes of the big matrix)::

    x     (N, C, H, W)
    cols  (C * kh * kw, N * Ho * Wo)
    cols[(c, i, j), (n, y, x)] = x_padded[n, c, y * sh + i, x * sw + j]

or, with ``batch_last=True``, the columns in ``(y, x, n)`` order: the batch
varies fastest. Both are copies of strided views, and a copy is fast when it
moves long runs of neighbouring numbers. In the first order a run is one
row of an output map (``Wo`` numbers); for small maps (a 4x4 map: runs of 4)
NumPy spends its time stepping from run to run, and the batch-last order,
whose runs hold the whole batch, is several times faster. For large maps the
first order wins: its results go back to (N, C, H, W) in long runs
(:func:`from_columns`). :func:`batch_last_suits` picks the order.

Neither function loops over pixels: ``im2col`` is one copy of a strided
window view, ``col2im`` is one slice ``+=`` per kernel offset. Both are
memory-bound copies, so they go through ``backend.parallel`` in slices of
the channels: on the CPU the slices run on several cores (the matrix
products keep BLAS's own threads). The dtype of the input is kept.
"""
from .backend import backend_of
from .validate import flag
from .windows import edges, fold, output_hw, pad2d, padded_hw, pair

SMALL_MAP = 200
"""Output maps of at most this many pixels (up to 14x14) suit the batch-last column order
(measured: benchmarks/NOTES-avx512.md)."""


def batch_last_suits(out_hw, kernel_size):
    """True when the batch-last column order is the faster: output maps ``(Ho, Wo)`` small, the kernel larger
    than 1x1 (a 1x1 kernel's columns are the input itself, which the batch-first order copies in one pass)."""
    return out_hw[0] * out_hw[1] <= SMALL_MAP and kernel_size[0] * kernel_size[1] > 1


def im2col(x, kernel_size, stride=1, padding=0, batch_last=False):
    """Unfold image patches into columns.

    Args:
        x: input of shape (N, C, H, W).
        kernel_size, stride: ints or ``(h, w)`` pairs.
        padding: an int, ``(ph, pw)`` or ``(left, right, top, bottom)`` (see :mod:`minicnn.windows`).
        batch_last: the columns in ``(y, x, n)`` order instead of ``(n, y, x)`` (see the module's docstring).

    Returns:
        cols of shape (C * kh * kw, N * Ho * Wo), same dtype as ``x``.
    """
    (kh, kw), stride = pair(kernel_size, "kernel_size"), pair(stride, "stride")
    batch_last = flag(batch_last, "batch_last", "im2col")
    backend = backend_of(x)
    n, c, h, w = x.shape
    ho, wo = output_hw((h, w), (kh, kw), stride, padding)
    (top, _), (left, _) = edges(padding)
    hw_padded = padded_hw((h, w), padding)
    cols = backend.xp.empty((c, kh, kw, ho, wo, n) if batch_last else (c, kh, kw, n, ho, wo), dtype=x.dtype)

    def unfold(channels):
        if batch_last:  # (N, c, Hp, Wp) in (c, Hp, Wp, N) memory
            padded = _batch_last_zeros(x, len(range(c)[channels]), hw_padded, n).transpose(3, 0, 1, 2)
            padded[:, :, top:top + h, left:left + w] = x[:, channels]
        else:
            padded = pad2d(x[:, channels], padding)
        windows = backend.windows(padded, (kh, kw), stride)  # (N, c, Ho, Wo, kh, kw), a view
        cols[channels] = windows.transpose((1, 4, 5, 2, 3, 0) if batch_last else (1, 4, 5, 0, 2, 3))  # the only copy
    backend.parallel(unfold, c, item_bytes=(kh * kw * ho * wo + h * w) * n * x.dtype.itemsize)
    return cols.reshape(c * kh * kw, n * ho * wo)


def col2im(cols, x_shape, kernel_size, stride=1, padding=0, batch_last=False):
    """Fold columns back into an image, summing where patches overlap.

    The adjoint of :func:`im2col` (what backpropagation needs), not its
    inverse: a pixel covered by k patches receives the sum of k entries.

    Args:
        cols: array of shape (C * kh * kw, N * Ho * Wo), columns in the order ``batch_last`` says.
        x_shape: the image shape (N, C, H, W) given to ``im2col``.

    Returns:
        contiguous array of shape (N, C, H, W), same dtype as ``cols``. The
        sums are taken in the memory order of ``cols`` ((C, N, H, W), or
        (C, H, W, N) for ``batch_last``), where it is read contiguously,
        then copied to NCHW: the layer below would run about 30% slower on
        a transposed view.
    """
    (kh, kw), stride = pair(kernel_size), pair(stride)
    batch_last = flag(batch_last, "batch_last", "col2im")
    backend = backend_of(cols)
    n, c, h, w = x_shape
    ho, wo = output_hw((h, w), (kh, kw), stride, padding)
    hw_padded = padded_hw((h, w), padding)
    if batch_last:  # per_offset[:, i, j] is (C, N, Ho, Wo), a view of batch-last memory
        per_offset = cols.reshape(c, kh, kw, ho, wo, n).transpose(0, 1, 2, 5, 3, 4)
    else:
        per_offset = cols.reshape(c, kh, kw, n, ho, wo)
    x = backend.xp.empty(x_shape, dtype=cols.dtype)

    def fold_channels(channels):
        count = len(range(c)[channels])
        # batch_last: sum into (c, N, Hp, Wp) in (c, Hp, Wp, N) memory, where per_offset is read contiguously
        into = None
        if batch_last:
            into = _batch_last_zeros(cols, count, hw_padded, n).transpose(0, 3, 1, 2)
        summed = fold((per_offset[channels, i, j] for i in range(kh) for j in range(kw)),
                      (count, n, h, w), (kh, kw), stride, padding, into=into)
        x[:, channels] = summed.transpose(1, 0, 2, 3)
    backend.parallel(fold_channels, c, item_bytes=(kh * kw * ho * wo + h * w) * n * cols.dtype.itemsize)
    return x


def _batch_last_zeros(like, c, hw, n):
    """Zeros of shape (c, H, W, N), the batch varying fastest, in the dtype and on the backend of ``like``."""
    return backend_of(like).xp.zeros((c, *hw, n), dtype=like.dtype)


def to_columns(a, batch_last=False):
    """``a`` (N, F, Ho, Wo) as the (F, N * Ho * Wo) matrix of a convolution's products, columns in the order of
    :func:`im2col` with the same ``batch_last`` (a contiguous copy): how backward wants the output gradient."""
    backend = backend_of(a)
    n, f = a.shape[:2]
    out = backend.xp.empty((f, *a.shape[2:], n) if batch_last else (f, n, *a.shape[2:]), dtype=a.dtype)

    def copy(filters):
        out[filters] = a[:, filters].transpose(1, 2, 3, 0) if batch_last else a[:, filters].swapaxes(0, 1)
    backend.parallel(copy, f, item_bytes=a[:, :1].nbytes * 2)
    return out.reshape(f, -1)


def from_columns(y, bias, out, batch_last=False):
    """Write a convolution's product ``y`` (F, N * Ho * Wo) (columns in the order of :func:`im2col`) plus ``bias``
    (F,) into ``out``, a contiguous (N, F, Ho, Wo) array: the layout of the layers after it, in one pass."""
    backend = backend_of(y)
    if not out.flags.c_contiguous:  # the results would go into a copy and be lost
        raise ValueError(f"from_columns: out must be a contiguous (N, F, Ho, Wo) array, got strides {out.strides}")
    n, f, ho, wo = out.shape
    images = y.reshape(f, ho * wo, n).transpose(2, 0, 1) if batch_last else y.reshape(f, n, ho * wo).swapaxes(0, 1)
    out = out.reshape(n, f, ho * wo)  # a view

    def add_bias(batch):
        backend.xp.add(images[batch], bias[:, None], out=out[batch])
    backend.parallel(add_bias, n, item_bytes=2 * out[:1].nbytes)
