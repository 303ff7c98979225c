"""Every layer and loss: analytic backward against finite differences, float64, relative error < 1e-6."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minicnn
from minicnn import (AvgPool2D, BatchNorm2D, BinaryCrossEntropy, Clip, Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU,
                     ReLU6, Sequential, Sigmoid, SoftmaxCrossEntropy, ZeroPad2D, gradcheck)
from minicnn.gradcheck import numerical_gradient

from conftest import host, randn

TOL = 1e-6


def check(target, x, labels=None):
    result = gradcheck(target, x, labels, tol=TOL)
    assert result.ok, result
    return result


small = st.integers(1, 3)


@st.composite
def paddings(draw, most=(2, 2)):
    """A layer's padding in any form: an int, (ph, pw) or (left, right, top, bottom), each side at most ``most`` (h, w)."""
    form = draw(st.sampled_from(["int", "pair", "sides"]))
    h, w = (st.integers(0, most[0]), st.integers(0, most[1]))
    if form == "int":
        return draw(st.integers(0, min(most)))
    return (draw(h), draw(w)) if form == "pair" else (draw(w), draw(w), draw(h), draw(h))


def sides(padding):
    """((top, bottom), (left, right)) of a padding in any form, read here as the docs say, not by minicnn's code."""
    if isinstance(padding, int):
        return (padding, padding), (padding, padding)
    if len(padding) == 2:
        return (padding[0],) * 2, (padding[1],) * 2
    left, right, top, bottom = padding  # PyTorch's F.pad order
    return (top, bottom), (left, right)


@st.composite
def window_geometry(draw, max_pad_half=False):
    """kernel, stride, padding (any form, see :func:`paddings`), (h, w) with the kernel fitting the padded input."""
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = draw(paddings(tuple(k // 2 for k in kernel) if max_pad_half else (2, 2)))
    hw = tuple(draw(st.integers(max(1, k - sum(p)), 7)) for k, p in zip(kernel, sides(padding)))
    return kernel, stride, padding, hw


def column_order(layer, batch_last):
    """``layer`` set to the batch-last column order (True) or the batch-first one (False), see minicnn.im2col."""
    layer.batch_last_maps = batch_last
    return layer


@given(n=small, c=small, f=small, groups=small, geometry=window_geometry(), batch_last=st.booleans(),
       seed=st.integers(0, 999))
def test_conv2d(backend, n, c, f, groups, geometry, batch_last, seed):
    # c and f are the channels and filters per group
    kernel, stride, padding, (h, w) = geometry
    layer = column_order(Conv2D(c * groups, f * groups, kernel, stride, padding, groups), batch_last)
    check(layer, randn(backend, n, c * groups, h, w, seed=seed))


@given(n=small, c=st.integers(1, 6), geometry=window_geometry(), batch_last=st.booleans(), seed=st.integers(0, 999))
def test_depthwise_conv2d(backend, n, c, geometry, batch_last, seed):
    # One filter per group: backward's outer-product shortcut (Conv2D.backward), next to test_conv2d's products.
    kernel, stride, padding, (h, w) = geometry
    check(column_order(Conv2D(c, c, kernel, stride, padding, groups=c), batch_last), randn(backend, n, c, h, w, seed=seed))


@given(n=small, c=small, padding=paddings((3, 3)), h=small, w=small, seed=st.integers(0, 999))
def test_zero_pad(backend, n, c, padding, h, w, seed):
    check(ZeroPad2D(padding), randn(backend, n, c, h, w, seed=seed))


@pytest.mark.parametrize("pool", [MaxPool2D, AvgPool2D])
@given(n=small, c=small, geometry=window_geometry(max_pad_half=True), seed=st.integers(0, 999))
def test_pooling(backend, pool, n, c, geometry, seed):
    kernel, stride, padding, (h, w) = geometry
    check(pool(kernel, stride, padding), randn(backend, n, c, h, w, seed=seed))


@pytest.mark.parametrize("pool", [MaxPool2D, AvgPool2D])
def test_pooling_default_stride_is_the_kernel(backend, pool):
    layer = pool((2, 3))
    assert layer.stride == (2, 3)
    check(layer, randn(backend, 2, 2, 6, 7))


@given(n=small, d=st.integers(1, 6), m=st.integers(1, 5), seed=st.integers(0, 999))
def test_dense(backend, n, d, m, seed):
    check(Dense(d, m), randn(backend, n, d, seed=seed))


@pytest.mark.parametrize("layer, scale", [(ReLU, 1), (Sigmoid, 1), (Flatten, 1), (lambda: Dropout(0.4), 1),
                                          (ReLU6, 5), (lambda: Clip(-0.5, 0.7), 1)],  # values on both sides of the kinks
                         ids=["ReLU", "Sigmoid", "Flatten", "Dropout", "ReLU6", "Clip"])
@given(shape=st.lists(st.integers(1, 4), min_size=2, max_size=4), seed=st.integers(0, 999))
def test_elementwise_and_reshape(backend, layer, scale, shape, seed):
    check(layer(), randn(backend, *shape, seed=seed) * scale)


@pytest.mark.parametrize("training", [True, False])
# With fewer than ~4 values per channel, batch norm's input gradient is nearly zero and checks only noise.
@given(n=small, c=small, h=st.integers(2, 4), w=st.integers(2, 4), seed=st.integers(0, 999))
def test_batchnorm2d(backend, training, n, c, h, w, seed):
    layer = BatchNorm2D(c).train(training)
    xp = backend.xp
    layer.params["gamma"] = xp.asarray(randn(backend, c, seed=seed + 1), dtype=xp.float32)
    layer.params["beta"] = xp.asarray(randn(backend, c, seed=seed + 2), dtype=xp.float32)
    layer.buffers["running_var"] += 0.5
    check(layer, randn(backend, n, c, h, w, seed=seed))


@given(n=small, k=st.integers(1, 6), one_hot=st.booleans(), seed=st.integers(0, 999))
def test_softmax_cross_entropy(backend, n, k, one_hot, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    if one_hot:
        labels = np.eye(k)[labels]
    check(SoftmaxCrossEntropy(), randn(backend, n, k, seed=seed) * 3, backend.asarray(labels))


@given(n=small, column=st.booleans(), soft=st.booleans(), seed=st.integers(0, 999))
def test_binary_cross_entropy(backend, n, column, soft, seed):
    rng = np.random.default_rng(seed)
    labels = rng.random(n) if soft else rng.integers(0, 2, n)
    shape = (n, 1) if column else (n,)
    check(BinaryCrossEntropy(), randn(backend, *shape, seed=seed) * 3, backend.asarray(labels.reshape(shape)))


def test_whole_model(backend):
    model = Sequential([
        Conv2D(2, 3, 3, padding="same"), BatchNorm2D(3), ReLU(), MaxPool2D(2),
        Conv2D(3, 2, (2, 1)), Sigmoid(), AvgPool2D(2, stride=1), Flatten(), Dropout(0.2), Dense(4, 3),
    ])
    result = check(model, randn(backend, 2, 2, 6, 6))
    assert set(result.errors) == {"input", *model.params}


class ReLUWithoutMask(ReLU):
    def backward(self, dout):
        return dout.copy()  # the planted bug: forgets the mask


class DenseWithScaledGradient(Dense):
    def backward(self, dout):
        dx = super().backward(dout)
        self.grads["W"] = self.grads["W"] * 1.01  # a subtly scaled weight gradient
        return dx


class MaxPoolToFirstCell(MaxPool2D):
    def _gradient_to_winners(self, padded, y, dout, out):
        first_cells = self._windows(padded)[0]
        super()._gradient_to_winners(padded, first_cells, dout, out)  # every window "won" by its first cell


@pytest.mark.parametrize("layer, shape", [
    (ReLUWithoutMask(), (2, 3, 4, 4)),
    (DenseWithScaledGradient(4, 3), (2, 4)),
    (MaxPoolToFirstCell(2), (2, 2, 4, 4)),
])
def test_gradcheck_catches_planted_bugs(backend, layer, shape):
    result = gradcheck(layer.to(backend), randn(backend, *shape))
    assert not result.ok
    assert "FAIL" in repr(result)
    with pytest.raises(AssertionError):
        result.assert_ok()


def test_gradcheck_leaves_the_target_untouched(backend):
    layer = Conv2D(1, 1, 3)
    before = backend.to_numpy(layer.params["W"]).copy()
    gradcheck(layer, randn(backend, 1, 1, 4, 4))
    assert layer.params["W"].dtype == np.float32
    np.testing.assert_array_equal(backend.to_numpy(layer.params["W"]), before)


def test_gradcheck_of_a_strided_float64_input_is_right_and_leaves_it_alone(backend):
    images = randn(backend, 2, 3, 6, 6)
    x = images[:, 0, 0, :5]  # a strided view
    before = host(backend, images).copy()
    result = gradcheck(Dense(5, 3), x)
    assert result.ok, result
    np.testing.assert_array_equal(host(backend, images), before)


def test_numerical_gradient_refuses_a_strided_array():
    with pytest.raises(ValueError, match="C-contiguous"):
        numerical_gradient(lambda: 0.0, np.zeros((4, 4))[:, ::2], 1e-6)


@pytest.mark.parametrize("filters, padding, groups", [(3, 1, 1), (4, (1, 0, 1, 1), 2)])
@pytest.mark.parametrize("budget", [1, 6000])
@pytest.mark.parametrize("orders", [(False, False), (True, True), (False, True)])
def test_conv2d_in_chunks_matches_one_piece(backend, budget, filters, padding, groups, orders):
    # orders: the column orders of the whole and the chunked layer; (False, True) checks the orders against each other
    x = randn(backend, 5, 2, 6, 5)
    whole = column_order(Conv2D(2, filters, 3, stride=(1, 2), padding=padding, groups=groups), orders[0])
    chunked = column_order(Conv2D(2, filters, 3, stride=(1, 2), padding=padding, groups=groups), orders[1])
    whole, chunked = whole.astype(np.float64), chunked.astype(np.float64)
    chunked.params = {k: v.copy() for k, v in whole.params.items()}
    chunked.column_budget = budget  # bytes: 1 gives one image per chunk, 6000 two or three
    y, y_chunked = whole.forward(x), chunked.forward(x)
    assert len(chunked.chunks) > 1 and chunked.cols is None
    assert budget == 1 or chunked.chunks[0].stop > 1  # several images in a chunk: the column orders differ there

    def assert_same_sums(got, want):
        # The same float64 terms in other matrix products (and the weight gradient summed chunk by chunk): rounding
        # of a few eps relative to the largest value, also for a value near 0. A chunk left out or counted twice is
        # off by 1e-1.
        want = backend.to_numpy(want)
        np.testing.assert_allclose(backend.to_numpy(got), want, rtol=1e-12, atol=1e-12 * np.abs(want).max())

    assert_same_sums(y_chunked, y)
    dout = randn(backend, *y.shape, seed=1)
    assert_same_sums(chunked.backward(dout), whole.backward(dout))
    for key in whole.grads:
        assert_same_sums(chunked.grads[key], whole.grads[key])
    check(chunked, x)
