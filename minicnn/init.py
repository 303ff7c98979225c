"""Weight initializers. They draw on the host from the generator seeded by
:func:`minicnn.seed`, so a model built after ``seed(n)`` starts from the same
weights on every backend."""
import contextlib

import numpy as np

from .backend import host_rng


def he_normal(shape, fan_in, fan_out):
    """Normal with std ``sqrt(2 / fan_in)``: keeps activation variance through ReLU layers (He et al. 2015)."""
    return host_rng().normal(0.0, np.sqrt(2.0 / fan_in), size=shape)


def xavier_uniform(shape, fan_in, fan_out):
    """Uniform on ``±sqrt(6 / (fan_in + fan_out))`` (Glorot & Bengio 2010), for tanh/sigmoid/linear layers."""
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return host_rng().uniform(-limit, limit, size=shape)


INITIALIZERS = {"he": he_normal, "xavier": xavier_uniform}
_drawing = True


@contextlib.contextmanager
def no_random_init():
    """Inside the block, :func:`initialize` draws nothing and returns zeros.

    For layers whose weights are about to be loaded from a file: building
    them costs no random numbers, so the stream of :func:`minicnn.seed` is
    the same whether or not a model was loaded before.
    """
    global _drawing
    saved, _drawing = _drawing, False
    try:
        yield
    finally:
        _drawing = saved


def initialize(scheme, shape, fan_in, fan_out, backend, dtype=np.float32):
    """A new weight array of ``shape`` on ``backend``, drawn by ``scheme`` ("he" or "xavier")."""
    if scheme not in INITIALIZERS:
        raise ValueError(f"unknown init {scheme!r}; choose one of {sorted(INITIALIZERS)}")
    if not _drawing:
        return backend.xp.zeros(shape, dtype=dtype)
    return backend.asarray(INITIALIZERS[scheme](shape, fan_in, fan_out), dtype=dtype)
