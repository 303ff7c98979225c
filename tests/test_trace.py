import numpy as np

from minicnn import Conv2D, Dense, Flatten, MaxPool2D, ReLU, Sequential, SoftmaxCrossEntropy
from minicnn.trace import Tracer

from conftest import host, randn


def test_tracer_records_every_layer_both_ways(backend):
    model = Sequential([Conv2D(1, 2, 3), ReLU(), MaxPool2D(2), Flatten(), Dense(8, 2)])
    x = randn(backend, 2, 1, 6, 6, dtype=np.float32)
    loss = SoftmaxCrossEntropy()
    with Tracer(model, keep_arrays=True) as trace:
        loss.forward(model.forward(x), backend.asarray(np.array([0, 1])))
        dlogits = loss.backward()
        dx = model.backward(dlogits)
    assert model.hooks == []  # removed on exit
    assert [r.name for r in trace.forward] == ["0", "1", "2", "3", "4"]
    assert [r.name for r in trace.backward] == ["4", "3", "2", "1", "0"]
    assert [r.output_shape for r in trace.forward] == [(2, 2, 4, 4), (2, 2, 4, 4), (2, 2, 2, 2), (2, 8), (2, 2)]
    np.testing.assert_array_equal(trace.forward[0].input, host(backend, x))
    np.testing.assert_array_equal(trace.forward[1].output, np.maximum(trace.forward[0].output, 0))
    np.testing.assert_array_equal(trace.backward[0].input, host(backend, dlogits))
    np.testing.assert_array_equal(trace.backward[-1].output, host(backend, dx))
    relu = trace.forward[1]
    assert relu.stats["min"] == 0 and relu.stats["max"] == relu.output.max()
    assert set(trace.backward[0].grads) == {"W", "b"}
    text = repr(trace)
    assert "forward             0 Conv2D" in text and "backward            4 Dense" in text and "(2, 1, 6, 6)" in text


def test_tracer_without_arrays_keeps_only_summaries(backend):
    model = Sequential([Dense(3, 2)])
    with Tracer(model) as trace:
        model.forward(randn(backend, 4, 3, dtype=np.float32))
    assert trace.forward[0].output is None and trace.forward[0].output_shape == (4, 2)


def test_layer_repr_shows_hyperparameters_and_parameter_shapes(backend):
    assert repr(Conv2D(3, 8, (3, 5), stride=2)) == (
        "Conv2D(in_channels=3, out_channels=8, kernel_size=(3, 5), stride=(2, 2), padding=(0, 0), init='he') "
        "[W (8, 3, 3, 5), b (8,)]")
    assert repr(MaxPool2D(2)) == "MaxPool2D(kernel_size=(2, 2), stride=(2, 2), padding=(0, 0))"
    assert repr(ReLU()) == "ReLU()"
