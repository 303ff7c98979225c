"""Element-wise activations."""
from ..functional import sigmoid
from ..validate import real
from .base import Layer


class ReLU(Layer):
    """``y = max(x, 0)`` on any shape. Backward: ``dx = dout * (x > 0)``, where ``x > 0`` is ``y > 0``."""

    def forward(self, x):
        self.check_input(x)
        # batched: the same formula on slices of the batch, several at a time on the CPU
        self.y = self.backend.batched(lambda x, out: self.xp.maximum(x, 0, out=out), x)
        return self.y

    def backward(self, dout):
        return self.backend.batched(lambda dout, y, out: self.xp.multiply(dout, y > 0, out=out), dout, self.y)


class Clip(Layer):
    """``y = min(max(x, low), high)`` on any shape, for finite ``low < high`` (PyTorch's ``hardtanh``).

    Backward: ``dx = dout * (low < x < high)``, where ``low < x < high`` is ``low < y < high``:
    the gradient is 0 at the kinks and beyond them, as in PyTorch.
    """

    def __init__(self, low, high, backend=None):
        super().__init__(backend)
        name = type(self).__name__
        self.low = real(low, "low", name)
        self.high = real(high, "high", name)
        if not self.low < self.high:
            raise ValueError(f"{name}: low must be below high, got low={self.low}, high={self.high}")

    def forward(self, x):
        self.check_input(x)
        self.y = self.backend.batched(lambda x, out: self.xp.clip(x, self.low, self.high, out=out), x)
        return self.y

    def backward(self, dout):
        return self.backend.batched(
            lambda dout, y, out: self.xp.multiply(dout, (y > self.low) & (y < self.high), out=out), dout, self.y)


class ReLU6(Clip):
    """``y = min(max(x, 0), 6)`` on any shape: :class:`Clip` (0, 6), as in MobileNet and EfficientNet-Lite
    (whose 8-bit versions need a bounded activation)."""

    def __init__(self, backend=None):
        super().__init__(0.0, 6.0, backend)


class Sigmoid(Layer):
    """``y = 1 / (1 + exp(-x))`` on any shape. Backward: ``dx = dout * y * (1 - y)``."""

    def forward(self, x):
        self.check_input(x)
        self.y = sigmoid(x)
        return self.y

    def backward(self, dout):
        return dout * self.y * (1 - self.y)
