"""Forward values and every gradient against PyTorch (float64), where PyTorch is installed."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minicnn import (AvgPool2D, BatchNorm2D, BinaryCrossEntropy, Clip, Conv2D, Dense, MaxPool2D, ReLU6,
                     SoftmaxCrossEntropy, ZeroPad2D)

from conftest import host, randn
from test_gradients import column_order, paddings, sides, window_geometry

torch = pytest.importorskip("torch")
F = torch.nn.functional


def compare_layer(backend, layer, x, torch_fn, torch_params):
    y = layer.forward(x)
    g = randn(backend, *y.shape, seed=99)
    dx = layer.backward(g)
    tx = torch.tensor(host(backend, x), requires_grad=True)
    tp = {k: torch.tensor(host(backend, v), requires_grad=True) for k, v in torch_params.items()}
    ty = torch_fn(tx, **tp)
    ty.backward(torch.tensor(host(backend, g)))
    close = dict(rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(host(backend, y), ty.detach().numpy(), **close)
    np.testing.assert_allclose(host(backend, dx), tx.grad.numpy(), **close)
    for name, tensor in tp.items():
        np.testing.assert_allclose(host(backend, layer.grads[name]), tensor.grad.numpy(), **close, err_msg=name)


def torch_padding(padding):
    """PyTorch's form of a minicnn padding: (ph, pw) for its layers' own ``padding``, or None and F.pad's
    (left, right, top, bottom) when the two ends of an axis differ (PyTorch's layers pad both ends alike)."""
    (top, bottom), (left, right) = sides(padding)
    return ((top, left), None) if (top, left) == (bottom, right) else (0, (left, right, top, bottom))


@given(n=st.integers(1, 3), c=st.integers(1, 3), f=st.integers(1, 3), groups=st.integers(1, 3), geometry=window_geometry(),
       batch_last=st.booleans(), seed=st.integers(0, 999))
def test_conv2d(backend, n, c, f, groups, geometry, batch_last, seed):
    kernel, stride, padding, (h, w) = geometry
    own, pad = torch_padding(padding)
    layer = column_order(Conv2D(c * groups, f * groups, kernel, stride, padding, groups), batch_last).astype(np.float64)
    layer.params["b"] = randn(backend, f * groups, seed=seed + 1)
    compare_layer(backend, layer, randn(backend, n, c * groups, h, w, seed=seed),
                  lambda x, W, b: F.conv2d(x if pad is None else F.pad(x, pad), W, b, stride, own, groups=groups),
                  layer.params)


@pytest.mark.parametrize("pool, torch_pool, pad_value", [(MaxPool2D, F.max_pool2d, -np.inf), (AvgPool2D, F.avg_pool2d, 0)])
@given(n=st.integers(1, 3), c=st.integers(1, 3), geometry=window_geometry(max_pad_half=True), seed=st.integers(0, 999))
def test_pooling(backend, pool, torch_pool, pad_value, n, c, geometry, seed):
    kernel, stride, padding, (h, w) = geometry
    own, pad = torch_padding(padding)
    compare_layer(backend, pool(kernel, stride, padding), randn(backend, n, c, h, w, seed=seed),
                  lambda x: torch_pool(x if pad is None else F.pad(x, pad, value=pad_value), kernel, stride, own), {})


@given(n=st.integers(1, 3), c=st.integers(1, 3), padding=paddings((3, 3)), h=st.integers(1, 4), w=st.integers(1, 4),
       seed=st.integers(0, 999))
def test_zero_pad(backend, n, c, padding, h, w, seed):
    (top, bottom), (left, right) = sides(padding)
    compare_layer(backend, ZeroPad2D(padding), randn(backend, n, c, h, w, seed=seed),
                  lambda x: F.pad(x, (left, right, top, bottom)), {})


@pytest.mark.parametrize("layer, torch_fn", [(ReLU6, F.relu6), (lambda: Clip(-0.5, 0.75), lambda x: F.hardtanh(x, -0.5, 0.75))],
                         ids=["ReLU6", "Clip"])
def test_clip(backend, layer, torch_fn):
    layer = layer()
    x = randn(backend, 3, 4, 5, 6) * 4
    x[0, 0, 0, :4] = backend.asarray(np.array([layer.low, layer.high, 0.0, 6.0]))  # the gradient at the kinks: 0
    compare_layer(backend, layer, x, torch_fn, {})


def test_max_pool_ties_match_torch(backend):
    # After ReLU, all-zero windows are common: the gradient must go where PyTorch sends it.
    x = backend.asarray(np.maximum(np.random.default_rng(0).standard_normal((2, 3, 8, 8)), 0).round(0))
    compare_layer(backend, MaxPool2D(2), x, lambda t: F.max_pool2d(t, 2), {})
    compare_layer(backend, MaxPool2D(3, 2, 1), x, lambda t: F.max_pool2d(t, 3, 2, 1), {})


@given(n=st.integers(1, 4), d=st.integers(1, 6), m=st.integers(1, 5), seed=st.integers(0, 999))
def test_dense(backend, n, d, m, seed):
    layer = Dense(d, m).astype(np.float64)
    layer.params["b"] = randn(backend, m, seed=seed + 1)
    compare_layer(backend, layer, randn(backend, n, d, seed=seed), lambda x, W, b: x @ W + b, layer.params)


@pytest.mark.parametrize("training", [True, False])
def test_batchnorm2d(backend, training):
    layer = BatchNorm2D(3).astype(np.float64).train(training)
    layer.params["gamma"] = randn(backend, 3, seed=1)
    layer.params["beta"] = randn(backend, 3, seed=2)
    layer.buffers["running_mean"] = randn(backend, 3, seed=3)
    layer.buffers["running_var"] = randn(backend, 3, seed=4) ** 2 + 0.5
    running_mean = torch.tensor(host(backend, layer.buffers["running_mean"]))
    running_var = torch.tensor(host(backend, layer.buffers["running_var"]))
    compare_layer(backend, layer, randn(backend, 4, 3, 5, 6),
                  lambda x, gamma, beta: F.batch_norm(x, running_mean, running_var, gamma, beta, training, 0.1, 1e-5),
                  layer.params)
    np.testing.assert_allclose(host(backend, layer.buffers["running_mean"]), running_mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(host(backend, layer.buffers["running_var"]), running_var.numpy(), rtol=1e-12)


def compare_loss(backend, loss, logits, targets, torch_loss):
    value = loss.forward(logits, backend.asarray(targets))
    t = torch.tensor(host(backend, logits), requires_grad=True)
    expected = torch_loss(t, torch.tensor(targets))
    expected.backward()
    np.testing.assert_allclose(float(value), expected.item(), rtol=1e-12, atol=1e-13)  # atol: a loss near 0 from logits of 30
    np.testing.assert_allclose(host(backend, loss.backward()), t.grad.numpy(), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("one_hot", [False, True])
def test_softmax_cross_entropy(backend, one_hot):
    labels = np.array([0, 3, 1, 1, 2])
    compare_loss(backend, SoftmaxCrossEntropy(), randn(backend, 5, 4) * 4, np.eye(4)[labels] if one_hot else labels,
                 F.cross_entropy)


def test_binary_cross_entropy(backend):
    labels = np.array([[0.0], [1.0], [1.0], [0.0], [0.3], [1.0]])
    compare_loss(backend, BinaryCrossEntropy(), randn(backend, 6, 1) * 5, labels, F.binary_cross_entropy_with_logits)


@given(n=st.integers(1, 4), k=st.integers(1, 5), seed=st.integers(0, 999),
       scale=st.sampled_from([0.0, 1e-3, 1.0, 7.0]), zero_rows=st.booleans())
def test_soft_labels_match_torch_for_any_non_negative_rows(backend, n, k, seed, scale, zero_rows):
    # Rows need not sum to 1 (label smoothing done by hand, unnormalized weights, all-zero rows):
    # PyTorch defines the loss -sum t log softmax(z) for any of them, and so its gradient.
    rng = np.random.default_rng(seed)
    targets = rng.uniform(0, 1, (n, k)) * rng.integers(0, 2, (n, k)) * scale
    if zero_rows:
        targets[0] = 0
    compare_loss(backend, SoftmaxCrossEntropy(), randn(backend, n, k, seed=seed) * 10, targets, F.cross_entropy)


@given(n=st.integers(1, 5), column=st.booleans(), seed=st.integers(0, 999), logit_scale=st.sampled_from([1.0, 30.0]))
def test_binary_cross_entropy_matches_torch_for_any_targets_in_0_1(backend, n, column, seed, logit_scale):
    rng = np.random.default_rng(seed)
    targets = np.where(rng.random(n) < 0.3, rng.integers(0, 2, n), rng.uniform(0, 1, n)).astype(np.float64)
    shape = (n, 1) if column else (n,)
    compare_loss(backend, BinaryCrossEntropy(), randn(backend, *shape, seed=seed) * logit_scale, targets.reshape(shape),
                 F.binary_cross_entropy_with_logits)


@pytest.mark.parametrize("big", [3e38, 1e300])
def test_extreme_logits_match_torch(backend, big):
    logits = backend.asarray(np.array([[big, -big, 0.0], [-big, big, big]]))
    compare_loss(backend, SoftmaxCrossEntropy(), logits, np.array([[0.5, 0.5, 0.0], [0.0, 0.2, 0.8]]), F.cross_entropy)
    compare_loss(backend, BinaryCrossEntropy(), logits[:, 0], np.array([0.0, 1.0]), F.binary_cross_entropy_with_logits)
