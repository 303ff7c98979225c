"""Max and average pooling, by a loop over the kernel offsets (never over pixels), and global average pooling."""
from ..validate import int_pair
from ..validate import padding as checked_padding
from ..windows import edges, fold, offset_slices, output_hw, pad2d, padded_hw
from .base import Layer


class _Pool2D(Layer):
    """Shared set-up of the pooling layers: sizes, checks and the window slices."""

    pad_value = 0.0

    def __init__(self, kernel_size, stride=None, padding=0, backend=None):
        super().__init__(backend)
        name = type(self).__name__
        self.kernel_size = int_pair(kernel_size, "kernel_size", name, minimum=1)
        self.stride = self.kernel_size if stride is None else int_pair(stride, "stride", name, minimum=1)
        self.padding = checked_padding(padding, "padding", name)
        if any(p > k // 2 for pair, k in zip(edges(self.padding), self.kernel_size) for p in pair):
            most = tuple(k // 2 for k in self.kernel_size)
            raise ValueError(f"{name}: padding must be at most half the kernel size ({most} for kernel "
                             f"{self.kernel_size}) on each side, got {padding!r}")

    def config(self):
        return dict(kernel_size=self.kernel_size, stride=self.stride, padding=self.padding)

    def _pad(self, x):
        """Check ``x``, size the output, and return ``x`` padded (``x`` itself without padding)."""
        self.check_input(x, 4)
        (kh, kw), (ph, pw) = self.kernel_size, padded_hw(x.shape[2:], self.padding)
        if ph < kh or pw < kw:
            raise ValueError(f"{self!r}: input of shape {tuple(x.shape)} is smaller than the {kh}x{kw} window")
        self.x_shape = x.shape
        self.out_hw = output_hw(x.shape[2:], self.kernel_size, self.stride, self.padding)
        return pad2d(x, self.padding, self.pad_value)

    def _windows(self, padded):
        """For each kernel offset, the (N, C, Ho, Wo) slice of ``padded`` it sees."""
        kh, kw = self.kernel_size
        return [padded[offset_slices(i, j, self.out_hw, self.stride)] for i in range(kh) for j in range(kw)]


class MaxPool2D(_Pool2D):
    """Max pooling over (N, C, H, W) inputs.

    Args:
        kernel_size: positive int or (kh, kw).
        stride: positive int or pair; defaults to ``kernel_size``. Windows may overlap.
        padding: int >= 0, pair or (left, right, top, bottom) (as PyTorch's ``F.pad``), at most half the
            kernel on each side; padded cells are -inf so they are never the maximum.

    Shapes: x (N, C, H, W) -> y (N, C, Ho, Wo), Ho = (H + top + bottom - kh) // sh + 1.

    Gradient: each output's gradient goes to the one input cell that was the
    maximum of its window. On ties, it goes to the first maximal cell in
    row-major order within the window (as PyTorch does); where windows
    overlap, a cell collects the gradients of every window it won.
    """

    pad_value = float("-inf")

    def forward(self, x):
        self.padded = self._pad(x)  # kept for backward (x itself unless padded: no copy)
        # batched: the same computation on slices of the batch, several at a time on the CPU
        self.y = self.backend.batched(self._max_of_windows, self.padded, shape=(*x.shape[:2], *self.out_hw))
        return self.y

    def _max_of_windows(self, padded, out):
        windows = self._windows(padded)
        self.xp.maximum(windows[0], windows[-1], out=out)
        for window in windows[1:-1]:
            self.xp.maximum(out, window, out=out)

    def backward(self, dout):
        ((top, _), (left, _)), (h, w) = edges(self.padding), self.x_shape[2:]
        dx = self.backend.batched(self._gradient_to_winners, self.padded, self.y, dout, dtype=dout.dtype)
        return dx[:, :, top:top + h, left:left + w]

    def _gradient_to_winners(self, padded, y, dout, out):
        # The winner of each window is its first cell (row-major) equal to the maximum.
        (kh, kw), stride = self.kernel_size, self.stride
        disjoint = stride[0] >= kh and stride[1] >= kw
        if padded.shape[2:] != (kh * self.out_hw[0], kw * self.out_hw[1]) or stride != (kh, kw):
            out.fill(0)  # some cells are in no window (unless the windows tile the input, each cell in one)
        windows = self._windows(padded)
        taken = None
        for k, window in enumerate(windows):
            if taken is None:
                wins = taken = window == y
            else:
                # What no earlier cell won, the last one did: it needs no comparison.
                wins = ~taken if k == len(windows) - 1 else (window == y) & ~taken
                taken = taken | wins
            cells = out[offset_slices(k // kw, k % kw, self.out_hw, stride)]
            if disjoint:  # each input cell is in one window at most: write, don't add
                self.xp.multiply(dout, wins, out=cells)
            else:
                cells += dout * wins


class AvgPool2D(_Pool2D):
    """Average pooling over (N, C, H, W) inputs.

    Args as :class:`MaxPool2D`. Padded cells count as zeros and the divisor
    is always ``kh * kw`` (PyTorch's ``count_include_pad=True``).

    Shapes: x (N, C, H, W) -> y (N, C, Ho, Wo). Gradient: every cell of a
    window receives ``dout / (kh * kw)``.
    """

    def forward(self, x):
        padded = self._pad(x)
        return self.backend.batched(self._mean_of_windows, padded, shape=(*x.shape[:2], *self.out_hw))

    def _mean_of_windows(self, padded, out):
        windows = self._windows(padded)
        out[...] = windows[0]
        for window in windows[1:]:
            out += window
        out /= len(windows)

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
