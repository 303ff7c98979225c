"""Zero padding as a layer of its own."""
from ..validate import padding as checked_padding
from ..windows import edges, pad2d
from .base import Layer


class ZeroPad2D(Layer):
    """Rows and columns of zeros around each (N, C, H, W) image.

    Args:
        padding: an int (every side), ``(ph, pw)`` (both ends of each axis, as ``Conv2D``'s padding) or
            ``(left, right, top, bottom)``: the order of PyTorch's ``nn.ZeroPad2d`` and ``F.pad`` (the last
            axis first), so that padding written for PyTorch means the same here. TensorFlow's "same" padding
            of a stride-2 layer on an even size is ``(0, 1, 0, 1)``: its odd row and column at the end.

    Shapes: x (N, C, H, W) -> y (N, C, top + H + bottom, left + W + right).

    Backward: the padded cells are constants, so ``dx`` is ``dout`` without them (a contiguous copy).
    ``Conv2D`` and ``AvgPool2D`` take the same padding themselves, to the same effect (``MaxPool2D`` pads
    with -inf, which never wins).
    """

    def __init__(self, padding, backend=None):
        super().__init__(backend)
        self.padding = checked_padding(padding, "padding", type(self).__name__)

    def forward(self, x):
        self.check_input(x, 4)
        self.x_hw = x.shape[2:]
        return pad2d(x, self.padding)

    def backward(self, dout):
        (top, _), (left, _) = edges(self.padding)
        h, w = self.x_hw
        return self.xp.ascontiguousarray(dout[:, :, top:top + h, left:left + w])
