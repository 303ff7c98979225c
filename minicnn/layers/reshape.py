"""Reshaping layers."""
import math

from .base import Layer


class Flatten(Layer):
    """(N, d1, d2, ...) -> (N, d1 * d2 * ...), e.g. (N, C, H, W) -> (N, C*H*W); backward reshapes back."""

    def forward(self, x):
        self.check_input(x)
        if x.ndim < 2:
            raise ValueError(f"{self!r}: expected an input with a batch axis and at least one more, got shape {tuple(x.shape)}")
        self.x_shape = x.shape
        return x.reshape(x.shape[0], math.prod(x.shape[1:]))  # not -1: that is ambiguous for an empty batch

    def backward(self, dout):
        return dout.reshape(self.x_shape)
