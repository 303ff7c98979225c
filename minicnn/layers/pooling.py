"""Max and average pooling, by a loop over the kernel offsets (never over pixels)."""
from ..im2col import fold, offset_slices, output_size, pad2d, pair
from .base import Layer


class _Pool2D(Layer):
    """Shared set-up of the pooling layers: sizes, checks and the window slices."""

    pad_value = 0.0

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.stride = self.kernel_size if stride is None else pair(stride, "stride")
        self.padding = pair(padding, "padding")
        if any(p > k // 2 for p, k in zip(self.padding, self.kernel_size)):
            raise ValueError(f"{self!r}: padding must be at most half the kernel size")

    def config(self):
        return dict(kernel_size=self.kernel_size, stride=self.stride, padding=self.padding)

    def _windows(self, x):
        """Pad ``x`` and return, for each kernel offset, the (N, C, Ho, Wo) slice it sees."""
        self.check_input(x, 4)
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        n, c, h, w = x.shape
        if h + 2 * ph < kh or w + 2 * pw < kw:
            raise ValueError(f"{self!r}: input of shape {tuple(x.shape)} is smaller than the {kh}x{kw} window")
        self.x_shape = x.shape
        self.out_hw = (output_size(h, kh, sh, ph), output_size(w, kw, sw, pw))
        padded = pad2d(x, self.padding, self.pad_value)
        return [padded[offset_slices(i, j, self.out_hw, self.stride)] for i in range(kh) for j in range(kw)]

    def _fold(self, per_offset):
        """Sum the per-offset gradients (each (N, C, Ho, Wo)) back onto the input (N, C, H, W)."""
        return fold(per_offset, self.x_shape, self.kernel_size, self.stride, self.padding)


class MaxPool2D(_Pool2D):
    """Max pooling over (N, C, H, W) inputs.

    Args:
        kernel_size: int or (kh, kw).
        stride: int or pair; defaults to ``kernel_size``. Windows may overlap.
        padding: int or pair, at most half the kernel; padded cells are -inf
            so they are never the maximum.

    Shapes: x (N, C, H, W) -> y (N, C, Ho, Wo), Ho = (H + 2 ph - kh) // sh + 1.

    Gradient: each output's gradient goes to the one input cell that was the
    maximum of its window. On ties, it goes to the first maximal cell in
    row-major order within the window (as PyTorch does); where windows
    overlap, a cell collects the gradients of every window it won.
    """

    pad_value = float("-inf")

    def forward(self, x):
        windows = self._windows(x)
        # One contiguous copy (kh*kw, N, C, Ho, Wo): the reductions below then run on rows.
        cells = self.xp.stack(windows)
        y = cells.max(axis=0)
        self.winner = cells == y  # (kh*kw, N, C, Ho, Wo) bool
        taken = self.winner[0].copy()
        for mask in self.winner[1:]:  # keep the first maximum only
            mask &= ~taken
            taken |= mask
        return y

    def backward(self, dout):
        (kh, kw), stride = self.kernel_size, self.stride
        if stride[0] < kh or stride[1] < kw:  # overlapping windows: a cell may win several times
            return self._fold(dout * mask for mask in self.winner)
        # Disjoint windows: write each window's gradient straight into its cells, in one pass.
        n, c, h, w = self.x_shape
        (ph, pw), (ho, wo) = self.padding, self.out_hw
        dx = self.xp.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=dout.dtype)
        cells = self.backend.windows(dx, self.kernel_size, stride).transpose(4, 5, 0, 1, 2, 3)
        self.xp.multiply(self.winner.reshape(kh, kw, n, c, ho, wo), dout, out=cells)
        return dx[:, :, ph:ph + h, pw:pw + w]


class AvgPool2D(_Pool2D):
    """Average pooling over (N, C, H, W) inputs.

    Args as :class:`MaxPool2D`. Padded cells count as zeros and the divisor
    is always ``kh * kw`` (PyTorch's ``count_include_pad=True``).

    Shapes: x (N, C, H, W) -> y (N, C, Ho, Wo). Gradient: every cell of a
    window receives ``dout / (kh * kw)``.
    """

    def forward(self, x):
        windows = self._windows(x)
        y = windows[0].copy()
        for window in windows[1:]:
            y += window
        y /= len(windows)
        return y

    def backward(self, dout):
        area = self.kernel_size[0] * self.kernel_size[1]
        share = dout / area
        return self._fold(share for _ in range(area))
