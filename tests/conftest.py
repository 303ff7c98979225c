import os
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from PIL import Image

import cupy_standin
import minicnn

settings.register_profile(
    "minicnn", max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
settings.load_profile("minicnn")


def _cupy_of_the_tests():
    """Which CuPy the cupy cases run on: "real" (CuPy with a GPU, always preferred), "standin" or None (skipped).

    ``MINICNN_TEST_CUPY=standin`` installs tests/cupy_standin.py as ``cupy``
    where real CuPy cannot run, before any backend is probed.
    """
    choice = os.environ.get("MINICNN_TEST_CUPY", "")
    if choice not in ("", "standin"):
        raise pytest.UsageError(f"MINICNN_TEST_CUPY must be 'standin' or unset, got {choice!r}")
    try:
        import cupy
        if cupy is cupy_standin.cupy:  # installed by an earlier import of this file
            return "standin"
        if cupy.cuda.runtime.getDeviceCount() > 0:
            return "real"
    except Exception:  # not installed, no driver, no device
        pass
    if choice == "standin":
        sys.modules["cupy"] = cupy_standin.cupy
        return "standin"
    return None


CUPY = _cupy_of_the_tests()
_AVAILABLE = minicnn.available_backends()
BACKENDS = [
    pytest.param(name, marks=pytest.mark.skipif(name not in _AVAILABLE, reason=f"{name} backend not available here"))
    for name in ("numpy", "cupy")
]


def pytest_report_header(config):
    return [_cupy_line()]


def pytest_terminal_summary(terminalreporter):
    terminalreporter.write_line(_cupy_line())  # also under -q, which hides the header


def _cupy_line():
    if CUPY == "standin":
        return ("cupy cases: on a CPU stand-in for CuPy (tests/cupy_standin.py: NumPy underneath, CuPy "
                f"{cupy_standin.__version__}'s names and host/device rules); no GPU code executes")
    if CUPY == "real":
        import cupy
        return f"cupy cases: real CuPy {cupy.__version__} on {cupy.cuda.runtime.getDeviceCount()} GPU(s)"
    return "cupy cases: skipped, no CuPy with a GPU here (MINICNN_TEST_CUPY=standin runs them on a CPU stand-in)"


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


@pytest.fixture
def standin(monkeypatch):
    """minicnn's cupy backend on the CuPy stand-in for this test (even where real CuPy runs), its counters at zero."""
    monkeypatch.setitem(sys.modules, "cupy", cupy_standin.cupy)
    monkeypatch.setattr(minicnn.backend, "_active", minicnn.get_backend())
    monkeypatch.setitem(minicnn.backend._instances, "cupy", minicnn.backend.CupyBackend(minicnn.backend._seed))
    cupy_standin.transfers.reset()
    return minicnn.get_backend("cupy")


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
