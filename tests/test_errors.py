"""Bad input gives an error that names the layer and the shapes, never a silent wrong answer."""
import numpy as np
import pytest

from minicnn import (AvgPool2D, BatchNorm2D, BinaryCrossEntropy, Clip, Conv2D, Dense, Dropout, MaxPool2D, ReLU,
                     SoftmaxCrossEntropy, ZeroPad2D)

from conftest import randn


@pytest.mark.parametrize("layer, shape, words", [
    (Conv2D(3, 4, 3), (2, 3, 5), ["Conv2D", "4-D", "(2, 3, 5)"]),
    (Conv2D(3, 4, 3), (2, 1, 5, 5), ["Conv2D", "3 input channels", "(2, 1, 5, 5)"]),
    (Conv2D(3, 4, 5), (2, 3, 4, 4), ["Conv2D", "4x4", "5x5"]),
    (Conv2D(3, 4, 5, padding=1), (2, 3, 2, 2), ["Conv2D", "padded 4x4", "5x5"]),
    (Conv2D(3, 4, 5, padding=(0, 2, 1, 0)), (2, 3, 3, 4), ["Conv2D", "3x4 (padded 4x6)", "5x5"]),
    (Conv2D(4, 6, 3, groups=2), (2, 2, 5, 5), ["Conv2D", "4 input channels", "(2, 2, 5, 5)"]),
    (ZeroPad2D(1), (2, 3, 5), ["ZeroPad2D", "4-D", "(2, 3, 5)"]),
    (MaxPool2D(3), (1, 1, 2, 2), ["MaxPool2D", "(1, 1, 2, 2)", "3x3"]),
    (AvgPool2D(2), (4, 4), ["AvgPool2D", "4-D", "(4, 4)"]),
    (Dense(8, 2), (2, 3, 4), ["Dense", "2-D", "(2, 3, 4)"]),
    (Dense(8, 2), (2, 7), ["Dense", "8 input features", "(2, 7)"]),
    (BatchNorm2D(3), (2, 4, 5, 5), ["BatchNorm2D", "3 input channels", "(2, 4, 5, 5)"]),
])
def test_bad_shapes(backend, layer, shape, words):
    layer.to(backend)
    with pytest.raises(ValueError) as info:
        layer.forward(randn(backend, *shape, dtype=np.float32))
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize("kwargs", [dict(kernel_size=0.5), dict(kernel_size=(1, 2, 3)), dict(stride="2")])
def test_bad_hyperparameters(backend, kwargs):
    with pytest.raises(TypeError, match=f"Conv2D: {next(iter(kwargs))} must be a positive int"):
        Conv2D(1, 1, **{"kernel_size": 3, **kwargs})


@pytest.mark.parametrize("make, error, message", [
    (lambda: Conv2D(4, 6, 3, groups=4), ValueError,
     r"Conv2D: in_channels \(4\) and out_channels \(6\) must both be multiples of groups \(4\)"),
    (lambda: Conv2D(4, 4, 3, groups=0), ValueError, "Conv2D: groups must be a positive int, got 0"),
    (lambda: Conv2D(4, 4, 3, groups=2.0), TypeError, "Conv2D: groups must be a positive int"),
    (lambda: Conv2D(4, 4, 3, padding=(1, 2, 3)), TypeError,
     r"Conv2D: padding must be an int >= 0, a pair of them \(ph, pw\) or \(left, right, top, bottom\), got \(1, 2, 3\)"),
    (lambda: Conv2D(4, 4, 3, padding=(1, -1, 0, 0)), ValueError, r"Conv2D: padding must be .*, got \(1, -1, 0, 0\)"),
    (lambda: ZeroPad2D(-1), ValueError, "ZeroPad2D: padding must be an int >= 0"),
    (lambda: ZeroPad2D("same"), TypeError, "ZeroPad2D: padding must be an int >= 0"),
    (lambda: MaxPool2D(3, padding=(0, 2, 0, 0)), ValueError, r"MaxPool2D: padding must be at most half the kernel"),
    (lambda: Clip(1, 1), ValueError, "Clip: low must be below high, got low=1.0, high=1.0"),
    (lambda: Clip(0, float("inf")), ValueError, "Clip: high must be a finite number"),
    (lambda: Clip("0", 6), TypeError, "Clip: low must be a finite number"),
])
def test_bad_new_layer_arguments(backend, make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_same_padding_needs_odd_kernels_and_stride_one(backend):
    assert Conv2D(1, 1, (3, 5), padding="same").padding == (1, 2)
    with pytest.raises(ValueError, match="same"):
        Conv2D(1, 1, 4, padding="same")
    with pytest.raises(ValueError, match="same"):
        Conv2D(1, 1, 3, stride=2, padding="same")


def test_pool_padding_at_most_half_the_kernel(backend):
    with pytest.raises(ValueError, match="MaxPool2D.*half"):
        MaxPool2D(2, padding=2)


def test_dropout_probability(backend):
    with pytest.raises(ValueError, match="Dropout"):
        Dropout(1.0)


def test_not_an_array_of_the_backend(backend):
    with pytest.raises(TypeError, match="ReLU.*backend"):
        ReLU().forward([[1.0, 2.0]])


def test_dtype_mismatch_is_an_error_not_a_silent_cast(backend):
    with pytest.raises(TypeError, match="Conv2D.*float64.*float32"):
        Conv2D(1, 1, 3).forward(randn(backend, 1, 1, 4, 4, dtype=np.float64))
    with pytest.raises(TypeError, match="ReLU.*floating"):
        ReLU().forward(backend.asarray(np.ones((2, 2), dtype=np.uint8)))


@pytest.mark.parametrize("labels, words", [
    (np.array([0, 1, 4]), ["SoftmaxCrossEntropy", "[0, 4)", "(3, 4)"]),
    (np.array([0, -1, 2]), ["SoftmaxCrossEntropy", "[0, 4)"]),
    (np.array([0, 1]), ["SoftmaxCrossEntropy", "(2,)", "(3, 4)"]),
    (np.zeros((3, 5)), ["SoftmaxCrossEntropy", "(3, 5)", "(3, 4)"]),
    (np.array([0.0, 1.0, 2.0]), ["SoftmaxCrossEntropy", "integers"]),
])
def test_bad_labels_softmax(backend, labels, words):
    with pytest.raises(ValueError) as info:
        SoftmaxCrossEntropy().forward(randn(backend, 3, 4), backend.asarray(labels))
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize("logits_shape, labels, words", [
    ((3, 1), np.array([0, 1, 2]), ["BinaryCrossEntropy", "[0, 1]"]),
    ((3, 2), np.array([0, 1, 1]), ["BinaryCrossEntropy", "(3, 2)"]),
    ((3,), np.array([0, 1]), ["BinaryCrossEntropy", "(2,)", "(3,)"]),
])
def test_bad_labels_binary(backend, logits_shape, labels, words):
    with pytest.raises(ValueError) as info:
        BinaryCrossEntropy().forward(randn(backend, *logits_shape), backend.asarray(labels))
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize("loss, labels", [(SoftmaxCrossEntropy(), np.array([0, 1, 0])), (BinaryCrossEntropy(), np.array([0, 1, 0]))])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_logits(backend, loss, labels, bad):
    logits = host_logits = np.random.default_rng(0).standard_normal((3, 4 if isinstance(loss, SoftmaxCrossEntropy) else 1))
    host_logits[1, 0] = bad
    with pytest.raises(ValueError, match=f"{type(loss).__name__}.*NaN"):
        loss.to(backend).forward(backend.asarray(logits), backend.asarray(labels))


def test_huge_logits_do_not_overflow(backend):
    logits = backend.asarray(np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4]], dtype=np.float32))
    loss = SoftmaxCrossEntropy()
    value = loss.forward(logits, backend.asarray(np.array([0, 2])))
    assert np.isfinite(value) and abs(value - np.log(2) / 2) < 1e-6
    assert np.isfinite(backend.to_numpy(loss.backward())).all()
    bce = BinaryCrossEntropy()
    value = bce.forward(logits[:, :1], backend.asarray(np.array([1, 0])))
    assert np.isfinite(value) and abs(value - 0.0) < 1e-6
