"""CPU threads (minicnn/threads.py): minicnn's own for passes over a batch, BLAS's through threadpoolctl."""
import os
import subprocess
import sys

import numpy as np
import pytest
import threadpoolctl

import minicnn
from minicnn.data import Augment
from minicnn.data.augment import bilinear_sample
from minicnn.threads import BLAS_VARIABLES

from conftest import host

# The environment of a fresh interpreter with no thread settings of its own.
PLAIN = {k: v for k, v in os.environ.items() if k not in (*BLAS_VARIABLES, "MINICNN_NUM_THREADS", "OPENBLAS_THREAD_TIMEOUT")}
BLAS_THREADS = "[i['num_threads'] for i in threadpoolctl.threadpool_info() if i['user_api'] == 'blas']"


def run(code, **env):
    """What ``code`` prints, run in a fresh interpreter (minicnn imported there first) with ``env`` added."""
    out = subprocess.run([sys.executable, "-c", code], env={**PLAIN, **env}, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_parallel_covers_the_batch_once_whatever_the_threads(backend, threads, monkeypatch):
    monkeypatch.setattr(minicnn.threads, "slice_bytes", 64)  # many small slices on the CPU
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


def test_one_thread_from_the_environment_caps_blas_too_through_threadpoolctl():
    code = f"import minicnn, threadpoolctl; minicnn.Dense(2, 2); print(minicnn.num_threads(), *{BLAS_THREADS})"
    free = run(code)
    if len(free) < 2 or min(map(int, free[1:])) < 2:
        pytest.skip(f"BLAS runs one thread here anyway (minicnn threads, BLAS threads: {free})")
    assert run(code, MINICNN_NUM_THREADS="1") == ["1"] * len(free)  # what data-parallel runs ask for
    assert run(code, MINICNN_NUM_THREADS="3")[1:] == ["3"] * (len(free) - 1)
    # BLAS's own variable wins over minicnn's.
    assert run(code, MINICNN_NUM_THREADS="1", OMP_NUM_THREADS=free[1], OPENBLAS_NUM_THREADS=free[1],
               MKL_NUM_THREADS=free[1]) == ["1", *free[1:]]
    # A bad value fails as the NumPy backend is made (before any work), not at the first pass over a batch.
    bad = subprocess.run([sys.executable, "-c", "import minicnn; print('imported'); minicnn.Dense(2, 2)"],
                         env={**PLAIN, "MINICNN_NUM_THREADS": "many"}, capture_output=True, text=True)
    assert bad.stdout.split() == ["imported"]
    assert bad.returncode != 0 and "MINICNN_NUM_THREADS must be a positive integer, got 'many'" in bad.stderr


@pytest.mark.parametrize("threads", [None, "1"])
def test_importing_minicnn_leaves_the_environment_alone(threads):
    code = "import os; before = dict(os.environ); import minicnn; minicnn.Dense(2, 2); print(dict(os.environ) == before)"
    assert run(code, **({} if threads is None else {"MINICNN_NUM_THREADS": threads})) == ["True"]


def test_blas_threads_sleep_when_idle():
    # After a matrix product OpenBLAS's idle threads busy-wait (~0.1 s by default) on the cores minicnn's
    # threads need, unless $OPENBLAS_THREAD_TIMEOUT was set as it loaded: minicnn sets it while it loads NumPy.
    code = f"""
import time, minicnn, numpy as np, threadpoolctl
print(min({BLAS_THREADS}), minicnn.num_threads())
a = np.ones((512, 512), np.float32)
a @ a
start = time.process_time()
time.sleep(0.1)
print(time.process_time() - start)
"""
    info = threadpoolctl.threadpool_info()
    if not any(i["internal_api"] == "openblas" and i["threading_layer"] == "pthreads" for i in info):
        pytest.skip(f"NumPy's BLAS here is not OpenBLAS on pthreads: {info}")
    blas_threads, threads, busy = run(code)
    if int(blas_threads) < 2:
        pytest.skip("OpenBLAS runs one thread here: it has no idle threads")
    assert float(busy) < 0.02, f"{busy} s of CPU time while the process slept: OpenBLAS's idle threads spin"
    assert int(threads) > 1
    # NumPy loaded before minicnn, without the variable: its threads spin, and minicnn keeps to one thread.
    assert run("import numpy, minicnn; print(minicnn.num_threads())") == ["1"]


@pytest.mark.parametrize("make", ["conv batch-first", "conv batch-last", "batch norm", "augment"])
def test_the_passes_over_slices_give_what_one_slice_gives(backend, make, monkeypatch):
    # Conv2D's im2col/col2im/copies, BatchNorm2D's channel sums and Augment's sampling, in many small slices on
    # several threads, against one slice: bitwise the same (each slice computes its own items or channels).
    x = backend.asarray(np.random.default_rng(0).standard_normal((6, 4, 7, 7)).astype(np.float32))
    layer = minicnn.BatchNorm2D(4) if make == "batch norm" else minicnn.Conv2D(4, 3, 3, padding=1)
    layer.batch_last_maps = make == "conv batch-last"

    def run_once():
        if make == "augment":
            return [Augment()(x, np.random.default_rng(1), size=5)]
        y = layer.forward(x)
        return [y, layer.backward(y), *layer.grads.values()]

    one = run_once()
    monkeypatch.setattr(minicnn.threads, "slice_bytes", 64)  # many small slices on the CPU
    minicnn.set_num_threads(3)
    try:
        for got, want in zip(run_once(), one):
            np.testing.assert_array_equal(host(backend, got), host(backend, want))
    finally:
        minicnn.set_num_threads(None)


def test_bilinear_sample_takes_one_grid_for_the_whole_batch_on_any_threads(backend, monkeypatch):
    x = backend.asarray(np.random.default_rng(0).standard_normal((4, 2, 5, 5)).astype(np.float32))
    grid = backend.asarray(np.random.default_rng(1).uniform(0, 4, (2, 1, 3, 3)).astype(np.float32))
    monkeypatch.setattr(minicnn.threads, "slice_bytes", 64)  # many small slices on the CPU
    minicnn.set_num_threads(2)
    try:
        shared = bilinear_sample(x, grid[0], grid[1])  # (1, 3, 3) grids: the same points in every image
        each = bilinear_sample(x, *(backend.xp.broadcast_to(g, (4, 3, 3)) for g in grid))
        np.testing.assert_array_equal(host(backend, shared), host(backend, each))
    finally:
        minicnn.set_num_threads(None)
