"""CPU threads: minicnn's own for memory-bound passes over a batch, and BLAS's for matrix products.

A pass over an activation much larger than the caches (a copy, ReLU, a
comparison) runs at memory speed, and one core draws only a fraction of the
machine's memory bandwidth. :func:`parallel` cuts such a pass into
cache-sized slices of the batch and runs them on a few threads (NumPy
releases the GIL in its loops); the NumPy backend's ``parallel`` and
``batched`` call it. Matrix products run on BLAS's own threads, which
threadpoolctl controls (:func:`prepare`).

Importing this module loads NumPy (see :func:`_load_numpy`); ``minicnn``
imports it before anything else.
"""
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

from threadpoolctl import ThreadpoolController, threadpool_limits

from .validate import integer

# After each matrix product OpenBLAS's idle threads busy-wait for about 0.1 s (2^28 cycles) before
# they sleep, on the very cores where minicnn's threads run the copies and comparisons that follow
# (two minicnn threads then measured slower than one); $OPENBLAS_THREAD_TIMEOUT=4 (2^4 cycles) lets
# them sleep at once. OpenBLAS reads it once, as NumPy loads it, and has no call to change it later
# (threadpoolctl sets thread counts only): it holds if NumPy is not loaded yet, or the user set it.
_BLAS_SLEEPS_WHEN_IDLE = "OPENBLAS_THREAD_TIMEOUT" in os.environ or "numpy" not in sys.modules


def _load_numpy():
    """Import NumPy with $OPENBLAS_THREAD_TIMEOUT=4 in the environment while its OpenBLAS loads, then
    take the variable out again: nothing stays in ``os.environ``, child processes and libraries
    loaded later see the environment the user gave."""
    if "numpy" in sys.modules or "OPENBLAS_THREAD_TIMEOUT" in os.environ:
        return
    os.environ["OPENBLAS_THREAD_TIMEOUT"] = "4"
    try:
        import numpy  # noqa: F401
    finally:
        del os.environ["OPENBLAS_THREAD_TIMEOUT"]


_load_numpy()

# BLAS's own variables: where any is set, it decides BLAS's threads, not $MINICNN_NUM_THREADS.
BLAS_VARIABLES = ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")

# Slices that touch about this many bytes (inputs and outputs) keep a layer's several passes over a
# slice in the cache, and run on several cores. Measured: 1-8 MiB all do, 32 MiB not.
slice_bytes = 4 << 20

_num_threads = None
_blas_limited = False
_blas_controller = None
_pool = None
_pool_size = 0
_pool_pid = None
_pool_lock = threading.Lock()
_in_pool = threading.local()


def _default_num_threads():
    value = os.environ.get("MINICNN_NUM_THREADS")
    if value is not None:
        if not value.strip().isdigit() or int(value) < 1:
            raise ValueError(f"MINICNN_NUM_THREADS must be a positive integer, got {value!r}")
        return int(value)
    if not _BLAS_SLEEPS_WHEN_IDLE:
        return 1
    try:
        return len(os.sched_getaffinity(0))  # the CPUs this process may run on, not all the machine's
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def num_threads():
    """How many threads minicnn's memory-bound passes over a batch use (BLAS has its own).

    Default: ``$MINICNN_NUM_THREADS`` (which caps BLAS's threads too, see
    :func:`prepare`), else the number of CPUs this process may run on. But 1 when NumPy was imported before minicnn with
    ``$OPENBLAS_THREAD_TIMEOUT`` unset: OpenBLAS's threads then busy-wait
    after every matrix product on the cores these threads would use, and
    two threads measured slower than one. Import minicnn first, or set the
    variable before starting Python.
    """
    global _num_threads
    if _num_threads is None:
        _num_threads = _default_num_threads()
    return _num_threads


def set_num_threads(n):
    """Use ``n`` threads (1: everything on the calling thread) for the passes over a batch; None: the default."""
    global _num_threads
    _num_threads = None if n is None else integer(n, "n (or None for the default)", "set_num_threads")


def prepare():
    """Once per process, as the first NumPy backend is made: a bad ``$MINICNN_NUM_THREADS`` fails here,
    before any work; a good one caps BLAS's threads too, through threadpoolctl (one process per core,
    as in data-parallel training, means one thread in all), unless BLAS's own variables are set."""
    global _blas_limited
    num_threads()
    if _blas_limited or "MINICNN_NUM_THREADS" not in os.environ or any(name in os.environ for name in BLAS_VARIABLES):
        return
    threadpool_limits(_default_num_threads(), user_api="blas")  # for the whole process, never restored
    _blas_limited = True


def one_blas_thread():
    """A context in which BLAS computes on the calling thread only: for a batch of small matrix products
    (a grouped convolution's, one per group), where waking BLAS's threads for each product costs more
    than they save (a depthwise convolution measured 2x faster on 2 cores)."""
    global _blas_controller
    if _blas_controller is None:  # finding the BLAS libraries takes a while: once
        _blas_controller = ThreadpoolController()
    return _blas_controller.limit(limits=1, user_api="blas")


def parallel(work, n, item_bytes):
    """Call ``work(batch)`` for slices ``batch`` of ``range(n)`` that together cover it once, on
    :func:`num_threads` threads; ``item_bytes``: the bytes a pass reads and writes per batch item."""
    threads = num_threads()
    count = min(n, -(-max(n * item_bytes, 1) // slice_bytes))
    count = min(n, -(-count // threads) * threads)  # a multiple of the threads: equal shares
    bounds = [n * i // count for i in range(count + 1)] if n else []
    _run_on_threads(work, [slice(a, b) for a, b in zip(bounds, bounds[1:])], threads)


def _thread_pool(helpers):
    """At least ``helpers`` helper threads, created on first use (again in a forked child, which has none)."""
    global _pool, _pool_size, _pool_pid
    with _pool_lock:
        if _pool is None or _pool_pid != os.getpid() or _pool_size < helpers:
            if _pool is not None and _pool_pid == os.getpid():
                _pool.shutdown(wait=False)
            _pool = ThreadPoolExecutor(helpers, thread_name_prefix="minicnn", initializer=_mark_helper_thread)
            _pool_size, _pool_pid = helpers, os.getpid()
        return _pool


def _mark_helper_thread():
    _in_pool.helper = True


def _run_on_threads(work, slices, threads):
    """``work(s)`` for every slice: in contiguous groups, one per thread, the calling thread taking the first."""
    threads = min(threads, len(slices))
    if threads <= 1 or getattr(_in_pool, "helper", False):  # nested inside a helper thread: stay there
        for batch in slices:
            work(batch)
        return
    per_thread = -(-len(slices) // threads)
    groups = [slices[i:i + per_thread] for i in range(0, len(slices), per_thread)]

    def run(group):
        for batch in group:
            work(batch)
    pool = _thread_pool(threads - 1)
    futures = [pool.submit(run, group) for group in groups[1:]]
    try:
        run(groups[0])
    finally:
        for future in futures:  # wait for all of them (they write into the caller's arrays), then raise
            future.exception()
    for future in futures:
        future.result()
