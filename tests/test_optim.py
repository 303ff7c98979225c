import numpy as np
import pytest

from minicnn import SGD, Adam, Dense, RMSProp, Sequential

from conftest import host, randn

torch = pytest.importorskip("torch")

CASES = [
    (SGD, dict(lr=0.1), torch.optim.SGD),
    (SGD, dict(lr=0.1, momentum=0.9), torch.optim.SGD),
    (SGD, dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01), torch.optim.SGD),
    (Adam, dict(lr=0.01), torch.optim.Adam),
    (Adam, dict(lr=0.01, betas=(0.8, 0.99), weight_decay=0.1), torch.optim.Adam),
    (RMSProp, dict(lr=0.01), torch.optim.RMSprop),
    (RMSProp, dict(lr=0.01, momentum=0.5, weight_decay=0.01), torch.optim.RMSprop),
]


@pytest.mark.parametrize("ours, kwargs, theirs", CASES, ids=[f"{c[0].__name__}{c[1]}" for c in CASES])
def test_matches_torch_over_several_steps(backend, ours, kwargs, theirs):
    model = Sequential([Dense(4, 3)]).astype(np.float64)
    tparams = [torch.tensor(host(backend, p), requires_grad=True) for p in model.params.values()]
    opt = ours(model, **kwargs)
    topt = theirs(tparams, **kwargs)
    for step in range(5):
        x = randn(backend, 6, 4, seed=step)
        dout = randn(backend, 6, 3, seed=100 + step)
        model.forward(x)
        model.backward(dout)
        opt.step()
        tx, tdout = torch.tensor(host(backend, x)), torch.tensor(host(backend, dout))
        topt.zero_grad()
        (tx @ tparams[0] + tparams[1]).backward(tdout)
        topt.step()
    for p, t in zip(model.params.values(), tparams):
        np.testing.assert_allclose(host(backend, p), t.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_optimizer_follows_a_model_that_changed_dtype(backend):
    model = Sequential([Dense(2, 1)])
    opt = SGD(model, lr=0.1)
    model.astype(np.float64)
    model.forward(randn(backend, 3, 2))
    model.backward(randn(backend, 3, 1))
    before = host(backend, model.params["0.W"]).copy()
    opt.step()
    assert not np.array_equal(host(backend, model.params["0.W"]), before)


def test_bad_settings():
    with pytest.raises(ValueError, match="lr"):
        SGD(Dense(2, 1), lr=0)
    with pytest.raises(ValueError, match="nesterov"):
        SGD(Dense(2, 1), lr=0.1, nesterov=True)


def test_a_list_of_arrays_is_refused_not_trained_with_stale_gradients():
    model = Sequential([Dense(2, 1)])
    with pytest.raises(TypeError, match=r"SGD: expected the model.*got a list.*SGD\(model, lr=\.\.\.\)"):
        SGD(list(model.params.values()), lr=0.1)
