"""2-D convolution by im2col and one matrix product."""
from ..im2col import col2im, im2col, output_size, pair
from ..init import initialize
from .base import Layer


class Conv2D(Layer):
    """2-D convolution (cross-correlation, as in PyTorch) over (N, C, H, W) inputs.

    Args:
        in_channels: C, channels of the input.
        out_channels: F, number of filters.
        kernel_size: int or (kh, kw).
        stride: int or (sh, sw).
        padding: int, (ph, pw), or ``"same"`` (stride 1, odd kernels) for Ho = H, Wo = W.
        init: "he" (default, for layers followed by ReLU) or "xavier".

    Params:
        W: (F, C, kh, kw) filters; b: (F,) biases.

    Shapes:
        x (N, C, H, W) -> y (N, F, Ho, Wo) with Ho = (H + 2 ph - kh) // sh + 1.

    Forward: ``y = W_mat @ cols + b`` where ``W_mat = W.reshape(F, C kh kw)``
    and ``cols = im2col(x)`` of shape (C kh kw, N Ho Wo). Backward::

        dW   = dy_mat @ cols.T           (F, C kh kw)
        db   = dy_mat.sum(axis=1)        (F,)
        dx   = col2im(W_mat.T @ dy_mat)  (N, C, H, W)

    with ``dy_mat = dout`` rearranged to (F, N Ho Wo).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, init="he"):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.stride = pair(stride, "stride")
        self.init = init
        kh, kw = self.kernel_size
        if padding == "same":
            if self.stride != (1, 1) or kh % 2 == 0 or kw % 2 == 0:
                raise ValueError(f"Conv2D: padding='same' needs stride 1 and odd kernels, got kernel {self.kernel_size}, stride {self.stride}")
            padding = ((kh - 1) // 2, (kw - 1) // 2)
        self.padding = pair(padding, "padding")
        fan_in, fan_out = in_channels * kh * kw, out_channels * kh * kw
        self.params["W"] = initialize(init, (out_channels, in_channels, kh, kw), fan_in, fan_out, self.backend)
        self.params["b"] = self.xp.zeros(out_channels, dtype=self.params["W"].dtype)

    def config(self):
        return dict(in_channels=self.in_channels, out_channels=self.out_channels, kernel_size=self.kernel_size,
                    stride=self.stride, padding=self.padding, init=self.init)

    def output_hw(self, h, w):
        """Output height and width for an (h, w) input; a clear error if the kernel does not fit."""
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        if h + 2 * ph < kh or w + 2 * pw < kw:
            raise ValueError(f"{self!r}: input of spatial size {h}x{w} (padded {h + 2 * ph}x{w + 2 * pw}) "
                             f"is smaller than the {kh}x{kw} kernel")
        return output_size(h, kh, sh, ph), output_size(w, kw, sw, pw)

    def forward(self, x):
        self.check_input(x, 4, channels=self.in_channels)
        n, _, h, w = x.shape
        ho, wo = self.output_hw(h, w)
        self.x_shape = x.shape
        self.cols = im2col(x, self.kernel_size, self.stride, self.padding)
        W, b = self.params["W"], self.params["b"]
        y = W.reshape(self.out_channels, -1) @ self.cols
        y += b[:, None]
        return y.reshape(self.out_channels, n, ho, wo).transpose(1, 0, 2, 3)

    def backward(self, dout):
        W = self.params["W"]
        dy = dout.transpose(1, 0, 2, 3).reshape(self.out_channels, -1)
        self.grads["W"] = (dy @ self.cols.T).reshape(W.shape)
        self.grads["b"] = dy.sum(axis=1)
        dcols = W.reshape(self.out_channels, -1).T @ dy
        return col2im(dcols, self.x_shape, self.kernel_size, self.stride, self.padding)
