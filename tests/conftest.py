import numpy as np
import pytest
from hypothesis import HealthCheck, settings

import minicnn

settings.register_profile(
    "minicnn", max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
settings.load_profile("minicnn")

_AVAILABLE = minicnn.available_backends()
BACKENDS = [
    pytest.param(name, marks=pytest.mark.skipif(name not in _AVAILABLE, reason=f"{name} backend not available here"))
    for name in ("numpy", "cupy")
]


@pytest.fixture(params=BACKENDS)
def backend(request):
    """Every available backend in turn, made active and freshly seeded."""
    previous = minicnn.get_backend()
    active = minicnn.use_backend(request.param)
    minicnn.seed(0)
    yield active
    minicnn.use_backend(previous)


def randn(backend, *shape, seed=0, dtype=np.float64):
    """Standard normal data on ``backend``."""
    return backend.asarray(np.random.default_rng(seed).standard_normal(shape), dtype=dtype)


def host(backend, a):
    return backend.to_numpy(a)
