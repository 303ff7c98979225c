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


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_parallel_covers_the_batch_once_whatever_the_threads(backend, threads, monkeypatch):
    monkeypatch.setattr(type(backend), "slice_bytes", 64, raising=False)  # many small slices on the CPU
    minicnn.set_num_threads(threads)
    try:
        seen = []
        backend.parallel(lambda batch: seen.extend(range(37)[batch]), 37, item_bytes=16)
        assert sorted(seen) == list(range(37))
        x = backend.asarray(np.arange(37 * 6, dtype=np.float32).reshape(37, 2, 3))
        y = backend.batched(lambda x, out: backend.xp.multiply(x, 2, out=out), x)
        np.testing.assert_array_equal(host(backend, y), 2 * host(backend, x))
        sums = backend.batched(lambda x, out: x.sum(axis=2, out=out), x, shape=(37, 2))
        np.testing.assert_array_equal(host(backend, sums), host(backend, x).sum(axis=2))
    finally:
        minicnn.set_num_threads(None)


def test_parallel_raises_what_a_slice_raised(backend):
    def work(batch):
        if batch.stop == 5:
            raise KeyError("slice failed")
    minicnn.set_num_threads(2)
    try:
        with pytest.raises(KeyError, match="slice failed"):
            backend.parallel(work, 5, item_bytes=1 << 30)
    finally:
        minicnn.set_num_threads(None)


@pytest.mark.parametrize("value, error", [(0, ValueError), (-1, ValueError), (1.5, TypeError), ("2", TypeError),
                                          (True, TypeError)])
def test_set_num_threads_rejects_what_is_not_a_positive_int(value, error):
    with pytest.raises(error, match="set_num_threads: n .*must be a positive int"):
        minicnn.set_num_threads(value)


def test_set_num_threads_takes_numpy_ints():
    try:
        minicnn.set_num_threads(np.int64(2))
        assert minicnn.num_threads() == 2 and type(minicnn.num_threads()) is int
    finally:
        minicnn.set_num_threads(None)


def test_one_thread_from_the_environment_caps_blas_too():
    code = "import minicnn, os; print(minicnn.num_threads(), os.environ['OPENBLAS_NUM_THREADS'])"
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", code], env={**env, "MINICNN_NUM_THREADS": "1"},
                         capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1", "1"]
    # A bad value fails as the NumPy backend is made (before any work), not at the first pass over a batch.
    code = "import minicnn; print('imported'); minicnn.Dense(2, 2)"
    bad = subprocess.run([sys.executable, "-c", code], env={**env, "MINICNN_NUM_THREADS": "many"},
                         capture_output=True, text=True)
    assert bad.stdout.split() == ["imported"]
    assert bad.returncode != 0 and "MINICNN_NUM_THREADS must be a positive integer, got 'many'" in bad.stderr
