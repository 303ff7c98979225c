"""A layer of one's own, written as the README shows: every break of the layer contract is a clear error
naming the layer, and what is kept is kept (hyper-parameters through save/load)."""
import copy
import pickle

import numpy as np
import pytest

import minicnn
from minicnn import SGD, Adam, Dense, Layer, ReLU, Residual, Sequential, gradcheck


class LeakyReLU(Layer):
    """As a student writes it after the README's Scale: one hyper-parameter, no config()."""

    def __init__(self, slope=0.01, backend=None):
        super().__init__(backend)
        self.slope = slope

    def forward(self, x):
        self.check_input(x)
        self.x = x
        return self.xp.where(x > 0, x, self.slope * x)

    def backward(self, dout):
        return self.xp.where(self.x > 0, dout, self.slope * dout)


class Scaled(Layer):
    """y = a * x, a learned scalar; ``mistake`` plants one break of the contract in backward."""

    def __init__(self, mistake=None, backend=None):
        super().__init__(backend)
        self.mistake = mistake
        self.params["a"] = self.xp.full((), 1.5, dtype=self.xp.float32)

    def forward(self, x):
        self.x = x
        return self.params["a"] * x

    def backward(self, dout):
        grad = (dout * self.x).sum()
        if self.mistake == "forgets the gradient":
            pass
        elif self.mistake == "another key":
            self.grads["scale"] = grad
        elif self.mistake == "accumulates":
            self.grads["a"] = self.grads.get("a", 0) + grad  # adds to the last step's
        else:
            self.grads["a"] = grad
        if self.mistake == "wrong dx shape":
            return dout.sum(axis=0)
        if self.mistake == "modifies dout":
            dout *= self.params["a"]
            return dout
        return dout * self.params["a"]


def test_hyper_parameters_kept_as_attributes_survive_save_and_load(tmp_path):
    model = Sequential(Dense(3, 4), LeakyReLU(0.3), Dense(4, 2))
    x = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32) * 3
    model.save(tmp_path / "m.npz")
    loaded = Sequential.load(tmp_path / "m.npz")
    assert loaded[1].slope == 0.3 and repr(loaded[1]) == "LeakyReLU(slope=0.3)"
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))


def test_a_hyper_parameter_kept_under_another_name_makes_save_refuse(tmp_path):
    class Shifted(Layer):
        def __init__(self, amount=1.0, backend=None):
            super().__init__(backend)
            self.shift = amount  # not self.amount: config() cannot find it

        def forward(self, x):
            return x + self.shift

    with pytest.raises(TypeError, match=r"Shifted: cannot record its constructor argument\(s\) amount.*"
                                        r"self\.amount = amount.*def config\(self\): return dict\(amount=\.\.\.\)"):
        Sequential(Dense(2, 2), Shifted(2.0)).save(tmp_path / "m.npz")
    assert not (tmp_path / "m.npz").exists()


def test_a_layer_named_like_another_is_refused_when_defined():
    with pytest.raises(TypeError, match=r"test_own_layer\..*ReLU: the layer name 'ReLU' is taken by "
                                        r"minicnn\.layers\.activations\.ReLU.*choose another name"):
        class ReLU(Layer):  # noqa: F811 (the point of the test)
            pass
    assert minicnn.layers.base.LAYER_TYPES["ReLU"] is minicnn.ReLU


@pytest.mark.parametrize("mistake, error, message", [
    ("forgets the gradient", KeyError, r"Scaled\(mistake='forgets the gradient'\)\.backward wrote no grads\['a'\]"),
    ("another key", KeyError, r"Scaled\(mistake='another key'\)\.backward wrote grads\['scale'\], but the layer has "
                              r"no parameter 'scale'"),
    ("wrong dx shape", ValueError, r"Scaled\(mistake='wrong dx shape'\)\.backward returned dx of shape \(6,\), but its "
                                   r"input had shape \(4, 6\)"),
])
def test_a_broken_backward_is_named_in_a_model_and_in_gradcheck(mistake, error, message):
    model = Sequential(Dense(6, 6), Scaled(mistake), Dense(6, 2))
    x = np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32)
    model.forward(x)
    with pytest.raises(error, match=message):
        model.backward(np.ones((4, 2), np.float32))
    with pytest.raises(error, match=message):
        gradcheck(Scaled(mistake), x)


@pytest.mark.parametrize("mistake, message", [
    ("modifies dout", r"Scaled\(mistake='modifies dout'\)\.backward modified dout in place"),
    ("accumulates", r"Scaled\(mistake='accumulates'\)\.backward: a second backward.*other grads\['a'\].*not add"),
])
def test_gradcheck_sees_what_finite_differences_cannot(mistake, message):
    """Both would pass a plain comparison with finite differences on one backward."""
    with pytest.raises(ValueError, match=message):
        gradcheck(Scaled(mistake), np.random.default_rng(0).standard_normal((3, 4)))
    assert gradcheck(Scaled(), np.random.default_rng(0).standard_normal((3, 4))).ok


def test_dout_modified_in_place_would_corrupt_a_residual_block():
    """Why gradcheck refuses it: inside a residual block the other branch reads the same dout."""
    block = Residual(Scaled("modifies dout"))
    with pytest.raises(ValueError, match="modified dout in place"):
        gradcheck(block, np.random.default_rng(0).standard_normal((3, 4)))


def test_a_forgotten_super_init_is_named():
    class NoSuper(Layer):
        def __init__(self):
            self.scale = 2.0

        def forward(self, x):
            self.check_input(x)
            return x * self.scale

    with pytest.raises(AttributeError, match=r"NoSuper has no 'backend': its __init__ must call "
                                             r"super\(\)\.__init__\(backend\) first"):
        NoSuper().forward(np.ones(3))
    with pytest.raises(AttributeError, match="'NoSuper' object has no attribute 'other'"):
        NoSuper().other  # noqa: B018 (other missing attributes keep Python's message)


def test_a_model_s_params_cannot_be_replaced_through_its_view():
    model = Sequential(Dense(2, 3), ReLU(), Dense(3, 1))
    w = np.ones((2, 3), np.float32)
    with pytest.raises(TypeError, match=r"read-only view.*model.params\[name\]\[\.\.\.\] = value.*load_weights"):
        model.params["0.W"] = w
    with pytest.raises(TypeError, match="read-only view"):
        model.params.update({"0.W": w})
    model.params["0.W"][...] = w  # in place: the layer's own array
    np.testing.assert_array_equal(model[0].params["W"], w)
    for copied in (pickle.loads(pickle.dumps(model.params)), copy.deepcopy(model.params)):  # as sent to other ranks
        assert type(copied) is dict and copied.keys() == model.params.keys()
        copied["0.W"] = None  # a copy is a plain dict, no view of the model


@pytest.mark.parametrize("optimizer", [lambda m: SGD(m, lr=0.1, momentum=0.9, weight_decay=0.1),
                                       lambda m: Adam(m, lr=0.1, weight_decay=0.1)])
def test_frozen_parameters_need_no_gradient_and_are_not_trained(optimizer):
    model = Sequential(Dense(3, 4), Scaled("forgets the gradient"), Dense(4, 2))
    model.freeze("1.a")
    assert model.frozen == {"1.a"} and model[1].frozen == {"a"}
    before = {k: v.copy() for k, v in model.params.items()}
    opt = optimizer(model)
    x = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    for _ in range(2):
        model.forward(x)
        model.backward(np.ones((5, 2), np.float32))
        opt.step()
    assert np.array_equal(model.params["1.a"], before["1.a"])
    assert all(not np.array_equal(model.params[k], before[k]) for k in before if k != "1.a")
    model[0].freeze()  # a frozen layer: its gradients may be written, but are not used
    frozen_w = model.params["0.W"].copy()
    model.forward(x)
    model.backward(np.ones((5, 2), np.float32))
    opt.step()
    assert np.array_equal(model.params["0.W"], frozen_w)
    model.unfreeze("1.a")
    model.forward(x)
    with pytest.raises(KeyError, match=r"wrote no grads\['a'\].*or freeze it"):
        model.backward(np.ones((5, 2), np.float32))
    with pytest.raises(KeyError, match="no parameter '9.W'"):
        model.freeze("9.W")
    with pytest.raises(KeyError, match=r"unfreeze: no parameter 'W'; it has \['a'\]"):
        model[1].unfreeze("W")


def test_a_step_without_gradients_is_refused():
    model = Sequential(Dense(3, 2))
    with pytest.raises(RuntimeError, match=r"SGD\.step: no gradient for '0\.W'.*call model\.backward"):
        SGD(model, lr=0.1).step()
