"""2-D convolution by im2col and one matrix product (one batched product over the groups of a grouped one)."""
import contextlib

from ..im2col import batch_last_suits, col2im, from_columns, im2col, to_columns
from ..init import INITIALIZERS, initialize
from ..validate import int_pair, integer, one_of
from ..validate import padding as checked_padding
from ..windows import output_hw, padded_hw
from .base import Layer


class Conv2D(Layer):
    """2-D convolution (cross-correlation, as in PyTorch) over (N, C, H, W) inputs.

    Args:
        in_channels: C, channels of the input (a positive int).
        out_channels: F, number of filters (a positive int).
        kernel_size: positive int or (kh, kw).
        stride: positive int or (sh, sw).
        padding: int >= 0, (ph, pw), (left, right, top, bottom) (PyTorch's ``F.pad`` order; e.g. TensorFlow's
            "same" for stride 2 on an even size, ``(0, 1, 0, 1)``), ``"valid"`` (0) or ``"same"`` (stride 1,
            odd kernels) for Ho = H, Wo = W.
        groups: G, dividing C and F: the channels form G groups, and the filters of group g see only the
            C/G input channels of group g (PyTorch's ``groups``); G = C = F is a depthwise convolution.
        init: "he" (default, for layers followed by ReLU) or "xavier"; fan-in C/G kh kw, as PyTorch.
        backend: where the parameters live (default: the active backend).

    Params:
        W: (F, C/G, kh, kw) filters; b: (F,) biases.

    Shapes:
        x (N, C, H, W) -> y (N, F, Ho, Wo) with Ho = (H + top + bottom - kh) // sh + 1.

    Forward: ``y = W_mat @ cols + b`` where ``W_mat = W.reshape(F, C/G kh kw)``
    and ``cols = im2col(x)`` of shape (C kh kw, N Ho Wo). Backward::

        dW   = dy_mat @ cols.T           (F, C/G kh kw)
        db   = dy_mat.sum(axis=1)        (F,)
        dx   = col2im(W_mat.T @ dy_mat)  (N, C, H, W), skipped unless needs_input_grad

    with ``dy_mat = dout`` rearranged to (F, N Ho Wo). With G groups, the rows of
    ``W_mat``, ``dy_mat`` and ``cols`` split into G blocks (views, no copy): each
    product is one batched product of G matrices, group g's filters by group g's
    columns (on the CPU on one BLAS thread, see ``Backend.small_products``); for
    G = 1 it is the single matrix product above, exactly as without groups.

    Memory: ``cols`` takes ``C kh kw * N Ho Wo`` numbers. When that exceeds
    ``column_budget`` bytes (a class attribute, 1 GiB unless you set
    ``Conv2D.column_budget`` or ``layer.column_budget``), the batch is
    processed in chunks that fit, and backward recomputes their columns
    instead of keeping them.

    Layout: the columns of ``cols`` and ``dy_mat`` are in (n, y, x) order, or in (y, x, n) order for output
    maps of ``im2col.SMALL_MAP`` (200) pixels or fewer and kernels larger than 1x1, which copies faster there;
    set ``batch_last_maps`` to True or False to choose yourself. The products are the same either way (their
    sums in another order).
    """

    column_budget = 1 << 30
    batch_last_maps = None

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, groups=1, init="he",
                 backend=None):
        super().__init__(backend)
        name = type(self).__name__
        self.in_channels = integer(in_channels, "in_channels", name)
        self.out_channels = integer(out_channels, "out_channels", name)
        self.kernel_size = int_pair(kernel_size, "kernel_size", name, minimum=1)
        self.stride = int_pair(stride, "stride", name, minimum=1)
        self.groups = integer(groups, "groups", name)
        self.init = one_of(init, "init", name, sorted(INITIALIZERS))
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(f"{name}: in_channels ({self.in_channels}) and out_channels ({self.out_channels}) must "
                             f"both be multiples of groups ({self.groups})")
        kh, kw = self.kernel_size
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"{name}: padding must be an int >= 0, a pair of them, (left, right, top, bottom), "
                                 f"'same' or 'valid', got {padding!r}")
            if padding == "same" and (self.stride != (1, 1) or kh % 2 == 0 or kw % 2 == 0):
                raise ValueError(f"{name}: padding='same' needs stride 1 and odd kernels, got kernel {self.kernel_size}, stride {self.stride}")
            padding = ((kh - 1) // 2, (kw - 1) // 2) if padding == "same" else 0
        self.padding = checked_padding(padding, "padding", name)
        fan_in, fan_out = self.in_channels // self.groups * kh * kw, self.out_channels * kh * kw
        shape = (self.out_channels, self.in_channels // self.groups, kh, kw)
        self.params["W"] = initialize(init, shape, fan_in, fan_out, self.backend)
        self.params["b"] = self.xp.zeros(self.out_channels, dtype=self.params["W"].dtype)

    def config(self):
        groups = {} if self.groups == 1 else dict(groups=self.groups)  # the default unwritten: older files alike
        return dict(in_channels=self.in_channels, out_channels=self.out_channels, kernel_size=self.kernel_size,
                    stride=self.stride, padding=self.padding, **groups, init=self.init)

    def output_hw(self, h, w):
        """Output height and width for an (h, w) input; a clear error if the kernel does not fit."""
        (kh, kw), (ph, pw) = self.kernel_size, padded_hw((h, w), self.padding)
        if ph < kh or pw < kw:
            raise ValueError(f"{self!r}: input of spatial size {h}x{w} (padded {ph}x{pw}) "
                             f"is smaller than the {kh}x{kw} kernel")
        return output_hw((h, w), self.kernel_size, self.stride, self.padding)

    def batch_chunks(self, n, out_pixels, itemsize):
        """Slices of the batch whose column matrices each fit in ``column_budget`` bytes."""
        per_item = self.in_channels * self.kernel_size[0] * self.kernel_size[1] * out_pixels * itemsize
        size = max(1, min(n, self.column_budget // max(per_item, 1)))
        return [slice(i, min(i + size, n)) for i in range(0, max(n, 1), size)]  # an empty batch is one empty chunk

    def by_group(self, a):
        """A (G rows, P) matrix as (G, rows, P), a view: group g's block of rows is ``[g]``. Unchanged
        for G = 1, so that its products stay the single matrix products of an ordinary convolution."""
        return a if self.groups == 1 else a.reshape(self.groups, a.shape[0] // self.groups, a.shape[1])

    def products(self):
        """The context of the matrix products: for G > 1, a batch of G smaller ones (``Backend.small_products``)."""
        return contextlib.nullcontext() if self.groups == 1 else self.backend.small_products()

    def forward(self, x):
        self.check_input(x, 4, channels=self.in_channels)
        n, _, h, w = x.shape
        ho, wo = self.output_hw(h, w)
        self.x = x
        self.chunks = self.batch_chunks(n, ho * wo, x.dtype.itemsize)
        self.batch_last = self.batch_last_order((ho, wo))
        W = self.by_group(self.params["W"].reshape(self.out_channels, -1))
        out = self.xp.empty((n, self.out_channels, ho, wo), dtype=x.dtype)
        for chunk in self.chunks:
            cols = self.columns(x[chunk])
            with self.products():
                y = (W @ self.by_group(cols)).reshape(self.out_channels, -1)
            # (F, N Ho Wo) -> (N, F, Ho, Wo), the layout of the layers after this one, adding the bias on the way
            from_columns(y, self.params["b"], out[chunk], self.batch_last)
        # Keep the columns for backward only when training and they fit the budget in one piece (a backward
        # after an evaluation pass, as Grad-CAM's, recomputes them: a deep network's columns take gigabytes).
        self.cols = cols if len(self.chunks) == 1 and self.training else None
        return out

    def batch_last_order(self, out_hw):
        """Whether the column matrices have their columns in batch-last order (:mod:`minicnn.im2col`): for small
        output maps of kernels larger than 1x1, unless ``batch_last_maps`` (a class attribute, None: decide by
        size) says otherwise."""
        if self.batch_last_maps is None:
            return batch_last_suits(out_hw, self.kernel_size)
        if not isinstance(self.batch_last_maps, bool):
            raise TypeError(f"{self!r}: batch_last_maps must be None (decide by size), True or False, "
                            f"got {self.batch_last_maps!r}")
        return self.batch_last_maps

    def columns(self, x):
        """``im2col(x)`` (C kh kw, N Ho Wo) for this layer's geometry and column order."""
        return im2col(x, self.kernel_size, self.stride, self.padding, self.batch_last)

    def backward(self, dout):
        W = self.by_group(self.params["W"].reshape(self.out_channels, -1))
        W_T = W.swapaxes(-1, -2)  # W_mat.T, or each group's block transposed
        dW = db = None
        dx = []
        for chunk in self.chunks:
            cols = self.by_group(self.cols if self.cols is not None else self.columns(self.x[chunk]))
            dy = to_columns(dout[chunk], self.batch_last)  # (F, N Ho Wo)
            db = dy.sum(axis=1) if db is None else db + dy.sum(axis=1)
            dy = self.by_group(dy)
            with self.products():
                dW = dy @ cols.swapaxes(-1, -2) if dW is None else dW + dy @ cols.swapaxes(-1, -2)
            if self.needs_input_grad:
                # One filter per group (depthwise): a product over an inner dimension of 1 is the broadcast
                # product, which NumPy's matmul computes about 4x slower.
                with self.products():
                    dcols = W_T * dy if self.groups > 1 and W_T.shape[-1] == 1 else W_T @ dy
                dcols = dcols.reshape(cols.shape[-2] * self.groups, -1)
                x_shape = (chunk.stop - chunk.start, *self.x.shape[1:])
                dx.append(col2im(dcols, x_shape, self.kernel_size, self.stride, self.padding, self.batch_last))
        self.grads["W"] = dW.reshape(self.params["W"].shape)
        self.grads["b"] = db
        if not self.needs_input_grad:
            return None
        return dx[0] if len(dx) == 1 else self.xp.concatenate(dx, axis=0)
