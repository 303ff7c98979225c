"""Fully connected layer."""
from ..init import INITIALIZERS, initialize
from ..validate import integer, one_of
from .base import Layer


class Dense(Layer):
    """Fully connected layer ``y = x @ W + b``.

    Args:
        in_features: D, features of the input (a positive int).
        out_features: M, features of the output (a positive int).
        init: "he" (default, for layers followed by ReLU) or "xavier".
        backend: where the parameters live (default: the active backend).

    Params: W (D, M), b (M,).  Shapes: x (N, D) -> y (N, M).

    Backward: ``dW = x.T @ dout``, ``db = dout.sum(0)``, ``dx = dout @ W.T``.
    """

    def __init__(self, in_features, out_features, init="he", backend=None):
        super().__init__(backend)
        name = type(self).__name__
        self.in_features = integer(in_features, "in_features", name)
        self.out_features = integer(out_features, "out_features", name)
        self.init = one_of(init, "init", name, sorted(INITIALIZERS))
        self.params["W"] = initialize(init, (self.in_features, self.out_features), self.in_features, self.out_features,
                                      self.backend)
        self.params["b"] = self.xp.zeros(self.out_features, dtype=self.params["W"].dtype)

    def config(self):
        return dict(in_features=self.in_features, out_features=self.out_features, init=self.init)

    def forward(self, x):
        self.check_input(x, 2, channels=self.in_features)
        self.x = x
        return x @ self.params["W"] + self.params["b"]

    def backward(self, dout):
        self.grads["W"] = self.x.T @ dout
        self.grads["b"] = dout.sum(axis=0)
        return dout @ self.params["W"].T if self.needs_input_grad else None
