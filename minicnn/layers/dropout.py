"""Inverted dropout."""
from ..validate import real
from .base import Layer


class Dropout(Layer):
    """Zero each input with probability ``p`` (in [0, 1)) during training, scaling the survivors by ``1 / (1 - p)``.

    Because of the scaling, evaluation mode is simply the identity. Any
    shape; backward: ``dx = dout * mask`` with the same scaled mask.
    """

    def __init__(self, p=0.5, backend=None):
        super().__init__(backend)
        self.p = real(p, "p", type(self).__name__, 0, 1, high_open=True)

    def config(self):
        return dict(p=self.p)

    def forward(self, x):
        self.check_input(x)
        if not self.training or self.p == 0:
            self.mask = None
            return x
        keep = self.backend.uniform_rows(x.shape, x.dtype) >= self.p  # one process's rows of a data-parallel batch
        self.mask = keep.astype(x.dtype) / x.dtype.type(1 - self.p)
        return x * self.mask

    def backward(self, dout):
        return dout if self.mask is None else dout * self.mask
