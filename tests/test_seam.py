"""The backend seam: objects hold the backend they were built with, free functions take it from their
arrays; one backward contract; the loader protocol (the device transfers of training: test_standin.py)."""
import os
import subprocess
import sys

import numpy as np
import pytest

import minicnn
from minicnn import (SGD, Conv2D, Dense, Flatten, Layer, ReLU, Sequential, SoftmaxCrossEntropy,
                     gradcheck)
from minicnn.architectures import ARCHITECTURES, build
from minicnn.data import Augment, DataLoader, Normalize
from minicnn.trace import Tracer
from minicnn.train import Trainer

import cupy_standin
from conftest import host, randn


def test_backend_of_knows_a_cupy_array_by_its_module_without_importing_cupy():
    code = """
import sys, numpy as np, minicnn
from minicnn.backend import BackendError, backend_of
assert backend_of(np.zeros(2)).name == "numpy" and "cupy" not in sys.modules
FakeCupyArray = type("ndarray", (), {"__module__": "cupy._core.core"})
try:
    backend_of(FakeCupyArray())
except BackendError as e:  # recognised as CuPy's; this machine just cannot run CuPy
    print("recognised:", e)
else:
    print("recognised: cupy runs here")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("recognised:") and "expected an array" not in out.stdout
    with pytest.raises(TypeError, match="expected an array of one of the backends.*list"):
        minicnn.backend_of([1.0])


def test_an_object_keeps_the_backend_it_was_built_with(standin):
    assert minicnn.get_backend().name == "numpy"
    model = Sequential([Conv2D(1, 2, 3, backend="cupy"), ReLU(backend=standin)])
    assert model.backend is standin and all(layer.backend is standin for layer in model)
    loss = SoftmaxCrossEntropy(backend=standin)
    minicnn.use_backend("numpy")  # changing the default later changes nothing for them
    y = model.forward(standin.asarray(np.ones((1, 1, 4, 4), np.float32)))
    assert isinstance(y, cupy_standin.ndarray) and minicnn.backend_of(y) is standin and loss.backend is standin
    with pytest.raises(TypeError, match="different backends"):
        Sequential([Dense(2, 2), Dense(2, 2, backend=standin)])


def test_the_named_architectures_are_built_on_the_backend_asked_for(backend, monkeypatch):
    monkeypatch.setattr(minicnn.backend, "_active", None)
    monkeypatch.setenv("MINICNN_BACKEND", "nonsense")  # reading the default backend now fails
    for name in ARCHITECTURES:
        model, loss_fn = build(name, 32, 2, backend)
        assert {layer.backend for _, layer in model.named_layers()} == {backend} and loss_fn.backend is backend


def test_to_the_same_backend_copies_nothing(backend):
    layer = Dense(3, 2)
    weights = layer.params["W"]
    assert layer.to(backend.name).params["W"] is weights


def test_loading_draws_no_random_numbers(backend, tmp_path):
    Sequential([Conv2D(3, 4, 3), Flatten(), Dense(4, 2)]).save(tmp_path / "m.npz")
    minicnn.seed(7)
    expected = Dense(5, 5).params["W"]
    minicnn.seed(7)
    Sequential.load(tmp_path / "m.npz")
    np.testing.assert_array_equal(host(backend, Dense(5, 5).params["W"]), host(backend, expected))


class LearnedScale(Layer):
    """The README's example of a layer of one's own: y = a * x with one learned scalar."""

    def __init__(self, backend=None):
        super().__init__(backend)
        self.params["a"] = self.xp.ones((), dtype=self.xp.float32)

    def forward(self, x):
        self.check_input(x)
        self.x = x
        return self.params["a"] * x

    def backward(self, dout):
        self.grads["a"] = (dout * self.x).sum()
        return dout * self.params["a"]


def toy_images(n=32, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    images = rng.integers(0, 60, (n, 1, 6, 6)).astype(np.uint8)
    images[labels == 1, :, :3] += 150
    return images, labels


def test_a_layer_of_ones_own_works_everywhere_a_layer_works(backend, tmp_path):
    model = Sequential([LearnedScale(), Conv2D(1, 2, 3, padding=1), LearnedScale(), ReLU(), Flatten(), Dense(72, 2)])
    assert gradcheck(model.astype(np.float64), randn(backend, 2, 1, 6, 6)).ok
    model.astype(np.float32)
    with Tracer(model) as trace:
        model.backward(model.forward(randn(backend, 2, 1, 6, 6, dtype=np.float32)))
    assert [r.name for r in trace.backward] == ["5", "4", "3", "2", "1", "0"]
    images, labels = toy_images()
    loader = DataLoader(images, labels, 8, shuffle=True, backend=backend)
    trainer = Trainer(model, SoftmaxCrossEntropy(), SGD(model, lr=0.05), out_dir=tmp_path, progress=False, verbose=False)
    trainer.fit(loader, epochs=2)  # the first layer has parameters and ignores needs_input_grad: fine
    assert float(host(backend, model.params["0.a"])) != 1.0
    loaded = Sequential.load(tmp_path / "best.npz")
    assert isinstance(loaded[0], LearnedScale)
    x = randn(backend, 3, 1, 6, 6, dtype=np.float32)
    np.testing.assert_array_equal(host(backend, loaded.forward(x)), host(backend, model.forward(x)))


class ListLoader:
    """The smallest loader that follows the protocol: fixed batches, a position, no randomness."""

    def __init__(self, batches):
        self.batches, self.position = batches, 0

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        for i in range(self.position, len(self.batches)):
            self.position = i + 1
            yield self.batches[i]
        self.position = 0

    def state_dict(self):
        return {"position": self.position}

    def load_state_dict(self, state):
        self.position = state.get("batch", state.get("position", 0))


def test_the_trainer_takes_any_loader_that_follows_the_protocol(backend, tmp_path):
    images, labels = toy_images()
    normalize = Normalize([0.3], [0.3], backend=backend)
    batches = [(normalize(backend.asarray(images[i:i + 8])), backend.asarray(labels[i:i + 8])) for i in range(0, 32, 8)]
    model = Sequential([Flatten(), Dense(36, 2)])
    trainer = Trainer(model, SoftmaxCrossEntropy(), SGD(model, lr=0.1), out_dir=tmp_path, progress=False, verbose=False)
    history = trainer.fit(ListLoader(batches), ListLoader(batches[:2]), epochs=3)
    assert len(history) == 3 and history[-1]["train_loss"] < history[0]["train_loss"]


def test_augmentation_computes_on_the_device_in_the_batch_dtype(standin):
    x = standin.asarray(np.random.default_rng(0).uniform(0, 255, (4, 3, 9, 7)), dtype=np.float32)
    cupy_standin.transfers.reset()
    out = Augment()(x, np.random.default_rng(1))
    assert out.dtype == np.float32 and isinstance(out, cupy_standin.ndarray)
    float_dtypes = {dt for dt in cupy_standin.transfers.dtypes if dt.kind == "f"}
    assert float_dtypes == {np.dtype(np.float32)}
    assert cupy_standin.transfers.to_host == 0


def test_value_checks_wait_for_the_flush_inside_deferred_checks(backend):
    loss = SoftmaxCrossEntropy()
    logits, bad = randn(backend, 3, 4), backend.asarray(np.array([0, 1, 9]))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\).*from 0 to 9"):
        with backend.deferred_checks():
            value = loss.forward(logits, bad)  # no error yet: the check is queued
            assert np.isfinite(float(value))
    with backend.deferred_checks() as pending:
        total, = pending.flush(loss.forward(logits, backend.asarray(np.array([0, 1, 3]))))
    assert total == pytest.approx(float(loss.forward(logits, backend.asarray(np.array([0, 1, 3])))))
