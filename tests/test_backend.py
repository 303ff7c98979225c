import os
import subprocess
import sys

import numpy as np
import pytest

import minicnn
from minicnn.backend import BackendError

from conftest import host


def test_unknown_backend():
    with pytest.raises(ValueError, match="unknown backend 'jax'"):
        minicnn.use_backend("jax")


@pytest.mark.skipif("cupy" in minicnn.available_backends(), reason="CuPy runs here")
def test_cupy_unavailable_says_why_and_how_to_install():
    with pytest.raises(BackendError, match=r"CuPy, which is not installed or does not load|sees none") as info:
        minicnn.use_backend("cupy")
    try:
        import cupy  # noqa: F401
    except ImportError:
        assert 'pip install ".[gpu]" in the minicnn checkout' in str(info.value)  # PyPI's minicnn is another project


def test_environment_variable_picks_the_backend():
    code = "import minicnn; print(minicnn.get_backend().name)"
    env = {**os.environ, "MINICNN_BACKEND": "numpy"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "numpy"
    env["MINICNN_BACKEND"] = "nonsense"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode != 0 and "unknown backend 'nonsense'" in out.stderr


def test_windows_view(backend):
    x = backend.asarray(np.arange(2 * 1 * 4 * 5, dtype=np.float32).reshape(2, 1, 4, 5))
    w = backend.windows(x, (2, 3), (2, 1))
    assert w.shape == (2, 1, 2, 3, 2, 3)
    np.testing.assert_array_equal(host(backend, w[1, 0, 1, 2]), host(backend, x[1, 0, 2:4, 2:5]))


def test_seeded_uniform_and_fixed_rng(backend):
    minicnn.seed(5)
    a = host(backend, backend.uniform((3,), np.float32))
    with backend.fixed_rng(9):
        b = host(backend, backend.uniform((3,), np.float32))
    c = host(backend, backend.uniform((3,), np.float32))
    minicnn.seed(5)
    np.testing.assert_array_equal(host(backend, backend.uniform((3,), np.float32)), a)
    np.testing.assert_array_equal(host(backend, backend.uniform((3,), np.float32)), c)  # fixed_rng left the stream alone
    assert a.dtype == np.float32 and ((0 <= b) & (b < 1)).all()


def test_use_device_keeps_the_seeded_stream(backend):
    """A data-parallel process's device (its rank on the machine, modulo the devices: here 2 of 1 or
    more) is chosen before anything is made; the seeded random numbers are the same there."""
    minicnn.seed(5)
    expected = host(backend, backend.uniform((3,), np.float32))
    minicnn.seed(5)
    backend.use_device(2)
    try:
        np.testing.assert_array_equal(host(backend, backend.uniform((3,), np.float32)), expected)
        assert host(backend, backend.asarray(np.arange(3.0)) * 2).tolist() == [0.0, 2.0, 4.0]
    finally:
        backend.use_device(0)


def test_layer_files_do_not_import_array_libraries():
    folder = os.path.join(os.path.dirname(minicnn.__file__), "layers")
    for name in os.listdir(folder):
        if name.endswith(".py"):
            text = open(os.path.join(folder, name)).read()
            for banned in ("import numpy", "import cupy", "from numpy", "from cupy", "== \"cupy\"", "backend.name =="):
                assert banned not in text, f"{name} mentions {banned}"
