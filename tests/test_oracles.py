"""Forward values against straightforward loop implementations."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minicnn import AvgPool2D, Conv2D, MaxPool2D, ReLU6, ZeroPad2D
from minicnn.windows import output_size

from conftest import host, randn
from test_gradients import column_order, sides, window_geometry


def conv_loops(x, W, b, stride, padding, groups=1):
    """Each output: its filter times the window of its group's input channels, plus its bias."""
    sh, sw = stride
    n, c, h, w = x.shape
    f, per_group, kh, kw = W.shape
    xp = np.pad(x, ((0, 0), (0, 0), *sides(padding)))
    ho, wo = (output_size(size, k, s, p) for size, k, s, p in zip((h, w), (kh, kw), stride, sides(padding)))
    y = np.zeros((n, f, ho, wo))
    for i in range(n):
        for o in range(f):
            first = o // (f // groups) * per_group  # the first input channel of the filter's group
            for r in range(ho):
                for s in range(wo):
                    window = xp[i, first:first + per_group, r * sh:r * sh + kh, s * sw:s * sw + kw]
                    y[i, o, r, s] = (window * W[o]).sum() + b[o]
    return y


def pool_loops(x, kernel, stride, padding, reduce, pad_value):
    (kh, kw), (sh, sw) = kernel, stride
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), *sides(padding)), constant_values=pad_value)
    ho, wo = (output_size(size, k, s, p) for size, k, s, p in zip((h, w), kernel, stride, sides(padding)))
    y = np.zeros((n, c, ho, wo))
    for r in range(ho):
        for s in range(wo):
            y[:, :, r, s] = reduce(xp[:, :, r * sh:r * sh + kh, s * sw:s * sw + kw], axis=(2, 3))
    return y


@given(n=st.integers(1, 3), c=st.integers(1, 3), f=st.integers(1, 3), groups=st.integers(1, 3), geometry=window_geometry(),
       batch_last=st.booleans(), seed=st.integers(0, 999))
def test_conv2d_forward(backend, n, c, f, groups, geometry, batch_last, seed):
    kernel, stride, padding, (h, w) = geometry
    layer = column_order(Conv2D(c * groups, f * groups, kernel, stride, padding, groups), batch_last).astype(np.float64)
    layer.params["b"] = randn(backend, f * groups, seed=seed + 1)
    x = randn(backend, n, c * groups, h, w, seed=seed)
    expected = conv_loops(host(backend, x), host(backend, layer.params["W"]), host(backend, layer.params["b"]), stride,
                          padding, groups)
    np.testing.assert_allclose(host(backend, layer.forward(x)), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("pool, reduce, pad_value", [(MaxPool2D, np.max, -np.inf), (AvgPool2D, np.mean, 0.0)])
@given(n=st.integers(1, 3), c=st.integers(1, 3), geometry=window_geometry(max_pad_half=True), seed=st.integers(0, 999))
def test_pooling_forward(backend, pool, reduce, pad_value, n, c, geometry, seed):
    kernel, stride, padding, (h, w) = geometry
    x = randn(backend, n, c, h, w, seed=seed)
    expected = pool_loops(host(backend, x), kernel, stride, padding, reduce, pad_value)
    # float64 means of standard normal values: rounding of a few eps relative to the values, also for a mean near 0
    y = host(backend, pool(kernel, stride, padding).forward(x))
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


def test_max_pool_ties_go_to_the_first_maximum(backend):
    x = backend.asarray(np.array([[[[1.0, 3.0], [3.0, 0.0]]]]))
    layer = MaxPool2D(2)
    layer.forward(x)
    dx = host(backend, layer.backward(backend.asarray(np.ones((1, 1, 1, 1)))))
    np.testing.assert_array_equal(dx, [[[[0.0, 1.0], [0.0, 0.0]]]])


@pytest.mark.parametrize("window, expected", [([[2.0, 2.0], [2.0, 2.0]], [[1.0, 0.0], [0.0, 0.0]]),   # all tied
                                               ([[0.0, 1.0], [2.0, 7.0]], [[0.0, 0.0], [0.0, 1.0]])])  # the last cell
def test_max_pool_gradient_goes_to_exactly_one_cell(backend, window, expected):
    layer = MaxPool2D(2)
    layer.forward(backend.asarray(np.array([[window]])))
    dx = host(backend, layer.backward(backend.asarray(np.ones((1, 1, 1, 1)))))
    np.testing.assert_array_equal(dx, [[expected]])


def test_max_pool_output_never_aliases_its_input(backend):
    x = randn(backend, 1, 2, 3, 3)
    y = MaxPool2D(1).forward(x)
    y[...] = 0
    assert np.abs(host(backend, x)).min() > 0


def test_overlapping_max_pool_sums_gradients_of_shared_winners(backend):
    x = backend.asarray(np.array([[[[0.0, 5.0, 0.0]]]]))
    layer = MaxPool2D((1, 2), stride=1)
    np.testing.assert_array_equal(host(backend, layer.forward(x)), [[[[5.0, 5.0]]]])
    dx = host(backend, layer.backward(backend.asarray(np.array([[[[1.0, 2.0]]]]))))
    np.testing.assert_array_equal(dx, [[[[0.0, 3.0, 0.0]]]])


@pytest.mark.parametrize("layer", [Conv2D(2, 3, 3, padding=1), Conv2D(2, 4, 3, 2, (0, 1, 0, 1), groups=2), MaxPool2D(2),
                                   AvgPool2D(3, 1, 1), ReLU6(), ZeroPad2D((1, 0, 2, 1))], ids=repr)
def test_float32_in_float32_out(backend, layer):
    layer.to(backend)
    x = randn(backend, 2, 2, 6, 6, dtype=np.float32)
    y = layer.forward(x)
    assert y.dtype == np.float32
    assert layer.backward(backend.xp.ones_like(y)).dtype == np.float32
    assert all(g.dtype == np.float32 for g in layer.grads.values())
