import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from PIL import Image

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


@pytest.fixture(scope="session", autouse=True)
def image_cache_of_the_session(tmp_path_factory):
    """The command line caches decoded images (minicnn.data.cache): in a folder of this session, not the user's."""
    saved = os.environ.get("MINICNN_CACHE_DIR")
    os.environ["MINICNN_CACHE_DIR"] = str(tmp_path_factory.mktemp("image-cache"))
    yield
    if saved is None:
        del os.environ["MINICNN_CACHE_DIR"]
    else:
        os.environ["MINICNN_CACHE_DIR"] = saved


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


class InstrumentedArray(np.ndarray):
    """A NumPy array that counts its conversions to host numbers and records the dtype of every array made from it."""

    transfers = 0
    dtypes = []

    def __array_finalize__(self, obj):
        InstrumentedArray.dtypes.append(self.dtype)

    def _count(self):
        InstrumentedArray.transfers += 1

    def __float__(self):
        self._count()
        return float(self.view(np.ndarray))

    def __int__(self):
        self._count()
        return int(self.view(np.ndarray))

    def __bool__(self):
        self._count()
        return bool(self.view(np.ndarray))

    def item(self, *args):
        self._count()
        return self.view(np.ndarray).item(*args)

    def tolist(self):
        self._count()
        return self.view(np.ndarray).tolist()


class _InstrumentedNamespace:
    """numpy, except that the arrays its functions return are InstrumentedArrays: a stand-in for a device library."""

    def __getattr__(self, name):
        value = getattr(np, name)
        if not callable(value) or isinstance(value, type):
            return value

        def wrapped(*args, **kwargs):
            out = value(*args, **kwargs)
            return out.view(InstrumentedArray) if type(out) is np.ndarray else out
        return wrapped


class InstrumentedBackend(minicnn.backend.NumpyBackend):
    """A third backend, written as the backend module says one is added: one class and one registry entry.

    Its "device" arrays are InstrumentedArrays, so a test can count every
    device-to-host transfer (``to_numpy`` and float/int/bool conversions)
    and see every dtype the device computed in.
    """

    name = "instrumented"
    xp = _InstrumentedNamespace()
    array_module = __name__  # the module that defines InstrumentedArray

    def is_native(self, a):
        return isinstance(a, np.ndarray)

    def asarray(self, a, dtype=None):
        return np.array(a, dtype=dtype).view(InstrumentedArray)

    def to_numpy(self, a):
        InstrumentedArray.transfers += 1
        return np.asarray(a).view(np.ndarray)

    def _as_strided(self, x, shape, strides):
        return np.lib.stride_tricks.as_strided(x, shape, strides, writeable=True, subok=True)


@pytest.fixture
def instrumented(monkeypatch):
    """The instrumented backend, registered for the test; its counters start at zero."""
    monkeypatch.setitem(minicnn.backend._BACKEND_CLASSES, "instrumented", InstrumentedBackend)
    monkeypatch.setattr(InstrumentedArray, "transfers", 0)
    monkeypatch.setattr(InstrumentedArray, "dtypes", [])
    yield minicnn.get_backend("instrumented")
    minicnn.backend._instances.pop("instrumented", None)


def make_image_folder(root, per_class=3, corrupt=False):
    """root/{blue,red}/*.png of assorted sizes: red images are reddish, blue ones bluish."""
    rng = np.random.default_rng(0)
    for name, channel in (("blue", 2), ("red", 0)):
        os.makedirs(root / name)
        for i in range(per_class):
            h, w = rng.integers(12, 30, 2)
            pixels = rng.integers(0, 80, (h, w, 3)).astype(np.uint8)
            pixels[..., channel] += 150
            Image.fromarray(pixels).save(root / name / f"{i}.{'png' if i % 2 else 'jpg'}")
    if corrupt:
        (root / "red" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    return root


@pytest.fixture(scope="session")
def photos(tmp_path_factory):
    """DATA_DIR/{train,val}/{blue,red}/ with 6 and 3 small photos per class, for the command line (read only)."""
    root = tmp_path_factory.mktemp("photos")
    make_image_folder(root / "train", per_class=6)
    make_image_folder(root / "val", per_class=3)
    return root
