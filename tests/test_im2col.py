import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minicnn import Conv2D, col2im, im2col
from minicnn.im2col import from_columns
from minicnn.windows import output_size

from conftest import host, randn
from test_gradients import paddings, sides


def im2col_loops(x, kernel, stride, padding):
    """Oracle: the column matrix built pixel by pixel."""
    (kh, kw), (sh, sw) = kernel, stride
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), *sides(padding)))
    ho, wo = (output_size(size, k, s, p) for size, k, s, p in zip((h, w), kernel, stride, sides(padding)))
    cols = np.zeros((c * kh * kw, n * ho * wo), dtype=x.dtype)
    for ci in range(c):
        for i in range(kh):
            for j in range(kw):
                for b in range(n):
                    for y in range(ho):
                        for z in range(wo):
                            cols[(ci * kh + i) * kw + j, (b * ho + y) * wo + z] = xp[b, ci, y * sh + i, z * sw + j]
    return cols


@st.composite
def geometry(draw):
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = draw(paddings())  # an int, (ph, pw) or (left, right, top, bottom)
    h, w = (draw(st.integers(max(1, k - sum(p)), 8)) for k, p in zip(kernel, sides(padding)))
    return (draw(st.integers(1, 3)), draw(st.integers(1, 3)), h, w), kernel, stride, padding


@given(geometry(), st.booleans())
def test_im2col_matches_loops(backend, case, batch_last):
    shape, kernel, stride, padding = case
    x = randn(backend, *shape)
    expected = im2col_loops(host(backend, x), kernel, stride, padding)  # columns (n, y, x)
    if batch_last:  # columns (y, x, n)
        expected = expected.reshape(len(expected), shape[0], -1).transpose(0, 2, 1).reshape(expected.shape)
    np.testing.assert_array_equal(host(backend, im2col(x, kernel, stride, padding, batch_last)), expected)


@given(geometry(), st.booleans())
def test_col2im_is_the_adjoint_of_im2col(backend, case, batch_last):
    # <im2col(x), c> == <x, col2im(c)> for all x, c: exactly what backpropagation needs.
    shape, kernel, stride, padding = case
    x = randn(backend, *shape, seed=1)
    cols = im2col(x, kernel, stride, padding, batch_last)
    c = randn(backend, *cols.shape, seed=2)
    back = col2im(c, shape, kernel, stride, padding, batch_last)
    assert back.shape == shape
    np.testing.assert_allclose(float((cols * c).sum()), float((x * back).sum()), rtol=1e-10)


@pytest.mark.parametrize("batch_last", [False, True])
def test_dtype_is_preserved(backend, batch_last):
    x = randn(backend, 2, 3, 5, 5, dtype=np.float32)
    cols = im2col(x, 3, 1, 1, batch_last)
    assert cols.dtype == np.float32
    assert col2im(cols, x.shape, 3, 1, 1, batch_last).dtype == np.float32


def test_conv2d_takes_the_batch_last_order_for_small_maps_of_larger_kernels_only(backend):
    layer = Conv2D(2, 3, 3, padding=1, backend=backend)
    for size, batch_last in ((14, True), (15, False)):  # 196 output pixels, then 225
        layer.forward(randn(backend, 2, 2, size, size, dtype=np.float32))
        assert layer.batch_last is batch_last
    layer.batch_last_maps = True
    layer.forward(randn(backend, 2, 2, 15, 15, dtype=np.float32))
    assert layer.batch_last is True
    layer = Conv2D(2, 3, 1, backend=backend)  # a 1x1 kernel: its columns are the input, batch first
    layer.forward(randn(backend, 2, 2, 4, 4, dtype=np.float32))
    assert layer.batch_last is False


def test_from_columns_refuses_an_output_it_cannot_write_in_place(backend):
    y, bias = randn(backend, 3, 2 * 4), randn(backend, 3)
    out = backend.xp.empty((2, 3, 2, 4))[:, :, :, ::2]  # (2, 3, 2, 2), strided: a reshape of it would be a copy
    with pytest.raises(ValueError, match="contiguous"):
        from_columns(y, bias, out)


def test_a_column_order_that_is_no_bool_is_refused(backend):
    x = randn(backend, 1, 1, 3, 3, dtype=np.float32)
    with pytest.raises(TypeError, match="im2col: batch_last must be True or False, got 'no'"):
        im2col(x, 3, batch_last="no")
    with pytest.raises(TypeError, match="col2im: batch_last must be True or False"):
        col2im(im2col(x, 3), x.shape, 3, batch_last=0)
    layer = Conv2D(1, 1, 3, backend=backend)
    layer.batch_last_maps = "no"  # truthy: it would have meant batch-last
    with pytest.raises(TypeError, match="batch_last_maps must be None"):
        layer.forward(x)
