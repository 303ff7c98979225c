"""Arguments a student may type wrong, once each: every one builds something that works or is refused by name.

Layers, losses, optimizers, schedules, loaders and the Trainer; layers and losses used on their own
(backward before forward, a dout of the wrong shape); and batches holding NaN.
"""
import numbers

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minicnn
from minicnn import (SGD, Adam, AvgPool2D, BatchNorm2D, BinaryCrossEntropy, Conv2D, Dense, Dropout, Flatten,
                     GlobalAvgPool2D, MaxPool2D, ReLU, Residual, RMSProp, Sequential, Sigmoid, SoftmaxCrossEntropy)
from minicnn.architectures import build
from minicnn.data import Augment, DataLoader, Normalize
from minicnn.losses import NonFiniteError
from minicnn.metrics import confusion_matrix, roc_auc
from minicnn.schedules import cosine_schedule, step_schedule
from minicnn.train import Trainer

from conftest import host, randn

# What a student may pass where a size, a rate or a probability belongs.
ANYTHING = st.one_of(
    st.integers(-3, 5), st.integers(-2, 4).map(np.int64), st.integers(0, 3).map(np.uint8),
    st.floats(-2, 6), st.sampled_from([float("nan"), float("inf"), 2.0]),
    st.floats(0, 1, width=32).map(np.float32), st.sampled_from([None, True, False, np.True_, "3", "same", "valid", ""]),
    st.tuples(st.integers(-1, 4), st.integers(-1, 4)), st.lists(st.integers(1, 3), max_size=3),
)


def is_int(v, low=1):
    return isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_)) and v >= low


def is_pair(v, low=1):
    return is_int(v, low) or (isinstance(v, (tuple, list)) and len(v) == 2 and all(is_int(e, low) for e in v))


def as_pair(v):
    return (int(v), int(v)) if is_int(v, -99) else tuple(int(e) for e in v)


def is_number(v, low, high, high_open=False):
    return (isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)) and np.isfinite(v) and low <= v
            and (v < high if high_open else v <= high))


def built_or_refused(backend, name, make, valid_args, x_shape):
    """``make()`` must build a layer whose forward and backward work on an input of ``x_shape`` when
    every argument is valid, and otherwise raise TypeError or ValueError naming the layer and an invalid argument."""
    invalid = [arg for arg, ok in valid_args.items() if not ok]
    try:
        layer = make()
    except (TypeError, ValueError) as e:
        assert invalid, f"{name} refused valid arguments: {e}"
        assert any(str(e).startswith(f"{name}: {arg}") for arg in invalid), str(e)
        return
    assert not invalid, f"{name} accepted invalid {invalid}"
    x = randn(backend, *x_shape, dtype=np.float32)
    y = layer.forward(x)
    dx = layer.backward(backend.xp.ones_like(y))
    assert dx.shape == x.shape and np.isfinite(host(backend, y)).all()
    return layer, y


@given(c=ANYTHING, f=ANYTHING, k=ANYTHING, s=ANYTHING, p=ANYTHING)
def test_conv2d_arguments(backend, c, f, k, s, p):
    same = isinstance(p, str) and p == "same"
    valid = dict(in_channels=is_int(c), out_channels=is_int(f), kernel_size=is_pair(k), stride=is_pair(s),
                 padding=is_pair(p, 0) or (isinstance(p, str) and p == "valid")
                 or (same and is_pair(k) and all(v % 2 for v in as_pair(k)) and is_pair(s) and as_pair(s) == (1, 1)))
    kh, kw = as_pair(k) if is_pair(k) else (1, 1)
    result = built_or_refused(backend, "Conv2D", lambda: Conv2D(c, f, k, s, p), valid,
                              (2, int(c) if is_int(c) else 1, kh + 2, kw + 3))
    if result:
        layer, y = result
        sh, sw = layer.stride
        ph, pw = layer.padding
        assert y.shape == (2, int(f), (kh + 2 + 2 * ph - kh) // sh + 1, (kw + 3 + 2 * pw - kw) // sw + 1)


@pytest.mark.parametrize("pool", [MaxPool2D, AvgPool2D])
@given(k=ANYTHING, s=ANYTHING, p=ANYTHING)
def test_pooling_arguments(backend, pool, k, s, p):
    kh, kw = as_pair(k) if is_pair(k) else (1, 1)
    fits = is_pair(p, 0) and all(a <= b // 2 for a, b in zip(as_pair(p), (kh, kw)))
    valid = dict(kernel_size=is_pair(k), stride=s is None or is_pair(s), padding=fits)
    built_or_refused(backend, pool.__name__, lambda: pool(k, s, p), valid, (1, 2, kh + 1, kw + 2))


@given(d=ANYTHING, m=ANYTHING)
def test_dense_arguments(backend, d, m):
    built_or_refused(backend, "Dense", lambda: Dense(d, m), dict(in_features=is_int(d), out_features=is_int(m)),
                     (3, int(d) if is_int(d) else 1))


@given(c=ANYTHING, momentum=ANYTHING, eps=ANYTHING)
def test_batchnorm_arguments(backend, c, momentum, eps):
    valid = dict(num_channels=is_int(c), momentum=is_number(momentum, 0, 1), eps=is_number(eps, 0, np.inf) and eps > 0)
    built_or_refused(backend, "BatchNorm2D", lambda: BatchNorm2D(c, momentum, eps), valid,
                     (2, int(c) if is_int(c) else 1, 3, 3))


@given(p=ANYTHING)
def test_dropout_arguments(backend, p):
    built_or_refused(backend, "Dropout", lambda: Dropout(p), dict(p=is_number(p, 0, 1, high_open=True)), (4, 5))


def test_init_names_and_configs_stay_plain(backend):
    with pytest.raises(ValueError, match="Dense: init must be one of 'he', 'xavier', got 'glorot'"):
        Dense(2, 2, init="glorot")
    layer = Conv2D(np.int64(3), np.int32(4), np.int64(3), padding=np.uint8(1))
    assert all(type(v) is int for v in (layer.in_channels, *layer.kernel_size, *layer.padding))  # JSON-friendly


LAYERS = {
    "Conv2D": (lambda: Conv2D(2, 3, 3, padding=1), (2, 2, 5, 5)),
    "MaxPool2D": (lambda: MaxPool2D(2), (2, 2, 4, 4)),
    "AvgPool2D": (lambda: AvgPool2D(2), (2, 2, 4, 4)),
    "GlobalAvgPool2D": (lambda: GlobalAvgPool2D(), (2, 2, 4, 4)),
    "Dense": (lambda: Dense(4, 3), (2, 4)),
    "ReLU": (lambda: ReLU(), (2, 3)),
    "Sigmoid": (lambda: Sigmoid(), (2, 3)),
    "Dropout": (lambda: Dropout(0.5), (2, 3)),
    "BatchNorm2D": (lambda: BatchNorm2D(2), (2, 2, 3, 3)),
    "Flatten": (lambda: Flatten(), (2, 2, 3)),
    "Residual": (lambda: Residual(Conv2D(2, 2, 3, padding=1), ReLU()), (2, 2, 4, 4)),
    "Sequential": (lambda: Sequential([Dense(4, 3), ReLU()]), (2, 4)),
}


@pytest.mark.parametrize("name", LAYERS)
def test_backward_before_forward_and_a_dout_of_the_wrong_shape_are_refused(backend, name):
    make, shape = LAYERS[name]
    layer = make()
    with pytest.raises(RuntimeError, match=rf"^{name}.*backward: there was no forward pass"):
        layer.backward(randn(backend, *shape, dtype=np.float32))
    y = layer.forward(randn(backend, *shape, dtype=np.float32))
    for wrong in [(1, *y.shape[1:]), (*y.shape[:-1], 1), y.shape[1:]]:  # each would broadcast
        with pytest.raises(ValueError, match=rf"^{name}.*dout has shape {re_shape(wrong)}.*output has shape"):
            layer.backward(backend.xp.ones(wrong, dtype=np.float32))
    with pytest.raises(TypeError, match=rf"^{name}.*dout"):
        layer.backward(host(backend, y).tolist())
    with pytest.raises(RuntimeError, match="no forward pass"):  # a forward that failed does not count
        with pytest.raises(TypeError):
            layer.forward(backend.asarray(np.ones(shape, dtype=np.int64)))
        layer.backward(backend.xp.ones_like(y))


def re_shape(shape):
    return str(tuple(shape)).replace("(", r"\(").replace(")", r"\)")


def test_a_layer_used_twice_in_a_model_is_refused():
    relu = ReLU()
    with pytest.raises(ValueError, match="Sequential: the same ReLU.* appears twice"):
        Sequential([Dense(2, 2), relu, Dense(2, 2), relu])
    dense = Dense(2, 2)
    with pytest.raises(ValueError, match="Residual: the same Dense"):
        Residual(dense, shortcut=[dense])
    with pytest.raises(TypeError, match=r"item 1 is the class ReLU.*ReLU\(...\)"):
        Sequential([Dense(2, 2), ReLU])
    with pytest.raises(TypeError, match="floating-point"):
        Sequential([Dense(2, 2)]).astype(np.int32)


# --- losses -----------------------------------------------------------------

def test_losses_refuse_backward_before_forward_bad_dloss_and_empty_batches(backend):
    for loss, logits, labels in [(SoftmaxCrossEntropy(), randn(backend, 3, 4), [0, 1, 3]),
                                 (BinaryCrossEntropy(), randn(backend, 3), [0, 1, 1])]:
        name = type(loss).__name__
        with pytest.raises(RuntimeError, match=f"{name}.backward: there was no forward pass"):
            loss.backward()
        loss.forward(logits, backend.asarray(np.array(labels)))
        for dloss, error in [(float("nan"), ValueError), ("1", TypeError), (np.ones(3), TypeError)]:
            with pytest.raises(error, match=f"{name}.backward: dloss must be a finite number"):
                loss.backward(dloss)
        with pytest.raises(ValueError, match=f"{name}: an empty batch"):
            loss.forward(logits[:0], backend.asarray(np.array(labels[:0], dtype=np.int64)))
        with pytest.raises(RuntimeError, match="no forward pass"):  # the failed forward does not count
            loss.backward()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, -0.5])
def test_nan_and_infinite_labels_are_refused(backend, bad):
    soft = np.array([[0.2, 0.8, 0.0], [bad, 0.5, 0.5]])
    with pytest.raises(ValueError, match=r"SoftmaxCrossEntropy: target probabilities must be finite and non-negative"):
        SoftmaxCrossEntropy().forward(randn(backend, 2, 3), backend.asarray(soft))
    with pytest.raises(ValueError, match=r"BinaryCrossEntropy: labels must lie in \[0, 1\]"):
        BinaryCrossEntropy().forward(randn(backend, 2), backend.asarray(np.array([1.0, bad])))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.filterwarnings("error")  # not even a warning
def test_extreme_finite_logits_give_no_nan(backend, dtype):
    big = np.finfo(np.float32).max * 0.9  # about 3e38
    logits = backend.asarray(np.array([[big, -big, 0.0], [-big, big, big], [0.0, 0.0, 0.0]], dtype=dtype))
    loss = SoftmaxCrossEntropy()
    value = float(loss.forward(logits, backend.asarray(np.array([0, 2, 1]))))
    # What log-sum-exp gives: log 2 and log 3 from NumPy's log (SIMD code chosen by the CPU, within 4 ulp), divided
    # and summed: under 8 eps of the dtype. A term dropped from the log-sum-exp is off by 1e-1.
    assert value == pytest.approx((0 + np.log(2) + np.log(3)) / 3, rel=64 * float(np.finfo(dtype).eps))
    assert np.isfinite(host(backend, loss.backward())).all()
    bce = BinaryCrossEntropy()
    value = float(bce.forward(logits[:, 0], backend.asarray(np.array([0.0, 1.0, 0.5]))))
    assert np.isfinite(value) and value == pytest.approx((2 * float(big) + np.log(2)) / 3, rel=1e-6)
    assert np.isfinite(host(backend, bce.backward())).all()


# --- a bad batch never corrupts a model ----------------------------------------

def test_a_nan_batch_leaves_batchnorm_running_statistics_alone(backend):
    layer = BatchNorm2D(3)
    x = randn(backend, 4, 3, 2, 2, dtype=np.float32)
    x[1, 1, 0, 0] = np.nan
    with pytest.raises(NonFiniteError, match=r"BatchNorm2D.*channel\(s\) \[1\].*left unchanged"):
        layer.forward(x)
    mean, var = host(backend, layer.buffers["running_mean"]), host(backend, layer.buffers["running_var"])
    assert mean[1] == 0 and var[1] == 1 and mean[0] != 0 and np.isfinite(mean).all() and np.isfinite(var).all()
    with backend.deferred_checks() as pending:  # in a training loop: reported at the flush, state still sound
        layer.forward(x)
        with pytest.raises(NonFiniteError):
            pending.flush()
    assert np.isfinite(host(backend, layer.buffers["running_mean"])).all()


def test_a_nan_batch_stops_training_before_anything_is_saved(backend, tmp_path):
    images = np.random.default_rng(0).integers(0, 255, (16, 1, 4, 4)).astype(np.uint8)
    labels = np.arange(16) % 2
    poison = lambda x: x * backend.asarray(np.where(np.arange(len(x)) == 1, np.nan, 1.0)[:, None, None, None],  # noqa: E731
                                            dtype=x.dtype)
    loader = DataLoader(images, labels, 8, normalize=poison, backend=backend)
    model = Sequential([Conv2D(1, 2, 3), BatchNorm2D(2), ReLU(), Flatten(), Dense(8, 2)])
    start = {k: host(backend, v).copy() for k, v in {**model.params, **model.buffers}.items()}
    trainer = Trainer(model, SoftmaxCrossEntropy(), SGD(model, lr=0.1), out_dir=tmp_path, progress=False, verbose=False)
    with pytest.raises(minicnn.train.TrainingDiverged, match="epoch 1.*NaN.*last sound epoch"):
        trainer.fit(loader, epochs=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.npz"]  # the start of the run, nothing after
    saved = Sequential.load(tmp_path / "checkpoint.npz")
    for name, value in {**saved.params, **saved.buffers}.items():
        np.testing.assert_array_equal(host(backend, value), start[name])
    assert np.isfinite(host(backend, model.buffers["1.running_mean"])).all()


# --- optimizers, schedules, loaders, the Trainer -----------------------------------

@pytest.mark.parametrize("make, error, words", [
    (lambda m: SGD(m, lr=float("nan")), ValueError, "SGD: lr must be a number > 0, got nan"),
    (lambda m: SGD(m, lr=0), ValueError, "SGD: lr must be a number > 0"),
    (lambda m: SGD(m, lr="0.1"), TypeError, "SGD: lr must be a number"),
    (lambda m: SGD(m, lr=0.1, momentum=1.0), ValueError, r"SGD: momentum must be a number in \[0, 1\)"),
    (lambda m: SGD(m, lr=0.1, momentum=0.9, nesterov="no"), TypeError, "SGD: nesterov must be True or False"),
    (lambda m: SGD(m, lr=0.1, weight_decay=-1e-4), ValueError, "SGD: weight_decay must be a number >= 0"),
    (lambda m: Adam(m, betas=(0.9, 1.0)), ValueError, r"Adam: betas\[1\] must be a number in \[0, 1\)"),
    (lambda m: Adam(m, betas=0.9), TypeError, "Adam: betas must be a pair"),
    (lambda m: Adam(m, eps=0.0), ValueError, "Adam: eps must be a number > 0"),
    (lambda m: RMSProp(m, alpha=float("inf")), ValueError, "RMSProp: alpha must be a number"),
    (lambda m: SGD(Sequential([ReLU()]), lr=0.1), ValueError, "SGD: Sequential.* has no parameters"),
])
def test_optimizer_settings_are_checked(make, error, words):
    with pytest.raises(error, match=words):
        make(Sequential([Dense(2, 2)]))


def test_the_learning_rate_a_schedule_sets_is_checked_too():
    opt = SGD(Sequential([Dense(2, 2)]), lr=0.1)
    opt.lr = 0.0  # a schedule's end
    with pytest.raises(ValueError, match="SGD: lr must be a number >= 0, got nan"):
        opt.lr = float("nan")
    assert opt.lr == 0.0


def test_the_optimizer_sees_a_model_changed_after_it_was_built(backend):
    model = Sequential([Dense(3, 3)])
    opt = SGD(model, lr=0.1)
    model.layers.append(Dense(3, 2))  # by name, the new layer's parameters are trained too
    model.forward(randn(backend, 4, 3, dtype=np.float32))
    model.backward(randn(backend, 4, 2, dtype=np.float32))
    before = host(backend, model.params["1.W"]).copy()
    opt.step()
    assert not np.array_equal(host(backend, model.params["1.W"]), before)
    model[1].grads["W"] = model[1].grads["W"][:1]  # a layer of one's own that writes a wrong-shaped gradient
    with pytest.raises(ValueError, match=r"SGD.step: the gradient of '1.W' has shape \(1, 2\).*\(3, 2\)"):
        opt.step()
    other = Adam(model)
    with pytest.raises(ValueError, match="Adam: the saved state is that of SGD"):
        other.load_state_dict(opt.state_dict())


@pytest.mark.parametrize("call, error, words", [
    (lambda: step_schedule(0.1, 0), ValueError, "step_schedule: step_epochs must be a number > 0"),
    (lambda: cosine_schedule(float("nan"), 10), ValueError, "cosine_schedule: base_lr"),
    (lambda: cosine_schedule(0.1, 10, warmup_epochs=11), ValueError, "cosine_schedule: warmup_epochs"),
    (lambda: DataLoader(np.zeros((2, 1, 2, 2), np.uint8), [0, 1], 0), ValueError, "DataLoader: batch_size must be a positive int"),
    (lambda: DataLoader(np.zeros((2, 1, 2, 2), np.uint8), [0, 1], True), TypeError, "DataLoader: batch_size"),
    (lambda: DataLoader(np.zeros((2, 1, 2, 2)), [0, 1], 2), TypeError, "DataLoader: images must be a NumPy uint8 array"),
    (lambda: DataLoader(np.zeros((2, 1, 2, 2), np.uint8), [0, 1], 2, seed=-1), ValueError, "DataLoader: seed"),
    (lambda: DataLoader(np.zeros((2, 1, 2, 2), np.uint8), [0, 1], 2, shuffle="yes"), TypeError, "DataLoader: shuffle"),
    (lambda: Augment(zoom=-0.1), ValueError, "Augment: zoom must be a number >= 0"),
    (lambda: Augment(brightness=1.0), ValueError, "Augment: brightness"),
    (lambda: Normalize([0.5], [0.0]), ValueError, "Normalize: .*std finite and positive"),
    (lambda: minicnn.seed(-1), ValueError, "seed: n .*must be an int >= 0"),
    (lambda: minicnn.seed(1.5), TypeError, "seed: n"),
    (lambda: Sequential([Dense(2, 2)]).predict(np.ones((2, 2), np.float32), batch_size=0), ValueError,
     "Sequential.predict: batch_size"),
    (lambda: Sequential([Dense(2, 2)]).summary("2"), TypeError, "Sequential.summary: input_shape"),
    (lambda: Sequential([Dense(2, 2)]).predict(np.ones((2, 2), np.float32), tta="yes"), TypeError,
     "Sequential.predict: tta must be True or False"),
    # mirroring the last axis of (N, features) would silently reverse the features
    (lambda: Sequential([Dense(2, 2)]).predict(np.ones((2, 2), np.float32), tta=True), ValueError,
     r"Sequential.predict: tta=True mirrors images .* got shape \(2, 2\)"),
    (lambda: build("catdog-resnet", "96", 2), TypeError, r"build\('catdog-resnet'\): image_size must be a positive int"),
    (lambda: build("catdog-resnet", 96.0, 2), TypeError, "image_size must be a positive int, got 96.0"),
    (lambda: build("catdog-resnet", 32, 1), ValueError, "num_classes must be an int >= 2, got 1"),
    # a size or a slope passed to a layer that takes none must not be read as a backend
    (lambda: GlobalAvgPool2D(1), TypeError, r"GlobalAvgPool2D: backend must be .*got 1; GlobalAvgPool2D\(\) takes no other"),
    (lambda: ReLU(0.1), TypeError, r"ReLU: backend must be None, 'numpy', 'cupy' or a Backend, got 0.1"),
    (lambda: minicnn.gradcheck(Dense(2, 2), np.ones((1, 2)), eps=0), ValueError, "gradcheck: eps must be a number > 0"),
    (lambda: confusion_matrix([0, 1], [0, 2], 2), ValueError, r"confusion_matrix: the predictions must lie in \[0, 2\)"),
    (lambda: confusion_matrix([0.0, 1.0], [0, 1]), ValueError, "confusion_matrix: the true labels must be integer"),
    (lambda: roc_auc([0, 2, 1], [0.1, 0.2, 0.3]), ValueError, "roc_auc: labels must be 0 or 1"),
])
def test_settings_of_schedules_loaders_and_helpers_are_checked(call, error, words):
    with pytest.raises(error, match=words):
        call()


def test_numpy_bools_are_taken_as_bools(backend):
    loader = DataLoader(np.zeros((2, 1, 2, 2), np.uint8), [0, 1], 2, shuffle=np.True_, backend=backend)
    assert loader.shuffle is True
    model = Sequential([Conv2D(1, 2, 3), GlobalAvgPool2D(), Dense(2, 2)]).to(backend)
    x = randn(backend, 3, 1, 4, 5, dtype=np.float32)
    np.testing.assert_array_equal(host(backend, model.predict(x, tta=np.True_)), host(backend, model.predict(x, tta=True)))


def test_trainer_settings_are_checked(tmp_path):
    model = Sequential([Dense(2, 2)])
    parts = (model, SoftmaxCrossEntropy(), SGD(model, lr=0.1))
    for kwargs, error, words in [
        (dict(patience=0), ValueError, "Trainer: patience"),
        (dict(monitor="accuracy"), ValueError, "Trainer: monitor must be one of 'val_loss', 'val_accuracy'"),
        (dict(seed=-1), ValueError, "Trainer: seed"),
        (dict(schedule=0.1), TypeError, "Trainer: schedule"),
        (dict(settings={"x": np.float32(1)}), TypeError, "Trainer: settings must be JSON-friendly"),
        (dict(out_dir=tmp_path / "file"), NotADirectoryError, "the run folder is a file"),
    ]:
        (tmp_path / "file").write_text("x")
        with pytest.raises(error, match=words):
            Trainer(*parts, **kwargs)
    with pytest.raises(ValueError, match="optimizer was built on another model"):
        Trainer(Sequential([Dense(2, 2)]), SoftmaxCrossEntropy(), parts[2])
    trainer = Trainer(*parts, progress=False)
    loader = DataLoader(np.zeros((4, 1, 1, 2), np.uint8), np.array([0, 1, 0, 1]), 2)
    with pytest.raises(ValueError, match="Trainer.fit: epochs must be a positive int, got 0"):
        trainer.fit(loader, epochs=0)
    with pytest.raises(TypeError, match="Trainer.fit: train_loader must follow the loader protocol"):
        trainer.fit([(None, None)], epochs=1)
    with pytest.raises(ValueError, match="resume=True needs the out_dir"):
        trainer.fit(loader, epochs=1, resume=True)
