"""A strict CPU stand-in for ``cupy``, for the tests only: CuPy's rules where host and device meet, run by NumPy.

Installed as ``sys.modules["cupy"]`` (``MINICNN_TEST_CUPY=standin``, see
tests/conftest.py), it lets minicnn's cupy backend run on a machine without
a GPU. Its ``ndarray`` holds a NumPy array (views stay views, dtypes follow
NumPy 2's promotion, as CuPy's do) and behaves as ``cupy.ndarray`` does at
the boundary with the host, as CuPy 14.2.0's ``cupy/_core/core.pyx``,
``_kernel.pyx``, ``_scalar.pyx`` and ``_routines_indexing.pyx`` do:

* ``numpy.asarray(a)`` raises TypeError ("Implicit conversion to a NumPy
  array is not allowed..."); a NumPy function or ufunc given a device array
  runs the cupy function of the same name (``__array_function__`` /
  ``__array_ufunc__``) if this module has one (or, for a ufunc, if an
  operator uses it), else raises TypeError;
* a NumPy array (0-d included) or a list of numbers in device arithmetic, in
  a cupy function or as ``out=`` raises TypeError; Python and NumPy scalars
  are accepted; no floating-point warnings (CuPy's kernels give none);
* ``a[...] = host_array`` raises TypeError (CuPy refuses it, gh-2079), while a
  host index array or the values of an advanced-index assignment are copied
  to the device, as CuPy silently does: counted in ``transfers.to_device``;
* every transfer is counted: ``asarray`` of host data (to the device);
  ``get``, ``asnumpy``, ``item``, ``tolist``, ``float``/``int``/``bool``,
  ``repr``/``str``/``format`` (to the host).

Names: only those minicnn, its tests and examples use on the cupy backend,
each checked to exist in CuPy 14.2.0 (the newest release of ``cupy-cuda12x``,
the ``[gpu]`` extra: ``cupy/__init__.py``, ``cupy/random``, ``cupy/lib``,
``cupy/cuda`` of its wheel, and the ``ndarray`` methods and attributes of
``cupy/_core/core.pyx``/``core.pxd`` at the tag v14.2.0 of github.com/cupy/cupy).
Any other name raises AttributeError, as a name CuPy lacks would on a GPU;
a name minicnn starts using must be checked against CuPy, then added here.

What it cannot show: kernels, CUDA errors, device memory, streams, speed.
"""
import functools
import types

import numpy

__version__ = "14.2.0"  # the CuPy release whose names and rules this module follows


class Transfers:
    """Counts of host <-> device copies since the last :meth:`reset`; ``dtypes``: every dtype of a device array made."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.to_host = 0
        self.to_device = 0
        self.dtypes = set()


transfers = Transfers()

_IMPLICIT = ("Implicit conversion to a NumPy array is not allowed. "
             "Please use `.get()` to construct a NumPy array explicitly.")


def _is_scalar(x):
    """What CuPy's kernels accept besides device arrays: Python scalars and NumPy scalars (``_scalar.pyx``)."""
    return type(x) in (int, float, bool, complex) or isinstance(x, numpy.generic)


def _device(x, where):
    """The NumPy array behind a device array ``x``; scalars, dtypes, shapes and axes pass, and sequences of device
    arrays (concatenate's); host data (a NumPy array, a list of numbers) raises TypeError, as in CuPy's kernels."""
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, (list, tuple)):
        items = type(x)(_device(item, where) for item in x)
        if all(isinstance(item, ndarray) for item in x) or all(isinstance(item, (int, numpy.integer)) for item in x):
            return items
    elif not isinstance(x, numpy.ndarray):
        return x
    raise TypeError(f"{where}: Unsupported type {type(x)} (host data where CuPy needs a device array)")


def _wrap(out):
    """Device arrays for NumPy's results; a NumPy scalar result becomes a 0-d array, as CuPy returns."""
    if isinstance(out, numpy.ndarray):
        return ndarray._of(out)
    if isinstance(out, numpy.generic):
        return ndarray._of(numpy.asarray(out))
    if isinstance(out, tuple):
        return tuple(_wrap(item) for item in out)
    return out


def _call(func, name, args, kwargs):
    """``func`` (NumPy's) on the arrays behind device arguments; ``out=`` must be a device array and is returned."""
    out = kwargs.get("out")
    if out is not None and not isinstance(out, ndarray):
        raise TypeError(f"cupy.{name}: Output arguments must be cupy.ndarray, got {type(out)}")
    args = [_device(a, f"cupy.{name}") for a in args]
    kwargs = {k: _device(v, f"cupy.{name}") for k, v in kwargs.items()}
    with numpy.errstate(all="ignore"):  # CuPy's kernels never warn (an overflow to inf, say)
        result = func(*args, **kwargs)
    return out if out is not None else _wrap(result)


def _routine(name):
    func = getattr(numpy, name)

    @functools.wraps(func)
    def routine(*args, **kwargs):
        return _call(func, name, args, kwargs)
    routine.__module__ = "cupy"
    return routine


def _to_device(a, dtype=None):
    if isinstance(a, ndarray):
        return a if dtype is None else a.astype(dtype, copy=False)
    transfers.to_device += 1
    return ndarray._of(numpy.array(a, dtype=dtype))


def _binary(op, name):
    def method(self, other):
        if not (isinstance(other, (ndarray, numpy.ndarray)) or _is_scalar(other)):
            return NotImplemented
        with numpy.errstate(all="ignore"):
            return _wrap(op(self._a, _device(other, f"cupy.ndarray.{name}")))
    return method


def _reflected(op, name):
    def method(self, other):
        if not (isinstance(other, numpy.ndarray) or _is_scalar(other)):
            return NotImplemented
        with numpy.errstate(all="ignore"):
            return _wrap(op(_device(other, f"cupy.ndarray.{name}"), self._a))
    return method


def _inplace(op, name):
    def method(self, other):
        with numpy.errstate(all="ignore"):
            op(self._a, _device(other, f"cupy.ndarray.{name}"), out=self._a)
        return self
    return method


def _method(name):
    def method(self, *args, **kwargs):
        return _call(getattr(self._a, name), f"ndarray.{name}", args, kwargs)
    method.__name__ = name
    return method


def _host_read(convert):
    def method(self, *args):
        transfers.to_host += 1
        return convert(self._a, *args)
    return method


class ndarray:
    """A device array: a NumPy array that the host may only read through counted transfers."""

    __slots__ = ("_a",)
    __hash__ = None

    def __init__(self, shape, dtype=float):
        self._a = numpy.empty(shape, dtype)
        transfers.dtypes.add(self._a.dtype)

    @classmethod
    def _of(cls, a):
        self = cls.__new__(cls)
        self._a = a
        transfers.dtypes.add(a.dtype)
        return self

    # --- where NumPy meets the device (core.pyx) --------------------------------------
    def __array__(self, dtype=None, copy=None):
        raise TypeError(_IMPLICIT)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        # The ufuncs behind the operators are CuPy's too: numpy.float32(2) - a runs cupy.subtract.
        func = getattr(cupy, ufunc.__name__, None) or _OPERATOR_UFUNCS.get(ufunc.__name__)
        if method != "__call__" or func is None:
            return NotImplemented
        if "out" in kwargs:
            out, = kwargs["out"]
            kwargs["out"] = out
        return func(*inputs, **kwargs)

    def __array_function__(self, func, types, args, kwargs):
        try:
            module = functools.reduce(getattr, func.__module__.split(".")[1:], cupy)
            cupy_func = getattr(module, func.__name__)
        except AttributeError:
            return NotImplemented
        if not all(issubclass(t, (ndarray, numpy.ndarray)) for t in types):
            return NotImplemented
        return cupy_func(*args, **kwargs)

    # --- transfers to the host ------------------------------------------------------------
    def get(self):
        """A NumPy copy: the explicit device-to-host transfer."""
        transfers.to_host += 1
        return self._a.copy()

    item = _host_read(numpy.ndarray.item)
    tolist = _host_read(numpy.ndarray.tolist)
    __float__ = _host_read(float)
    __int__ = _host_read(int)
    __bool__ = _host_read(bool)
    __repr__ = _host_read(repr)
    __str__ = _host_read(str)
    __format__ = _host_read(format)

    # --- attributes ------------------------------------------------------------------------
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    strides = property(lambda self: self._a.strides)
    nbytes = property(lambda self: self._a.nbytes)
    T = property(lambda self: ndarray._of(self._a.T))
    flags = property(lambda self: types.SimpleNamespace(  # cupy._core.flags.Flags: these three only
        c_contiguous=self._a.flags.c_contiguous, f_contiguous=self._a.flags.f_contiguous, owndata=self._a.flags.owndata))

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        return (ndarray._of(self._a[i, ...]) for i in range(len(self._a)))

    def __copy__(self):
        return self.copy()

    def __deepcopy__(self, memo):
        return self.copy()

    # --- indexing (_routines_indexing.pyx) ----------------------------------------------
    @staticmethod
    def _index(key):
        """Device indices; host index arrays (and lists) are copied to the device, as CuPy does."""
        items = key if isinstance(key, tuple) else (key,)
        converted = []
        for k in items:
            if isinstance(k, ndarray):
                k = k._a
            elif isinstance(k, (numpy.ndarray, list)):
                transfers.to_device += 1
                k = numpy.asarray(k)
            converted.append(k)
        advanced = any(isinstance(k, numpy.ndarray) for k in converted)
        return (tuple(converted) if isinstance(key, tuple) else converted[0]), advanced

    def __getitem__(self, key):
        key, advanced = self._index(key)
        out = self._a[key]
        if isinstance(out, numpy.generic):  # CuPy returns a 0-d view, NumPy a scalar copy
            out = self._a[(key if isinstance(key, tuple) else (key,)) + (Ellipsis,)]
        return ndarray._of(out)

    def __setitem__(self, key, value):
        key, advanced = self._index(key)
        if isinstance(value, (numpy.ndarray, list, tuple)):
            if not advanced:
                raise TypeError(f"cupy.ndarray.__setitem__: Unsupported type {type(value)} "
                                "(CuPy refuses assignment from host arrays, see cupy gh-2079)")
            transfers.to_device += 1
        self._a[key] = value._a if isinstance(value, ndarray) else value


# --- operators: CuPy's ufuncs, with NumPy 2's promotion ---------------------------------------------
for _name, _op in [("neg", numpy.negative), ("pos", numpy.positive), ("abs", numpy.absolute), ("invert", numpy.invert)]:
    setattr(ndarray, f"__{_name}__", lambda self, op=_op: ndarray._of(op(self._a)))
_OPERATOR_UFUNCS = {}
for _name, _op in [("add", numpy.add), ("sub", numpy.subtract), ("mul", numpy.multiply), ("truediv", numpy.true_divide),
                   ("floordiv", numpy.floor_divide), ("mod", numpy.remainder), ("pow", numpy.power),
                   ("matmul", numpy.matmul), ("and", numpy.bitwise_and), ("or", numpy.bitwise_or),
                   ("xor", numpy.bitwise_xor)]:
    setattr(ndarray, f"__{_name}__", _binary(_op, f"__{_name}__"))
    setattr(ndarray, f"__r{_name}__", _reflected(_op, f"__r{_name}__"))
    _OPERATOR_UFUNCS[_op.__name__] = _routine(_op.__name__)
    if _name != "matmul":
        setattr(ndarray, f"__i{_name}__", _inplace(_op, f"__i{_name}__"))
for _name, _op in [("eq", numpy.equal), ("ne", numpy.not_equal), ("lt", numpy.less), ("le", numpy.less_equal),
                   ("gt", numpy.greater), ("ge", numpy.greater_equal)]:
    setattr(ndarray, f"__{_name}__", _binary(_op, f"__{_name}__"))
    _OPERATOR_UFUNCS[_op.__name__] = _routine(_op.__name__)

# ndarray methods: those minicnn uses, all in CuPy 14.2.0's core.pyx.
for _name in ("all", "argmax", "astype", "copy", "fill", "max", "mean", "min", "reshape", "sum", "swapaxes",
              "transpose"):
    setattr(ndarray, _name, _method(_name))
ndarray.__module__ = "cupy._core.core"  # where cupy.ndarray lives: minicnn.backend_of knows it by this


# --- the namespace: what ``import cupy`` gives ----------------------------------------------------
def asarray(a, dtype=None):
    """A device array of ``a``: no copy if it is one already, else a counted host-to-device transfer."""
    return _to_device(a, dtype)


def asnumpy(a):
    """A NumPy array of ``a``: a counted device-to-host transfer if ``a`` is a device array."""
    return a.get() if isinstance(a, ndarray) else numpy.asarray(a)


class RandomState:
    """cupy.random.RandomState: its own stream (CuPy's cuRAND numbers differ from NumPy's anyway)."""

    def __init__(self, seed=None):
        self._rng = numpy.random.default_rng(seed)

    def random_sample(self, size=None, dtype=float):
        return ndarray._of(numpy.asarray(self._rng.random(size, dtype=dtype)))


def as_strided(x, shape=None, strides=None):
    return ndarray._of(numpy.lib.stride_tricks.as_strided(_device(x, "as_strided"), shape, strides, writeable=True))


class Device:
    """cupy.cuda.Device: the stand-in has one."""

    def __init__(self, device=None):
        self.id = 0 if device is None else device

    def use(self):
        if self.id != 0:
            raise RuntimeError("cudaErrorInvalidDevice: invalid device ordinal")

    def synchronize(self):
        pass


class _MemoryPool:
    def malloc(self, size):
        raise RuntimeError("the CuPy stand-in allocates no device memory")


def _namespace(name, **members):
    module = types.ModuleType(name)
    module.__dict__.update(members)
    return module


_memory_pool, _pinned_memory_pool = _MemoryPool(), _MemoryPool()
# The stand-in itself, to install as sys.modules["cupy"]: these names only.
cupy = _namespace(
    "cupy", __version__=__version__, ndarray=ndarray, asarray=asarray, asnumpy=asnumpy,
    # NumPy's dtypes, which CuPy re-exports as they are
    dtype=numpy.dtype, float32=numpy.float32, float64=numpy.float64, int64=numpy.int64,
    get_default_memory_pool=lambda: _memory_pool, get_default_pinned_memory_pool=lambda: _pinned_memory_pool,
    random=_namespace("cupy.random", RandomState=RandomState),
    lib=_namespace("cupy.lib", stride_tricks=_namespace("cupy.lib.stride_tricks", as_strided=as_strided)),
    cuda=_namespace("cupy.cuda", Device=Device, set_allocator=lambda allocator=None: None,
                    set_pinned_memory_allocator=lambda allocator=None: None,
                    runtime=_namespace("cupy.cuda.runtime", getDeviceCount=lambda: 1)),
    **{name: _routine(name) for name in (
        "abs", "add", "arange", "ascontiguousarray", "broadcast_to", "clip", "concatenate", "empty", "exp", "floor",
        "full", "isfinite", "log", "log1p", "maximum", "minimum", "multiply", "ones", "ones_like", "sqrt", "stack",
        "where", "zeros")})


if __name__ == "__main__":
    # python tests/cupy_standin.py MODULE|SCRIPT.py ARGS...: ``python -m MODULE ARGS...`` (or the script) with the
    # stand-in as cupy, e.g. the command line: python tests/cupy_standin.py minicnn --backend cupy train ...
    import atexit
    import runpy
    import sys
    sys.modules["cupy"] = cupy
    atexit.register(lambda: print(f"cupy stand-in: {transfers.to_device} host-to-device and {transfers.to_host} "
                                  "device-to-host transfers", file=sys.stderr))
    del sys.argv[0]
    if sys.argv[0].endswith(".py"):
        runpy.run_path(sys.argv[0], run_name="__main__")
    else:
        runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
