"""Array backends: the one module that knows about NumPy and CuPy.

A backend object exposes the array namespace ``xp`` (``numpy`` or ``cupy``)
and the few primitives whose spelling differs between array libraries:

* ``windows(x, kernel, stride)``   strided sliding-window view (no copy)
* ``asarray(a, dtype)`` / ``to_numpy(a)``  move data to / from the host
* ``uniform(shape, dtype)``        seeded random numbers on the device
* ``check(ok, message)``           a value check that can wait for the next host transfer
* ``batched(fn, *arrays)`` / ``parallel(work, n, item_bytes)``  a memory-bound pass over a batch,
  slice by slice: on the CPU, cache-sized slices on a few threads (see :func:`set_num_threads`)

The rule of the whole package: an object that creates arrays holds the
backend it was built with (every such class takes ``backend=None``, meaning
the active one, see :func:`use_backend`); a free function takes the backend
from its array argument with :func:`backend_of`. To add a third array
library, write one more :class:`Backend` subclass here and register it in
``_BACKEND_CLASSES``.
"""
import contextlib
import ctypes
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

# After each matrix product OpenBLAS's idle threads busy-wait for about 0.1 s (2^28 cycles)
# before they sleep, on the very cores where the NumPy backend's threads run the copies and
# comparisons that follow (see num_threads); 2^4 cycles lets them sleep at once. OpenBLAS reads
# the variable when NumPy loads it: it counts only if it is set before NumPy is first imported.
_BLAS_SLEEPS_WHEN_IDLE = "OPENBLAS_THREAD_TIMEOUT" in os.environ or "numpy" not in sys.modules
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
# $MINICNN_NUM_THREADS=1 (one process per core, as in data-parallel training) means one thread in all:
# it caps BLAS too, unless its own variables say otherwise; like the above, only before NumPy loads.
if os.environ.get("MINICNN_NUM_THREADS", "").strip().isdigit():
    for _blas_variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_blas_variable, os.environ["MINICNN_NUM_THREADS"].strip())

import numpy as np  # noqa: E402

from .validate import integer


class BackendError(RuntimeError):
    """A backend was asked for that cannot run here."""


class Backend:
    """Common code of the backends; subclasses set ``name``, ``xp``, ``array_module`` and the rng."""

    name = "?"
    xp = None
    array_module = "?"
    """The top-level module of this library's array type, e.g. ``"cupy"`` for ``cupy.ndarray``."""

    def __init__(self, seed=None):
        self.seed(seed)
        self._pending_checks = None

    def __repr__(self):
        return f"<minicnn {self.name} backend>"

    def __deepcopy__(self, memo):
        return self  # one backend object per library: a copied layer still lives on it

    # --- arrays ----------------------------------------------------------
    def is_native(self, a):
        """True if ``a`` is an array of this backend's library."""
        return isinstance(a, self.xp.ndarray)

    def asarray(self, a, dtype=None):
        """Copy host data (or a native array) onto this backend's device; no copy if already there."""
        return self.xp.asarray(a, dtype=dtype)

    def to_numpy(self, a):
        """A NumPy array on the host holding the values of ``a``: the only device-to-host transfer."""
        return np.asarray(a)

    def windows(self, x, kernel, stride):
        """Sliding windows of ``x`` (N, C, H, W) as a view (N, C, Ho, Wo, kh, kw).

        No data is copied: ``windows[n, c, i, j]`` is the ``kh x kw`` patch of
        ``x[n, c]`` whose top-left corner is ``(i * sh, j * sw)``. Writing
        through the view is only safe when windows do not overlap.
        """
        (kh, kw), (sh, sw) = kernel, stride
        n, c, h, w = x.shape
        shape = (n, c, (h - kh) // sh + 1, (w - kw) // sw + 1, kh, kw)
        s_n, s_c, s_h, s_w = x.strides
        strides = (s_n, s_c, s_h * sh, s_w * sw, s_h, s_w)
        return self._as_strided(x, shape, strides)

    # --- value checks ----------------------------------------------------
    def check(self, ok, message, error=ValueError):
        """Raise ``error(message())`` unless every entry of the boolean array ``ok`` is true.

        Reading ``ok`` waits for the device. Inside :meth:`deferred_checks`
        the check is queued instead and judged at the block's next
        :meth:`PendingChecks.flush`, together with whatever else is fetched then.
        """
        if self._pending_checks is not None:
            self._pending_checks.add(ok, message, error)
        elif not bool(self.to_numpy(ok.all())):
            raise error(message())

    @contextlib.contextmanager
    def deferred_checks(self):
        """Queue the :meth:`check` calls made inside the block: no device synchronization per check.

        Yields a :class:`PendingChecks`; its ``flush(*values)`` fetches the
        queued checks and ``values`` (device arrays) in one transfer, raises
        for the first failed check, and returns the values on the host.
        Whatever is still queued when the block ends is flushed then.
        """
        if self._pending_checks is not None:  # nested: the outer block judges
            yield self._pending_checks
            return
        pending = self._pending_checks = PendingChecks(self)
        try:
            yield pending
            pending.flush()
        finally:
            self._pending_checks = None

    # --- devices ---------------------------------------------------------
    def use_device(self, index):
        """Compute on device ``index`` (modulo the number of devices) from now on; data-parallel
        runs give each process of a machine its own (``Communicator.local_rank``). Call it
        before making arrays on this backend. The CPU is one device: nothing to do."""

    # --- random numbers --------------------------------------------------
    def seed(self, seed):
        """Re-seed this backend's device random number generator.

        ``seed`` is None (fresh entropy), an int, or a tuple of ints (say
        ``(run_seed, epoch, step)``) that picks an independent stream.
        """
        self.seed_value = seed
        self.rng = self._make_rng(seed)

    def uniform(self, shape, dtype):
        """Uniform random numbers in [0, 1) of the given shape and dtype."""
        raise NotImplementedError

    @contextlib.contextmanager
    def fixed_rng(self, seed, rows=None):
        """Draw from a generator seeded with ``seed`` inside the block only.

        Lets a caller replay the same random numbers (a dropout mask, say)
        without disturbing the global random stream. ``rows=(start, stop, total)``:
        the batches inside are rows ``start:stop`` of a batch of ``total``
        (data-parallel training), see :meth:`uniform_rows`.
        """
        saved = self.rng, self._rows
        self.rng, self._rows = self._make_rng(seed), rows
        try:
            yield
        finally:
            self.rng, self._rows = saved

    _rows = None

    def uniform_rows(self, shape, dtype):
        """:meth:`uniform` for a batch (axis 0 the images); inside ``fixed_rng(seed, rows=(start, stop, total))``
        the numbers are drawn for the whole batch of ``total`` and rows ``start:stop`` returned,
        so each process of a data-parallel run gets its part of the numbers one process would draw."""
        if self._rows is None:
            return self.uniform(shape, dtype)
        start, stop, total = self._rows
        if stop - start != shape[0]:
            raise ValueError(f"{self.name} backend: rows {start}:{stop} of a batch of {total} do not fit shape {tuple(shape)}")
        return self.uniform((total, *shape[1:]), dtype)[start:stop]

    def synchronize(self):
        """Wait for queued device work (for honest timings)."""

    def overflow_allowed(self):
        """A context in which a float overflow to +-inf, when it is the right answer, raises no warning."""
        return contextlib.nullcontext()

    # --- passes over a batch -----------------------------------------------
    def parallel(self, work, n, item_bytes):
        """Call ``work(batch)`` for slices ``batch`` of ``range(n)`` that together cover it once.

        For memory-bound passes over a batch (copies, element-wise arithmetic,
        comparisons) of ``item_bytes`` bytes per batch item: ``work`` may read
        anything but writes only the batch items of its slice, and calls no
        matrix product (BLAS keeps its own threads on the calling thread).
        Here: one call with the whole batch; the NumPy backend overrides it.
        """
        work(slice(0, n))

    def batched(self, fn, *arrays, shape=None, dtype=None):
        """A new array ``out`` filled by ``fn(*arrays, out=out)``, for an ``fn`` that treats each item
        of the batch (axis 0) on its own and writes every entry of ``out``.

        ``arrays`` share their first axis; ``out`` has ``shape`` and ``dtype``
        (default: those of ``arrays[0]``), the batch first; item ``i`` of
        ``out`` may depend on item ``i`` of each argument only. The NumPy
        backend calls ``fn`` on slices of the batch (see :meth:`parallel`);
        the result is the same.
        """
        out = self.xp.empty(arrays[0].shape if shape is None else shape, dtype=arrays[0].dtype if dtype is None else dtype)
        fn(*arrays, out=out)
        return out


class PendingChecks:
    """The checks queued by :meth:`Backend.deferred_checks`, judged together at each flush."""

    def __init__(self, backend):
        self.backend = backend
        self.checks = []

    def add(self, ok, message, error):
        self.checks.append((ok.all(), message, error))

    def flush(self, *values):
        """Fetch the queued checks and ``values`` (device arrays) in one transfer; raise for the
        first failed check; return the values on the host: a Python float for each scalar, a NumPy
        array of its dtype and shape for any other (integers exact up to 2^53, as float64 carries them)."""
        if not self.checks and not values:
            return []
        xp = self.backend.xp
        parts = [xp.asarray(v, dtype=xp.float64).reshape(-1) for v in values]
        parts += [ok.astype(xp.float64).reshape(1) for ok, _, _ in self.checks]
        fetched = self.backend.to_numpy(xp.concatenate(parts))
        results, offset = [], 0
        for value, part in zip(values, parts):
            host = fetched[offset:offset + part.size]
            offset += part.size
            results.append(float(host[0]) if value.ndim == 0 else host.reshape(value.shape).astype(value.dtype.name))
        checks, self.checks = self.checks, []
        for passed, (_, message, error) in zip(fetched[offset:], checks):  # the checks follow the values
            if not passed:
                raise error(message())
        return results


class NumpyBackend(Backend):
    """Arrays on the CPU with NumPy.

    On Linux with glibc, the first NumPy backend of a process asks malloc to
    keep freed memory for reuse, for the whole process (set
    ``$MINICNN_KEEP_FREED_MEMORY=0`` before importing minicnn to opt out).
    By default glibc gives every block above 32 MiB straight back to the
    system, so each training step's column matrices and activations cost a
    page fault per 4 KiB, again and again: 10-15% of a CPU training step,
    and more in evaluation.
    """

    name = "numpy"
    xp = np
    array_module = "numpy"

    def __init__(self, seed=None):
        super().__init__(seed)
        _keep_freed_memory()
        num_threads()  # a bad $MINICNN_NUM_THREADS fails here, before any work, not in the first pass over a batch

    def _as_strided(self, x, shape, strides):
        return np.lib.stride_tricks.as_strided(x, shape, strides, writeable=True)

    def overflow_allowed(self):
        return np.errstate(over="ignore")

    def _make_rng(self, seed):
        return np.random.default_rng(seed)

    def uniform(self, shape, dtype):
        return self.rng.random(shape, dtype=dtype)

    # A pass over an activation much larger than the caches runs at memory speed, and one core
    # draws a fraction of the machine's memory bandwidth. Slices that touch about this many bytes
    # (inputs and outputs) keep a layer's several passes over a slice in the cache, and run on
    # several cores (NumPy releases the GIL in its loops). Measured: 1-8 MiB all do, 32 MiB not.
    slice_bytes = 4 << 20

    def parallel(self, work, n, item_bytes):
        threads = num_threads()
        count = min(n, -(-max(n * item_bytes, 1) // self.slice_bytes))
        count = min(n, -(-count // threads) * threads)  # a multiple of the threads: equal shares
        bounds = [n * i // count for i in range(count + 1)] if n else []
        _run_on_threads(work, [slice(a, b) for a, b in zip(bounds, bounds[1:])], threads)

    def batched(self, fn, *arrays, shape=None, dtype=None):
        out = self.xp.empty(arrays[0].shape if shape is None else shape, dtype=arrays[0].dtype if dtype is None else dtype)
        if out.ndim == 0:
            fn(*arrays, out=out)
            return out

        def work(batch):
            fn(*(a[batch] for a in arrays), out=out[batch])
        self.parallel(work, len(out), item_bytes=(sum(a[:1].nbytes for a in arrays) + out[:1].nbytes))
        return out


class CupyBackend(Backend):
    """Arrays on an NVIDIA GPU with CuPy, allocated from CuPy's memory pools."""

    name = "cupy"
    array_module = "cupy"

    def __init__(self, seed=None):
        try:
            import cupy
        except ImportError as e:
            raise BackendError(
                f"the cupy backend needs CuPy, which is not installed or does not load ({e}): "
                'pip install ".[gpu]" in the minicnn checkout (the PyPI package named minicnn is another project), '
                "or the cupy-cudaXXx wheel matching your CUDA"
            ) from e
        try:
            devices = cupy.cuda.runtime.getDeviceCount()
        except Exception as e:  # no driver, no device, or a CUDA library CuPy cannot load
            raise BackendError(f"the cupy backend needs a CUDA GPU, and CuPy sees none on this machine ({e})") from e
        if devices == 0:
            raise BackendError("the cupy backend needs a CUDA GPU, and CuPy sees none on this machine")
        # Pools keep freed blocks for reuse: no cudaMalloc/cudaFree per array in the training loop.
        self.memory_pool = cupy.get_default_memory_pool()
        cupy.cuda.set_allocator(self.memory_pool.malloc)
        cupy.cuda.set_pinned_memory_allocator(cupy.get_default_pinned_memory_pool().malloc)
        self.xp = cupy
        super().__init__(seed)

    def to_numpy(self, a):
        return self.xp.asnumpy(a)

    def use_device(self, index):
        self.xp.cuda.Device(index % self.xp.cuda.runtime.getDeviceCount()).use()
        self.seed(self.seed_value)  # a generator draws on the device that was current when it was made

    def _as_strided(self, x, shape, strides):
        return self.xp.lib.stride_tricks.as_strided(x, shape, strides)

    def _make_rng(self, seed):
        # CuPy's RandomState takes one integer: derive it from a tuple as NumPy would.
        if seed is not None and not isinstance(seed, int):
            seed = int(np.random.SeedSequence(seed).generate_state(1, np.uint64)[0])
        return self.xp.random.RandomState(seed)

    def uniform(self, shape, dtype):
        return self.rng.random_sample(shape, dtype=dtype)

    def synchronize(self):
        self.xp.cuda.Device().synchronize()


_malloc_tuned = False


def _keep_freed_memory():
    """Once per process: make glibc's malloc serve large blocks from its heap and keep freed memory."""
    global _malloc_tuned
    if _malloc_tuned or os.environ.get("MINICNN_KEEP_FREED_MEMORY", "1") == "0":
        return
    _malloc_tuned = True
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-4, 0)          # M_MMAP_MAX: no mmap per large block
        libc.mallopt(-1, 1 << 30)    # M_TRIM_THRESHOLD: keep up to 1 GiB of free heap
    except (OSError, AttributeError):
        pass  # not glibc (macOS, Windows, musl): nothing to tune


# --- threads for the NumPy backend's passes over a batch ------------------------------
_num_threads = None
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
    """How many threads the NumPy backend's memory-bound passes over a batch use (BLAS has its own).

    Default: ``$MINICNN_NUM_THREADS``, else the number of CPUs this process
    may run on. A data-parallel run with one process per core sets
    ``MINICNN_NUM_THREADS=1`` before starting Python: then BLAS gets one
    thread too (``OPENBLAS_NUM_THREADS`` / ``OMP_NUM_THREADS`` /
    ``MKL_NUM_THREADS`` default to it, if minicnn is imported before NumPy). But
    1 when NumPy was imported before minicnn with ``$OPENBLAS_THREAD_TIMEOUT``
    unset: OpenBLAS's threads then busy-wait after every matrix product on
    the cores these threads would use, and two threads measured slower than
    one. Import minicnn first, or set the variable before starting Python.
    """
    global _num_threads
    if _num_threads is None:
        _num_threads = _default_num_threads()
    return _num_threads


def set_num_threads(n):
    """Use ``n`` threads (1: everything on the calling thread) for the passes over a batch; None: the default."""
    global _num_threads
    _num_threads = None if n is None else integer(n, "n (or None for the default)", "set_num_threads")


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


_BACKEND_CLASSES = {"numpy": NumpyBackend, "cupy": CupyBackend}
_instances = {}
_active = None
_seed = None
_host_rng = np.random.default_rng()


def get_backend(name=None):
    """The backend called ``name``, or the active one if ``name`` is None.

    The active backend starts as ``$MINICNN_BACKEND`` (default ``"numpy"``).
    A Backend object passed as ``name`` is returned as it is.
    """
    if isinstance(name, Backend):
        return name
    if name is None:
        if _active is None:
            use_backend(os.environ.get("MINICNN_BACKEND", "numpy"))
        return _active
    if not isinstance(name, str) or name not in _BACKEND_CLASSES:
        raise ValueError(f"unknown backend {name!r}; choose one of {sorted(_BACKEND_CLASSES)}")
    if name not in _instances:
        _instances[name] = _BACKEND_CLASSES[name](_seed)
    return _instances[name]


def use_backend(name):
    """Make ``name`` ("numpy" or "cupy") the default backend of objects built from now on.

    Objects already built keep theirs; pass ``backend=...`` to a constructor
    to choose one without changing the default.
    """
    global _active
    _active = get_backend(name)
    return _active


def available_backends():
    """Names of the backends that can run on this machine."""
    names = []
    for name in _BACKEND_CLASSES:
        try:
            get_backend(name)
        except BackendError:
            continue
        names.append(name)
    return names


def backend_of(a):
    """The backend whose library owns the array ``a``, known from the module of its type.

    Works in a fresh process (a CuPy array is recognised without a CuPy
    backend having been used before) and never imports a library itself.
    """
    module = type(a).__module__.split(".")[0]
    for name, cls in _BACKEND_CLASSES.items():
        if module == cls.array_module:
            return get_backend(name)
    if isinstance(a, np.ndarray):  # a subclass defined elsewhere (np.memmap's module is numpy too)
        return get_backend("numpy")
    raise TypeError(f"expected an array of one of the backends {sorted(_BACKEND_CLASSES)}, "
                    f"got {type(a).__module__}.{type(a).__name__}")


def seed(n):
    """Seed every random number minicnn draws, on every backend, for reproducible runs.

    Parameter initialization draws from a host generator (so a model built
    after ``seed(n)`` has the same weights on every backend); dropout draws
    from each backend's own device generator.
    """
    global _seed, _host_rng
    n = None if n is None else integer(n, "n (or None for fresh entropy)", "seed", minimum=0)
    _seed = n
    _host_rng = np.random.default_rng(n)
    for backend in _instances.values():
        backend.seed(n)


def host_rng():
    """The host NumPy Generator behind parameter initialization."""
    return _host_rng
