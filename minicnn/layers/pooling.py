"""Max and average pooling, by a loop over the kernel offsets (never over pixels), and global average pooling."""
from ..validate import int_pair
from ..windows import fold, offset_slices, output_size, pad2d
from .base import Layer


class _Pool2D(Layer):
    """Shared set-up of the pooling layers: sizes, checks and the window slices."""

    pad_value = 0.0

    def __init__(self, kernel_size, stride=None, padding=0, backend=None):
        super().__init__(backend)
        name = type(self).__name__
        self.kernel_size = int_pair(kernel_size, "kernel_size", name, minimum=1)
        self.stride = self.kernel_size if stride is None else int_pair(stride, "stride", name, minimum=1)
        self.padding = int_pair(padding, "padding", name, minimum=0)
        if any(p > k // 2 for p, k in zip(self.padding, self.kernel_size)):
            most = tuple(k // 2 for k in self.kernel_size)
            raise ValueError(f"{name}: padding must be at most half the kernel size ({most} for kernel "
                             f"{self.kernel_size}), got {padding!r}")

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


class MaxPool2D(_Pool2D):
    """Max pooling over (N, C, H, W) inputs.

    Args:
        kernel_size: positive int or (kh, kw).
        stride: positive int or pair; defaults to ``kernel_size``. Windows may overlap.
        padding: int >= 0 or pair, at most half the kernel; padded cells are -inf
            so they are never the maximum.

    Shapes: x (N, C, H, W) -> y (N, C, Ho, Wo), Ho = (H + 2 ph - kh) // sh + 1.

    Gradient: each output's gradient goes to the one input cell that was the
    maximum of its window. On ties, it goes to the first maximal cell in
    row-major order within the window (as PyTorch does); where windows
    overlap, a cell collects the gradients of every window it won.
    """

    pad_value = float("-inf")

    def forward(self, x):
        self.windows = self._windows(x)  # views into (padded) x, kept for backward: no copy
        y = self.xp.maximum(self.windows[0], self.windows[-1])  # a new array, even for a single window
        for window in self.windows[1:-1]:
            self.xp.maximum(y, window, out=y)
        self.y = y
        return y

    def backward(self, dout):
        # The winner of each window is its first cell (row-major) equal to the maximum.
        (kh, kw), stride = self.kernel_size, self.stride
        n, c, h, w = self.x_shape
        (ph, pw), (ho, wo) = self.padding, self.out_hw
        padded_hw = (h + 2 * ph, w + 2 * pw)
        disjoint = stride[0] >= kh and stride[1] >= kw
        tiled = padded_hw == (kh * ho, kw * wo) and stride == (kh, kw)  # the windows cover every cell once
        dx = (self.xp.empty if tiled else self.xp.zeros)((n, c, *padded_hw), dtype=dout.dtype)
        taken = None
        for k, window in enumerate(self.windows):
            if taken is None:
                wins = taken = window == self.y
            else:
                # What no earlier cell won, the last one did: it needs no comparison.
                wins = ~taken if k == len(self.windows) - 1 else (window == self.y) & ~taken
                taken = taken | wins
            cells = dx[offset_slices(k // kw, k % kw, self.out_hw, stride)]
            if disjoint:  # each input cell is in one window at most: write, don't add
                self.xp.multiply(dout, wins, out=cells)
            else:
                cells += dout * wins
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
        return fold((share for _ in range(area)), self.x_shape, self.kernel_size, self.stride, self.padding)


class GlobalAvgPool2D(Layer):
    """The mean of each channel over all positions: (N, C, H, W) -> (N, C), for any H and W.

    Unlike ``AvgPool2D(size)`` it ties a model to no image size. Backward:
    every position of a channel receives ``dout / (H * W)``.
    """

    def forward(self, x):
        self.check_input(x, 4)
        if x.shape[2] * x.shape[3] == 0:
            raise ValueError(f"{self!r}: an input of shape {tuple(x.shape)} has no positions to average")
        self.x_shape = x.shape
        return x.mean(axis=(2, 3))

    def backward(self, dout):
        n, c, h, w = self.x_shape
        dx = self.xp.empty(self.x_shape, dtype=dout.dtype)
        dx[...] = (dout / (h * w))[:, :, None, None]
        return dx
