import os

import numpy as np
import pytest
from threadpoolctl import threadpool_info

import minicnn
from minicnn import (BatchNorm2D, Clip, Conv2D, Dense, Dropout, Flatten, GlobalAvgPool2D, MaxPool2D, ReLU, ReLU6,
                     Residual, Sequential, SGD, SoftmaxCrossEntropy, ZeroPad2D)
from minicnn.trace import Tracer

from conftest import BACKENDS, host, randn


def small_model():
    return Sequential([Conv2D(3, 4, 3, padding=1), BatchNorm2D(4), ReLU(), MaxPool2D(2), Flatten(), Dropout(0.5), Dense(4 * 4 * 4, 3)])


def mobile_model():
    """The layers of a MobileNet-style network: TensorFlow's "same" padding for stride 2, depthwise and grouped
    convolutions, ReLU6, an inverted residual block."""
    return Sequential([ZeroPad2D((0, 1, 0, 1)), Conv2D(3, 8, 3, stride=2), BatchNorm2D(8), ReLU6(),
                       Residual(Conv2D(8, 16, 1), ReLU6(), Conv2D(16, 16, 3, padding=1, groups=16), Clip(-1.0, 6.0),
                                Conv2D(16, 8, 1, groups=2)),
                       Conv2D(8, 8, 5, stride=2, padding=(1, 2, 1, 2), groups=8), GlobalAvgPool2D(), Dense(8, 3)])


def test_forward_backward_shapes_and_grad_keys(backend):
    model = small_model()
    x = randn(backend, 5, 3, 8, 8, dtype=np.float32)
    logits = model.forward(x)
    assert logits.shape == (5, 3) and logits.dtype == np.float32
    dx = model.backward(backend.xp.ones_like(logits))
    assert dx.shape == x.shape and dx.dtype == np.float32
    for layer in model:
        assert layer.grads.keys() == layer.params.keys()
        for key in layer.params:
            assert layer.grads[key].shape == layer.params[key].shape


@pytest.mark.parametrize("head", [[], [ReLU], [lambda: MaxPool2D(1), ReLU]], ids=["conv-first", "relu-first", "two-before"])
def test_backward_without_input_grad_gives_the_same_grads_and_stops_at_the_first_parameters(backend, head):
    model = Sequential([*(make() for make in head), *small_model().eval()])  # built on the backend under test
    first = len(head)
    x = randn(backend, 3, 3, 8, 8)
    model.astype(np.float64)
    dout = randn(backend, 3, 3, seed=1)
    model.forward(x)
    assert model.backward(dout).shape == x.shape
    full = {k: host(backend, v).copy() for k, v in model.grads.items()}
    called = []
    model.hooks.append(lambda phase, i, layer, d, dx: phase == "backward" and called.append((int(i), dx is None)))
    model.forward(x)
    assert model.backward(dout, input_grad=False) is None
    assert [c for c in called if c[0] <= first] == [(first, True)]  # the layers before it are not run
    assert model.grads.keys() == full.keys()
    for k, v in model.grads.items():
        np.testing.assert_allclose(host(backend, v), full[k], rtol=1e-12)


def test_backward_without_input_grad_runs_nothing_in_a_model_without_parameters(backend):
    model = Sequential([ReLU(), Flatten()])
    x = randn(backend, 2, 3, 4, 4)
    called = []
    model.hooks.append(lambda phase, *args: phase == "backward" and called.append(args))
    assert model.backward(model.forward(x).reshape(2, -1), input_grad=False) is None
    assert called == []


@pytest.mark.parametrize("make, shape", [(lambda: Conv2D(2, 3, 3, padding=1), (2, 2, 5, 5)),
                                         (lambda: Dense(4, 3), (5, 4)), (lambda: BatchNorm2D(2), (3, 2, 4, 4))],
                         ids=["Conv2D", "Dense", "BatchNorm2D"])
def test_parameter_layers_skip_dx_on_request(backend, make, shape):
    layer = make().astype(np.float64)
    y = layer.forward(randn(backend, *shape))
    dout = randn(backend, *y.shape, seed=1)
    assert layer.backward(dout).shape == shape
    grads = {k: host(backend, v).copy() for k, v in layer.grads.items()}
    layer.needs_input_grad = False
    assert layer.backward(dout) is None
    for k, v in layer.grads.items():
        np.testing.assert_array_equal(host(backend, v), grads[k])


def test_backward_overwrites_gradients_and_leaves_dout_alone(backend):
    model = small_model().eval()
    x = randn(backend, 2, 3, 8, 8, dtype=np.float32)
    dout = randn(backend, 2, 3, dtype=np.float32)
    saved = host(backend, dout).copy()
    model.forward(x)
    model.backward(dout)
    first = {k: host(backend, v).copy() for k, v in model.grads.items()}
    model.forward(x)
    model.backward(dout)
    for k, v in model.grads.items():
        np.testing.assert_allclose(host(backend, v), first[k], rtol=1e-6)  # not doubled
    np.testing.assert_array_equal(host(backend, dout), saved)


@pytest.mark.parametrize("dout_shape", [(1, 3), (3,), (3, 2)])
def test_backward_refuses_a_dout_that_is_not_shaped_like_the_output(backend, dout_shape):
    model = small_model().eval()
    with pytest.raises(RuntimeError, match="no forward pass"):
        model.backward(randn(backend, 3, 3))
    model.astype(np.float64).forward(randn(backend, 3, 3, 8, 8))
    with pytest.raises(ValueError, match=rf"dout has shape \({dout_shape[0]},.*output has shape \(3, 3\)"):
        model.backward(randn(backend, *dout_shape))


def test_relu_backward_does_not_mutate_dout(backend):
    layer = ReLU()
    layer.forward(randn(backend, 3, 4))
    dout = randn(backend, 3, 4, seed=1)
    saved = host(backend, dout).copy()
    layer.backward(dout)
    np.testing.assert_array_equal(host(backend, dout), saved)


def test_train_eval_modes(backend):
    model = small_model()
    x = randn(backend, 4, 3, 8, 8, dtype=np.float32)
    model.eval()
    assert not model.training
    np.testing.assert_array_equal(host(backend, model.forward(x)), host(backend, model.forward(x)))  # deterministic
    model.train()
    assert model.training and all(layer.training for layer in model)
    assert not np.array_equal(host(backend, model.forward(x)), host(backend, model.forward(x)))  # dropout draws


def test_evaluation_mode_is_temporary(backend):
    model = small_model()
    x = randn(backend, 4, 3, 8, 8, dtype=np.float32)
    with model.evaluating():
        assert not any(layer.training for layer in model)
    assert model.training
    with pytest.raises(TypeError), model.evaluating():
        model.forward(x.astype(np.float64))  # an error inside the block still restores the mode
    assert model.training
    with model.eval().evaluating():
        pass
    assert not model.training
    model.train().predict(x)
    model.summary((3, 8, 8), print_fn=lambda text: None)
    assert model.training


def test_an_empty_batch_gives_empty_outputs_and_zero_gradients(backend):
    model = small_model().eval()  # BatchNorm2D needs more than one value per channel to train
    x = randn(backend, 0, 3, 8, 8, dtype=np.float32)
    logits = model.forward(x)
    assert logits.shape == (0, 3)
    assert model.backward(backend.xp.ones_like(logits)).shape == x.shape
    for name, grad in model.grads.items():
        assert not host(backend, grad).any(), name
    assert model.predict(x).shape == (0, 3)


def test_summary(backend, capsys):
    assert small_model().summary((3, 8, 8)) is None  # the table alone: a notebook shows no number after it
    out = capsys.readouterr().out
    total = (3 * 9 * 4 + 4) + 8 + (64 * 3 + 3)
    assert "(None, 4, 8, 8)" in out and "(None, 64)" in out and "(None, 3)" in out
    assert f"Total params: {total:,}" in out


def test_repr_lists_layers_with_hyperparameters(backend):
    text = repr(small_model())
    assert "(0): Conv2D(in_channels=3, out_channels=4, kernel_size=(3, 3)" in text
    assert "(5): Dropout(p=0.5)" in text


def test_summary_and_trace_of_the_mobile_layers(backend, capsys):
    model = mobile_model()
    model.summary((3, 8, 8))
    out = capsys.readouterr().out
    assert "ZeroPad2D(padding=(0, 1, 0, 1))" in out and "(None, 3, 9, 9)" in out
    assert "padding=(1, 2, 1, 2), groups=8" in out and "Clip(low=-1.0, high=6.0)" in out
    total = (3 * 9 * 8 + 8) + 16 + (8 * 16 + 16) + (16 * 9 + 16) + (16 // 2 * 8 + 8) + (25 * 8 + 8) + (8 * 3 + 3)
    assert f"Total params: {total:,}" in out
    x = randn(backend, 2, 3, 8, 8, dtype=np.float32)
    with Tracer(model) as trace:
        model.backward(backend.xp.ones_like(model.forward(x)))
    assert [(r.name, r.output_shape) for r in trace.forward[:2]] == [("0", (2, 3, 9, 9)), ("1", (2, 8, 4, 4))]
    assert ("4.body.2", (2, 16, 4, 4)) in [(r.name, r.output_shape) for r in trace.forward]
    assert len(trace.backward) == len(trace.forward)


def test_astype_keeps_the_mobile_layers_exact(backend):
    model = mobile_model().astype(np.float64)
    assert all(p.dtype == np.float64 for p in model.params.values())
    assert minicnn.gradcheck(model.eval(), randn(backend, 2, 3, 8, 8)).ok


@pytest.mark.parametrize("make", [small_model, mobile_model])
def test_save_load_roundtrip(backend, tmp_path, make):
    model = make()
    model.metadata = {"classes": ["cat", "dog", "fox"]}
    model.train()
    model.forward(randn(backend, 4, 3, 8, 8, dtype=np.float32))  # moves the running statistics
    path = tmp_path / "model.npz"
    model.save(path)
    loaded = Sequential.load(path)
    assert loaded.metadata == model.metadata
    assert repr(loaded) == repr(model)
    x = randn(backend, 2, 3, 8, 8, dtype=np.float32, seed=3)
    np.testing.assert_array_equal(host(backend, loaded.eval().forward(x)), host(backend, model.eval().forward(x)))
    fresh = make().load_weights(path)
    np.testing.assert_array_equal(host(backend, fresh.eval().forward(x)), host(backend, model.forward(x)))


def test_save_is_atomic(backend, tmp_path, monkeypatch):
    path = tmp_path / "model.npz"
    small_model().save(path)
    before = path.read_bytes()

    def dies_mid_write(f, **arrays):
        f.write(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", dies_mid_write)
    with pytest.raises(KeyboardInterrupt):
        small_model().save(path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["model.npz"]  # no temporary file left behind


def test_load_mismatch_errors(backend, tmp_path):
    path = tmp_path / "model.npz"
    small_model().save(path)
    other = Sequential([Conv2D(3, 5, 3, padding=1), ReLU()])
    with pytest.raises(ValueError, match="holds 7 layers"):
        other.load_weights(path)
    changed = small_model()
    changed.layers[6] = Dense(64, 2)
    with pytest.raises(ValueError, match="layer 6 is Dense.*out_features': 3.*out_features': 2"):
        changed.load_weights(path)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="junk.npz: not a minicnn model file"):
        Sequential.load(tmp_path / "junk.npz")
    np.savez(tmp_path / "plain.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="no architecture header"):
        Sequential.load(tmp_path / "plain.npz")


def test_seed_makes_models_reproducible(backend):
    minicnn.seed(123)
    a = small_model()
    minicnn.seed(123)
    b = small_model()
    for k in a.params:
        np.testing.assert_array_equal(host(backend, a.params[k]), host(backend, b.params[k]))
    minicnn.seed(123)
    x = randn(backend, 2, 3, 8, 8, dtype=np.float32)
    y1 = host(backend, a.train().forward(x))
    minicnn.seed(123)
    y2 = host(backend, a.forward(x))
    np.testing.assert_array_equal(y1, y2)


@pytest.mark.parametrize("make", [small_model, mobile_model])
@pytest.mark.parametrize("target", BACKENDS)
def test_move_between_backends(backend, target, make):
    model = make()
    x = randn(backend, 2, 3, 8, 8, dtype=np.float32)
    expected = host(backend, model.eval().forward(x))
    moved = model.to(target)
    other = minicnn.get_backend(target)
    assert all(other.is_native(p) for p in moved.params.values())
    # Real CuPy sums the conv's 27 and the dense layer's 64 terms in another order than NumPy: float32 rounding of a
    # few eps relative to the largest logit, not to each (a logit near 0 keeps the error of its terms). 1e-5 is 84
    # eps; a layer left behind or a wrong kernel is off by 1e-1 or more.
    np.testing.assert_allclose(host(other, moved.forward(other.asarray(host(backend, x)))), expected, rtol=1e-5,
                               atol=1e-5 * np.abs(expected).max())
    if other is not backend:
        with pytest.raises(TypeError, match="backend"):
            moved.forward(x)


def test_a_training_step_reduces_the_loss(backend):
    minicnn.seed(0)
    model = small_model()
    loss_fn = SoftmaxCrossEntropy()
    optimizer = SGD(model, lr=0.05, momentum=0.9)
    x = randn(backend, 16, 3, 8, 8, dtype=np.float32)
    labels = backend.asarray(np.arange(16) % 3)
    losses = []
    for _ in range(15):
        losses.append(loss_fn.forward(model.forward(x), labels))
        model.backward(loss_fn.backward())
        optimizer.step()
    assert losses[-1] < 0.5 * losses[0]


def test_predict_with_tta_averages_each_images_logits_with_its_mirror_images(backend):
    minicnn.seed(3)
    model = Sequential([Conv2D(2, 3, 3, padding=1), ReLU(), Flatten(), Dense(3 * 5 * 6, 4)], backend=backend)
    x = randn(backend, 7, 2, 5, 6, dtype=np.float32)
    mirrored = backend.xp.ascontiguousarray(x[..., ::-1])
    plain = host(backend, model.predict(x, batch_size=3))
    expected = (plain + host(backend, model.predict(mirrored, batch_size=3))) / 2
    averaged = host(backend, model.predict(x, batch_size=3, tta=True))
    np.testing.assert_allclose(averaged, expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(averaged, plain, atol=1e-3)  # the mirror image really was classified
    assert model.training  # the mode comes back


def test_grouped_convolution_leaves_blas_threads_as_it_found_them(backend):
    # Its products run on one BLAS thread (Backend.small_products); the rest of the process keeps its threads.
    def blas_threads():
        return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
    before = blas_threads()
    layer = Conv2D(4, 8, 3, groups=4)
    layer.backward(backend.xp.ones_like(layer.forward(randn(backend, 2, 4, 5, 5, dtype=np.float32))))
    assert blas_threads() == before
