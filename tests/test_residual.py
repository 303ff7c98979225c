"""Residual blocks and global average pooling: gradients, PyTorch, and nesting wherever a layer works."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minicnn
from minicnn import (SGD, BatchNorm2D, Conv2D, Dense, Dropout, Flatten, GlobalAvgPool2D, MaxPool2D, ReLU, Residual,
                     Sequential, SoftmaxCrossEntropy, gradcheck)
from minicnn.trace import Tracer

from conftest import host, randn


def basic_block(cin, cout, stride=1, norm=True):
    """torchvision's BasicBlock without its final ReLU: conv-BN-ReLU-conv-BN, projection when the shape changes."""
    bn = (lambda c: [BatchNorm2D(c)]) if norm else (lambda c: [])
    body = [Conv2D(cin, cout, 3, stride=stride, padding=1), *bn(cout), ReLU(), Conv2D(cout, cout, 3, padding=1), *bn(cout)]
    shortcut = None if cin == cout and stride == 1 else [Conv2D(cin, cout, 1, stride=stride), *bn(cout)]
    return Residual(*body, shortcut=shortcut)


@given(n=st.integers(1, 3), c=st.integers(1, 3), grow=st.booleans(), stride=st.integers(1, 2),
       h=st.integers(2, 6), w=st.integers(2, 6), seed=st.integers(0, 999))
def test_residual_gradients(backend, n, c, grow, stride, h, w, seed):
    block = basic_block(c, c + grow, stride, norm=False)
    result = gradcheck(block, randn(backend, n, c, h, w, seed=seed), tol=1e-6)
    assert result.ok, result


def test_residual_gradients_with_batch_norm(backend):
    for block in (basic_block(3, 3), basic_block(2, 4, stride=2)):
        result = gradcheck(block, randn(backend, 3, block.body[0].in_channels, 6, 5), tol=1e-6)
        assert result.ok, result


@given(n=st.integers(1, 3), c=st.integers(1, 4), h=st.integers(1, 5), w=st.integers(1, 5), seed=st.integers(0, 999))
def test_global_average_pooling_gradients(backend, n, c, h, w, seed):
    x = randn(backend, n, c, h, w, seed=seed)
    result = gradcheck(GlobalAvgPool2D(), x, tol=1e-6)
    assert result.ok, result
    np.testing.assert_allclose(host(backend, GlobalAvgPool2D().forward(x)), host(backend, x).mean(axis=(2, 3)))


torch = None


@pytest.fixture
def nn():
    global torch
    torch = pytest.importorskip("torch")
    return torch.nn


TORCH_NAMES = {"W": "weight", "b": "bias", "gamma": "weight", "beta": "bias"}


def torch_name(name):
    """The PyTorch name of a minicnn parameter or buffer of a block: "body.0.W" -> "body.0.weight"."""
    *path, key = name.split(".")
    return ".".join([*path, TORCH_NAMES.get(key, key)])


def torch_block(nn, block):
    """The same block in PyTorch, with minicnn's weights copied in (float64), parameter by parameter by name."""
    def convert(layer):
        if isinstance(layer, Conv2D):
            t = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding)
        elif isinstance(layer, BatchNorm2D):
            t = nn.BatchNorm2d(layer.num_channels, layer.eps, layer.momentum)
        else:
            return nn.ReLU()
        t = t.double()
        theirs = dict(t.named_parameters())
        assert sorted(map(torch_name, layer.params)) == sorted(theirs), layer
        with torch.no_grad():
            for key, value in layer.params.items():
                param = theirs[torch_name(key)]
                assert tuple(param.shape) == value.shape, (layer, key)  # copy_ would broadcast a wrong shape
                param.copy_(torch.tensor(host(layer.backend, value)))
        return t

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(*map(convert, block.body))
            self.shortcut = nn.Sequential(*map(convert, block.shortcut)) if block.shortcut is not None else nn.Identity()

        def forward(self, x):
            out = self.body(x)
            out += self.shortcut(x)  # as torchvision's BasicBlock
            return out
    return Block()


@pytest.mark.parametrize("cin, cout, stride", [(3, 3, 1), (3, 5, 2)], ids=["identity", "projection"])
def test_residual_block_matches_torch(backend, nn, cin, cout, stride):
    block = basic_block(cin, cout, stride).astype(np.float64)
    for i, value in enumerate(block.params.values()):  # non-trivial gammas and betas
        value += randn(backend, *value.shape, seed=100 + i) * 0.1
    theirs = torch_block(nn, block)
    x = randn(backend, 4, cin, 7, 6)
    y = block.forward(x)
    g = randn(backend, *y.shape, seed=9)
    dx = block.backward(g)
    tx = torch.tensor(host(backend, x), requires_grad=True)
    ty = theirs(tx)
    ty.backward(torch.tensor(host(backend, g)))
    close = dict(rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(host(backend, y), ty.detach().numpy(), **close)
    np.testing.assert_allclose(host(backend, dx), tx.grad.numpy(), **close)
    theirs_grads = {name: p.grad.numpy() for name, p in theirs.named_parameters()}
    assert sorted(map(torch_name, block.grads)) == sorted(theirs_grads)
    for name, grad in block.grads.items():
        np.testing.assert_allclose(host(backend, grad), theirs_grads[torch_name(name)], **close, err_msg=name)
    running = {name: b.numpy() for name, b in theirs.named_buffers() if "running" in name}  # not num_batches_tracked
    assert sorted(block.buffers) == sorted(running)
    for name, value in block.buffers.items():
        np.testing.assert_allclose(host(backend, value), running[name], rtol=1e-12, err_msg=name)


def small_resnet():
    return Sequential([Conv2D(3, 4, 3, padding=1), BatchNorm2D(4), ReLU(), basic_block(4, 4), ReLU(),
                       basic_block(4, 8, stride=2), ReLU(), GlobalAvgPool2D(), Dropout(0.2), Dense(8, 3)])


def test_nested_names_save_load_and_modes(backend, tmp_path):
    model = small_resnet()
    assert "3.body.0.W" in model.params and "5.shortcut.1.gamma" in model.params
    assert "5.shortcut.1.running_mean" in model.buffers
    model.forward(randn(backend, 4, 3, 8, 8, dtype=np.float32))  # moves the running statistics
    model.save(tmp_path / "m.npz")
    loaded = Sequential.load(tmp_path / "m.npz")
    assert repr(loaded) == repr(model) and isinstance(loaded[5], Residual) and len(loaded[5].shortcut) == 2
    for store in ("params", "buffers"):
        mine, theirs = getattr(model, store), getattr(loaded, store)
        assert mine.keys() == theirs.keys()
        for k in mine:
            np.testing.assert_array_equal(host(backend, theirs[k]), host(backend, mine[k]), err_msg=k)
    x = randn(backend, 2, 3, 8, 8, dtype=np.float32, seed=1)
    np.testing.assert_array_equal(host(backend, loaded.eval().forward(x)), host(backend, model.eval().forward(x)))
    assert not model[3].training and not model[3].body[1].training
    model.train()
    assert model[5].shortcut[1].training
    model.astype(np.float64)
    assert all(v.dtype == np.float64 for v in model.params.values())
    x = backend.asarray(host(backend, x).astype(np.float64))
    expected, arrays = host(backend, model.eval().forward(x)), {**model.params, **model.buffers}
    stored = {k: host(backend, v).copy() for k, v in arrays.items()}
    other = another_backend(backend)
    assert model.to(other) is model
    for name, layer in [("model", model), *model.named_layers()]:  # blocks and their branches included
        assert layer.backend is other, name
    arrays = {**model.params, **model.buffers}
    assert arrays.keys() == stored.keys()
    for k, v in arrays.items():
        assert other.is_native(v) and v.dtype == np.float64, k
        np.testing.assert_array_equal(other.to_numpy(v), stored[k], err_msg=k)
    np.testing.assert_array_equal(other.to_numpy(model.forward(other.asarray(host(backend, x)))), expected)


def another_backend(backend):
    """A backend other than ``backend``: the other array library where both run, else a second NumPy backend."""
    others = [name for name in minicnn.available_backends() if name != backend.name]
    return minicnn.get_backend(others[0]) if others else type(backend)()


def test_summary_indents_the_layers_of_a_block(backend, capsys):
    small_resnet().summary((3, 8, 8))
    lines = capsys.readouterr().out.splitlines()
    block = next(i for i, line in enumerate(lines) if line.startswith("5: Residual"))
    assert "(None, 8, 4, 4)" in lines[block]
    assert lines[block + 1].startswith("  5.body.0: Conv2D") and "(None, 8, 4, 4)" in lines[block + 1]
    assert any(line.startswith("  5.shortcut.0: Conv2D") for line in lines)
    # Counted by hand (convolution F*C*kh*kw + F, batch norm 2C, dense D*M + M; running statistics are no parameters):
    # stem conv 3->4 (112) + BN (8); block 4->4: 2 convs (148 each) + 2 BN (8 each); block 4->8 stride 2: convs
    # 4->8 (296) and 8->8 (584), 2 BN (16 each), shortcut 1x1 conv (40) + BN (16); dense 8->3 (27).
    stem, first_block, second_block, head = 112 + 8, 2 * (148 + 8), 296 + 584 + 2 * 16 + 40 + 16, 27
    assert lines[-1] == f"Total params: {stem + first_block + second_block + head:,}"
    assert lines[block].endswith(f" {second_block}") and lines[block + 1].endswith(" 296")  # the block's row, its conv's


def test_a_shape_mismatch_names_both_shapes(backend):
    wrong = Residual(Conv2D(2, 3, 3, padding=1))  # changes the channels, identity shortcut
    with pytest.raises(ValueError, match=r"body gives shape \(1, 3, 4, 4\) but the shortcut gives \(1, 2, 4, 4\)"):
        wrong.forward(randn(backend, 1, 2, 4, 4, dtype=np.float32))
    with pytest.raises(ValueError, match="shortcut gives"):
        Sequential([wrong]).summary((2, 4, 4))


def test_the_tracer_sees_inside_blocks(backend):
    model = small_resnet()
    with Tracer(model) as trace:
        model.backward(model.forward(randn(backend, 2, 3, 8, 8, dtype=np.float32)))
    forward = [r.name for r in trace.forward]
    assert forward.index("5.body.0") < forward.index("5.shortcut.0") < forward.index("5")
    backward = [r.name for r in trace.backward]
    assert backward.index("5.body.4") < backward.index("5.body.0") < backward.index("5")
    assert all(group.hooks == [] for _, group in model.named_layers() if isinstance(group, Sequential))


def test_both_paths_carry_the_gradient(backend):
    # With the body's weights at zero, its gradient vanishes: the identity path alone carries dout to x.
    block = Residual(Conv2D(2, 2, 3, padding=1), ReLU(), Conv2D(2, 2, 3, padding=1)).astype(np.float64)
    for value in block.params.values():
        value[...] = 0
    block.forward(randn(backend, 2, 2, 5, 5))
    dout = randn(backend, 2, 2, 5, 5, seed=1)
    np.testing.assert_array_equal(host(backend, block.backward(dout)), host(backend, dout))


def test_a_first_block_skips_its_input_gradient_in_training(backend):
    model = Sequential([basic_block(3, 4, stride=2), ReLU(), Flatten(), Dense(4 * 3 * 3, 2)]).astype(np.float64)
    x, dout = randn(backend, 2, 3, 6, 6), randn(backend, 2, 2, seed=1)
    model.forward(x)
    model.backward(dout)
    full = {k: host(backend, v).copy() for k, v in model.grads.items()}
    model.forward(x)
    assert model.backward(dout, input_grad=False) is None
    assert model[0].needs_input_grad and model[0].body[0].needs_input_grad  # restored after the call
    for k, v in model.grads.items():
        np.testing.assert_allclose(host(backend, v), full[k], rtol=1e-12, err_msg=k)


def test_optimizers_train_nested_parameters(backend):
    minicnn.seed(0)
    model = small_resnet()
    loss_fn, optimizer = SoftmaxCrossEntropy(), SGD(model, lr=0.05, momentum=0.9)
    x, labels = randn(backend, 12, 3, 8, 8, dtype=np.float32), backend.asarray(np.arange(12) % 3)
    before = host(backend, model.params["5.body.3.W"]).copy()
    losses = []
    for _ in range(10):
        losses.append(float(loss_fn.forward(model.forward(x), labels)))
        model.backward(loss_fn.backward())
        optimizer.step()
    assert losses[-1] < 0.7 * losses[0]
    assert not np.array_equal(host(backend, model.params["5.body.3.W"]), before)
    assert ("5.body.3.W", "velocity") in optimizer.state


def test_bad_residual_arguments(backend):
    with pytest.raises(ValueError, match="at least one layer"):
        Residual()
    with pytest.raises(ValueError, match="empty shortcut"):
        Residual(ReLU(), shortcut=[])
    with pytest.raises(TypeError, match="shortcut must be None"):
        Residual(ReLU(), shortcut=ReLU())
    with pytest.raises(TypeError, match="not a minicnn Layer"):
        Residual(ReLU(), "conv")
    with pytest.raises(ValueError, match="no positions"):
        GlobalAvgPool2D().forward(randn(backend, 2, 3, 0, 4))
    _ = MaxPool2D  # noqa: F841
