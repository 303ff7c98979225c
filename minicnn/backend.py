"""Array backends: the one module that knows about NumPy and CuPy.

A backend object exposes the array namespace ``xp`` (``numpy`` or ``cupy``)
and the few primitives whose spelling differs between array libraries:

* ``windows(x, kernel, stride)``   strided sliding-window view (no copy)
* ``scatter_add(a, index, values)`` unbuffered ``a[index] += values``
* ``asarray(a, dtype)`` / ``to_numpy(a)``  move data to / from the host
* ``uniform(shape, dtype)``        seeded random numbers on the device

Layers hold the backend they were built on and never import numpy or cupy
themselves. To add a third array library, write one more class here and
register it in ``_BACKEND_CLASSES``.
"""
import contextlib
import ctypes
import os

import numpy as np


class BackendError(RuntimeError):
    """A backend was asked for that cannot run here."""


class Backend:
    """Common code of the backends; subclasses set ``name``, ``xp`` and ``rng``."""

    name = "?"
    xp = None

    def __init__(self, seed=None):
        self.seed(seed)

    def __repr__(self):
        return f"<minicnn {self.name} backend>"

    # --- arrays ----------------------------------------------------------
    def is_native(self, a):
        """True if ``a`` is an array of this backend's library."""
        return isinstance(a, self.xp.ndarray)

    def asarray(self, a, dtype=None):
        """Copy host data (or a native array) onto this backend's device."""
        return self.xp.asarray(a, dtype=dtype)

    def to_numpy(self, a):
        """A NumPy array on the host holding the values of ``a``."""
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

    def scatter_add(self, a, index, values):
        """``a[index] += values`` in place, adding repeated indices each time."""
        raise NotImplementedError

    # --- random numbers --------------------------------------------------
    def seed(self, seed):
        """Re-seed this backend's device random number generator."""
        self.rng = self._make_rng(seed)

    def uniform(self, shape, dtype):
        """Uniform random numbers in [0, 1) of the given shape and dtype."""
        raise NotImplementedError

    @contextlib.contextmanager
    def fixed_rng(self, seed):
        """Draw from a generator seeded with ``seed`` inside the block only.

        Lets a caller replay the same random numbers (a dropout mask, say)
        without disturbing the global random stream.
        """
        saved = self.rng
        self.rng = self._make_rng(seed)
        try:
            yield
        finally:
            self.rng = saved

    def synchronize(self):
        """Wait for queued device work (for honest timings)."""


class NumpyBackend(Backend):
    """Arrays on the CPU with NumPy.

    On Linux with glibc it asks malloc to keep freed memory for reuse (unless
    ``$MINICNN_KEEP_FREED_MEMORY`` is ``0``). By default glibc gives every
    array above 32 MiB straight back to the system, so each training step's
    column matrices and activations cost a page fault per 4 KiB, again and
    again: 10-15% of a CPU training step, and more in evaluation.
    """

    name = "numpy"
    xp = np

    def __init__(self, seed=None):
        super().__init__(seed)
        if os.environ.get("MINICNN_KEEP_FREED_MEMORY", "1") != "0":
            _keep_freed_memory()

    def _as_strided(self, x, shape, strides):
        return np.lib.stride_tricks.as_strided(x, shape, strides, writeable=True)

    def scatter_add(self, a, index, values):
        np.add.at(a, index, values)

    def _make_rng(self, seed):
        return np.random.default_rng(seed)

    def uniform(self, shape, dtype):
        return self.rng.random(shape, dtype=dtype)


class CupyBackend(Backend):
    """Arrays on an NVIDIA GPU with CuPy, allocated from CuPy's memory pools."""

    name = "cupy"

    def __init__(self, seed=None):
        try:
            import cupy
            import cupyx
        except ImportError as e:
            raise BackendError(
                f"the cupy backend needs CuPy, which is not installed or does not load ({e}): "
                "pip install 'minicnn[gpu]' (or the cupy-cudaXXx wheel matching your CUDA)"
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
        self._cupyx = cupyx
        super().__init__(seed)

    def to_numpy(self, a):
        return self.xp.asnumpy(a)

    def _as_strided(self, x, shape, strides):
        return self.xp.lib.stride_tricks.as_strided(x, shape, strides)

    def scatter_add(self, a, index, values):
        self._cupyx.scatter_add(a, index, values)

    def _make_rng(self, seed):
        return self.xp.random.RandomState(seed)

    def uniform(self, shape, dtype):
        return self.rng.random_sample(shape, dtype=dtype)

    def synchronize(self):
        self.xp.cuda.Device().synchronize()


def _keep_freed_memory():
    """Make glibc's malloc serve large blocks from its heap and not return freed memory to the system."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-4, 0)          # M_MMAP_MAX: no mmap per large block
        libc.mallopt(-1, 1 << 30)    # M_TRIM_THRESHOLD: keep up to 1 GiB of free heap
    except (OSError, AttributeError):
        pass  # not glibc (macOS, Windows, musl): nothing to tune


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
    if name not in _BACKEND_CLASSES:
        raise ValueError(f"unknown backend {name!r}; choose one of {sorted(_BACKEND_CLASSES)}")
    if name not in _instances:
        _instances[name] = _BACKEND_CLASSES[name](_seed)
    return _instances[name]


def use_backend(name):
    """Make ``name`` ("numpy" or "cupy") the backend that new layers and data use."""
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
    """The backend whose library owns the array ``a``."""
    for name in _BACKEND_CLASSES:
        backend = _instances.get(name)
        if backend is not None and backend.is_native(a):
            return backend
    if isinstance(a, np.ndarray):
        return get_backend("numpy")
    raise TypeError(f"expected a NumPy or CuPy array, got {type(a).__name__}")


def seed(n):
    """Seed every random number minicnn draws, on every backend, for reproducible runs.

    Parameter initialization draws from a host generator (so a model built
    after ``seed(n)`` has the same weights on every backend); dropout draws
    from each backend's own device generator.
    """
    global _seed, _host_rng
    _seed = n
    _host_rng = np.random.default_rng(n)
    for backend in _instances.values():
        backend.seed(n)


def host_rng():
    """The host NumPy Generator behind parameter initialization."""
    return _host_rng
