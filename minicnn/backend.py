"""Array backends: the one module that knows about NumPy and CuPy.

A backend object exposes the array namespace ``xp`` (``numpy`` or ``cupy``)
and the few primitives whose spelling differs between array libraries:

* ``windows(x, kernel, stride)``   strided sliding-window view (no copy)
* ``asarray(a, dtype)`` / ``to_numpy(a)``  move data to / from the host
* ``uniform(shape, dtype)``        seeded random numbers on the device
* ``check(ok, message)``           a value check that can wait for the next host transfer (:mod:`minicnn.checks`)
* ``batched(fn, *arrays)`` / ``parallel(work, n, item_bytes)``  a memory-bound pass over a batch,
  slice by slice: on the CPU, cache-sized slices on a few threads (:mod:`minicnn.threads`)
* ``small_products()``             a context for many small matrix products (on the CPU: one BLAS thread)

The rule of the whole package: an object that creates arrays holds the
backend it was built with (every such class takes ``backend=None``, meaning
the active one, see :func:`use_backend`: the only place the library reads
it); a free function takes the backend from its array argument with
:func:`backend_of`. To add a third array
library, write one more :class:`Backend` subclass here and register it in
``_BACKEND_CLASSES``.
"""
import contextlib
import os

import numpy as np

from . import threads
from .checks import Checks, PendingChecks  # noqa: F401  (what deferred_checks yields)
from .malloc import keep_freed_memory
from .threads import num_threads, set_num_threads  # noqa: F401  (importable from here, as before)
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
        self._checks = Checks(self)

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

    # --- value checks (minicnn.checks) -------------------------------------
    def check(self, ok, message, error=ValueError):
        """Raise ``error(message())`` unless every entry of the boolean array ``ok`` is true.

        Reading ``ok`` waits for the device; inside :meth:`deferred_checks` the check is queued
        instead and judged at the block's next flush, with whatever else is fetched then.
        """
        self._checks.check(ok, message, error)

    def deferred_checks(self):
        """A block whose :meth:`check` calls wait for one transfer: it yields a
        :class:`~minicnn.checks.PendingChecks`, whose ``flush(*values)`` fetches the queued checks
        and ``values`` (device arrays) at once, raises for the first failed check and returns the
        values on the host; what is still queued when the block ends is flushed then."""
        return self._checks.deferred()

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
        Here one call, the whole batch; the NumPy backend's: :func:`minicnn.threads.parallel`.
        """
        work(slice(0, n))

    def small_products(self):
        """A context for a batch of many small matrix products (a grouped convolution's, one per group): here
        nothing; the NumPy backend's keeps BLAS on one thread (:func:`minicnn.threads.one_blas_thread`)."""
        return contextlib.nullcontext()

    def batched(self, fn, *arrays, shape=None, dtype=None):
        """A new array ``out`` filled by ``fn(*arrays, out=out)``, for an ``fn`` that treats each item
        of the batch (axis 0) on its own and writes every entry of ``out``.

        ``arrays`` share their first axis; ``out`` has ``shape`` and ``dtype``
        (default: those of ``arrays[0]``), the batch first; item ``i`` of
        ``out`` may depend on item ``i`` of each argument only. ``fn`` is
        called on the slices of the batch that :meth:`parallel` makes (on the
        CuPy backend, one: the whole batch); the result is the same.
        """
        out = self.xp.empty(arrays[0].shape if shape is None else shape, dtype=arrays[0].dtype if dtype is None else dtype)
        if out.ndim == 0:
            fn(*arrays, out=out)
            return out

        def work(batch):
            fn(*(a[batch] for a in arrays), out=out[batch])
        self.parallel(work, len(out), item_bytes=(sum(a[:1].nbytes for a in arrays) + out[:1].nbytes))
        return out


class NumpyBackend(Backend):
    """Arrays on the CPU with NumPy. The first one of a process tunes malloc for the whole
    process (:mod:`minicnn.malloc`) and applies ``$MINICNN_NUM_THREADS`` (:func:`minicnn.threads.prepare`)."""

    name = "numpy"
    xp = np
    array_module = "numpy"

    def __init__(self, seed=None):
        super().__init__(seed)
        keep_freed_memory()
        threads.prepare()  # a bad $MINICNN_NUM_THREADS fails here, before any work, not in the first pass over a batch

    def _as_strided(self, x, shape, strides):
        return np.lib.stride_tricks.as_strided(x, shape, strides, writeable=True)

    def overflow_allowed(self):
        return np.errstate(over="ignore")

    def _make_rng(self, seed):
        return np.random.default_rng(seed)

    def uniform(self, shape, dtype):
        return self.rng.random(shape, dtype=dtype)

    def parallel(self, work, n, item_bytes):
        threads.parallel(work, n, item_bytes)

    def small_products(self):
        return threads.one_blas_thread()


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
