"""Element-wise activations."""
from ..functional import sigmoid
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


class Sigmoid(Layer):
    """``y = 1 / (1 + exp(-x))`` on any shape. Backward: ``dx = dout * y * (1 - y)``."""

    def forward(self, x):
        self.check_input(x)
        self.y = sigmoid(x)
        return self.y

    def backward(self, dout):
        return dout * self.y * (1 - self.y)

