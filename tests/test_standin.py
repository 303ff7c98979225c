"""What only the CuPy stand-in (tests/cupy_standin.py) can show on a machine without a GPU: the device-to-host
transfers of training and evaluation, GPU-only bugs caught by planting them, and the stand-in's own strictness.

These tests import the stand-in themselves (the ``standin`` fixture), so they run in every run, plain or not.
"""
import math

import numpy as np
import pytest

import cupy_standin
import minicnn
from minicnn import SGD, Conv2D, Dense, Dropout, Flatten, ReLU, Sequential, SoftmaxCrossEntropy
from minicnn.data import Augment, DataLoader, Normalize
from minicnn.train import Trainer, evaluate

from conftest import CUPY
from test_seam import toy_images

cupy = cupy_standin.cupy


# --- transfers of training and evaluation -------------------------------------------------

class CountingLoader:
    """A loader (the protocol of minicnn.train) that notes the transfers so far, (to host, to device), as it gives
    each batch."""

    def __init__(self, loader):
        self.loader, self.seen = loader, []

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            self.seen.append((cupy_standin.transfers.to_host, cupy_standin.transfers.to_device))
            yield batch

    def state_dict(self):
        return self.loader.state_dict()

    def load_state_dict(self, state):
        self.loader.load_state_dict(state)


def toy_training(backend, loss_fn=None, n=48):
    """A small model with every kind of step work (dropout, augmentation), its loader and a Trainer; 6 batches."""
    images, labels = toy_images(n)
    minicnn.use_backend(backend)
    model = Sequential([Conv2D(1, 2, 3), ReLU(), Flatten(), Dropout(0.2), Dense(32, 2)])
    loader = CountingLoader(DataLoader(images, labels, 8, Normalize([0.3], [0.3], backend=backend), shuffle=True,
                                       augment=Augment(), backend=backend))
    trainer = Trainer(model, loss_fn or SoftmaxCrossEntropy(), SGD(model, lr=0.05), progress=False,
                      verbose=False)
    return model, loader, trainer


def transfers_per_step(loader, to="host"):
    """Transfers to the host (or "device") between consecutive batches: a training step each (and its refresh if any)."""
    return np.diff(np.array(loader.seen)[:, ["host", "device"].index(to)]).tolist()


def test_a_training_step_fetches_nothing_and_a_refresh_fetches_once(standin):
    model, loader, trainer = toy_training(standin)
    trainer.refresh_seconds = float("inf")  # refresh only at the end of each epoch
    trainer.fit(loader, epochs=2)
    assert transfers_per_step(loader) == [0] * 5 + [1] + [0] * 5  # forward, loss, backward, update: no transfer
    assert cupy_standin.transfers.to_host == 2  # the end of each epoch: deferred checks and metrics in one transfer
    # Uploads: the batch's images and labels, and augmentation's per-image draws (its sampling grids and brightness).
    assert transfers_per_step(loader, to="device") == [4] * 11
    trainer.refresh_seconds = 0.0  # refresh after every step
    cupy_standin.transfers.reset()
    loader.seen = []
    trainer.fit(loader, epochs=3)
    assert transfers_per_step(loader) == [1] * 5 and cupy_standin.transfers.to_host == len(loader)


def test_evaluation_fetches_once_whatever_the_number_of_batches(standin):
    """The loss, the labels and the probabilities of every batch come back in one transfer, at the end."""
    for n in (8, 48):
        model, loader, trainer = toy_training(standin, n=n)
        cupy_standin.transfers.reset()
        result = evaluate(model, SoftmaxCrossEntropy(backend=standin), loader)
        assert len(result["labels"]) == n and transfers_per_step(loader) == [0] * (len(loader) - 1)
        assert cupy_standin.transfers.to_host == 1
        assert result["labels"].dtype == np.int64 and result["probabilities"].dtype == np.float32


# --- planted GPU-only bugs: each passes on NumPy and is caught on the stand-in -------------------------

class DenseOnTheHost(Dense):
    def forward(self, x):
        return super().forward(np.asarray(x, dtype=np.float32))  # BUG: a NumPy call on a device array


class DropoutWithAHostMask(Dropout):
    def forward(self, x):
        if not self.training:
            return x
        keep = np.random.default_rng(0).random(x.shape) >= self.p  # BUG: the mask is made on the host
        self.mask = keep.astype(x.dtype) / x.dtype.type(1 - self.p)
        return x * self.mask


class LossReadEveryStep(SoftmaxCrossEntropy):
    def forward(self, logits, labels):
        value = super().forward(logits, labels)
        if not math.isfinite(float(value)):  # BUG: a device-to-host transfer (and a synchronization) every step
            raise ArithmeticError("the loss is not finite")
        return value


@pytest.mark.parametrize("bug", [DenseOnTheHost(4, 2), DropoutWithAHostMask(0.5)], ids=type)
def test_host_arrays_in_device_code_are_caught(standin, bug):
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    assert bug.forward(x).shape[0] == 3  # on NumPy the bug goes unnoticed
    with pytest.raises(TypeError, match="Implicit conversion to a NumPy array|Unsupported type"):
        bug.to(standin).forward(standin.asarray(x))


def test_reading_the_loss_every_step_is_caught(standin):
    model, loader, trainer = toy_training(standin, LossReadEveryStep(backend=standin))
    trainer.refresh_seconds = float("inf")
    trainer.fit(loader, epochs=1)
    assert transfers_per_step(loader) == [1] * 5  # the test above demands [0] * 5


# --- the stand-in's own strictness ---------------------------------------------------------------------

def test_numpy_refuses_device_arrays_as_cupy_does():
    a = cupy.asarray(np.arange(6.0).reshape(2, 3))
    with pytest.raises(TypeError, match=r"Implicit conversion to a NumPy array is not allowed\. Please use `\.get\(\)`"):
        np.asarray(a)
    with pytest.raises(TypeError):
        np.linalg.norm(a)  # a NumPy function the stand-in has no cupy function for
    clipped = np.clip(a, 1.0, 4.0)  # one it has (as CuPy, by __array_function__): runs on the device
    assert isinstance(clipped, cupy.ndarray) and clipped.tolist() == [[1.0, 1.0, 2.0], [3.0, 4.0, 4.0]]
    assert isinstance(np.exp(a), cupy.ndarray) and isinstance(np.float32(2) - a, cupy.ndarray)  # ufuncs likewise


MIXES = {"a + h": lambda a, h: a + h, "h * a": lambda a, h: h * a, "a += h": lambda a, h: a.__iadd__(h),
         "maximum": lambda a, h: cupy.maximum(a, h), "where": lambda a, h: cupy.where(a > 0, a, h),
         "concatenate": lambda a, h: cupy.concatenate([a, h]), "out=h": lambda a, h: cupy.multiply(a, 2, out=h),
         "a[...] = h": lambda a, h: a.__setitem__(Ellipsis, h), "a + 0-d h": lambda a, h: a + h[0, 0, ...]}


@pytest.mark.parametrize("mix", MIXES.values(), ids=MIXES.keys())
def test_host_arrays_in_device_math_raise(mix):
    a, h = cupy.ones((2, 3), dtype=np.float32), np.ones((2, 3), dtype=np.float32)
    with pytest.raises(TypeError):
        mix(a, h)


def test_scalars_mix_with_numpy_2_promotion():
    a = cupy.ones(3, dtype=np.float32)
    assert (a * 2.0).dtype == np.float32 and (a + 1).dtype == np.float32  # Python scalars are weak
    assert (a * np.float64(2)).dtype == np.float64 and (np.float32(2) * a).dtype == np.float32
    assert (a > 0.5).dtype == np.bool_ and (a.astype(np.int64) // 2).dtype == np.int64


@pytest.mark.parametrize("owner, name", [
    ("cupy", "RandomState"), ("cupy", "numpy"), ("cupy", "transfers"), ("cupy.random", "SeedSequence"),
    ("array", "setflags"),  # names CuPy lacks
    ("cupy", "sum"), ("cupy.random", "default_rng"), ("cupy.cuda", "Stream"),  # CuPy's, unused by minicnn: left out
    ("array", "tobytes")])
def test_names_the_stand_in_lacks_raise_attribute_error(owner, name):
    owner = {"cupy": cupy, "cupy.random": cupy.random, "cupy.cuda": cupy.cuda, "array": cupy.ones(2)}[owner]
    with pytest.raises(AttributeError):
        getattr(owner, name)


def test_transfers_are_counted():
    transfers = cupy_standin.transfers
    transfers.reset()
    a = cupy.asarray(np.arange(4.0))
    assert transfers.to_device == 1 and cupy.asarray(a) is a and transfers.to_device == 1
    a[np.array([0, 2])] = np.array([5.0, 6.0])  # CuPy copies a host index and values to the device
    assert transfers.to_device == 3 and transfers.to_host == 0
    reads = [a.get(), cupy.asnumpy(a), a.tolist(), a[0].item(), float(a[0]), int(a[1]), bool(a[1]), repr(a), str(a),
             f"{a[0]:.1f}"]
    assert transfers.to_host == len(reads) and reads[0].tolist() == [5.0, 1.0, 6.0, 3.0]
    a.sum(), a.reshape(2, 2), a[1:], len(a)  # device work and metadata: no transfer
    assert transfers.to_host == len(reads)


def test_views_are_views():
    a = cupy.zeros((1, 1, 4, 4), dtype=np.float32)
    a[0, 0, 1:3][...] = 1.0
    a.reshape(16)[0] = 2.0
    windows = cupy.lib.stride_tricks.as_strided(a, (1, 1, 2, 2, 2, 2), (64, 16, 32, 8, 16, 4))
    windows[0, 0, 1, 1] += 10.0
    cupy.multiply(a[0, 0, 3], 0.0, out=a[0, 0, 3])
    expected = np.zeros((4, 4), np.float32)
    expected[1:3], expected[0, 0] = 1.0, 2.0
    expected[2:4, 2:4] += 10.0
    expected[3] = 0.0
    np.testing.assert_array_equal(a.get()[0, 0], expected)


@pytest.mark.skipif(CUPY != "real", reason="needs real CuPy on a GPU")
def test_every_name_of_the_stand_in_is_real_cupys():
    import cupy as real

    def public(owner):
        return [name for name in vars(owner) if not name.startswith("_")]

    pairs = [(cupy, real), (cupy.ndarray, real.ndarray), (cupy.random.RandomState, real.random.RandomState),
             (cupy.cuda.Device, real.cuda.Device)]
    for stand_in, original in pairs:
        for name in public(stand_in):
            value = getattr(stand_in, name)
            assert hasattr(original, name), f"{original.__name__}.{name}"
            if isinstance(value, type(cupy)):  # a sub-module: cupy.random, cupy.lib.stride_tricks, ...
                pairs.append((value, getattr(original, name)))
