"""ONNX export checked against ONNX Runtime, import checked against ONNX Runtime and PyTorch, and round trips:
from a model on every backend, onto every backend."""
import io
import json
import os
import warnings
from functools import partial

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minicnn
from minicnn import (AvgPool2D, BatchNorm2D, Clip, Conv2D, Dense, Dropout, Flatten, GlobalAvgPool2D, Layer, MaxPool2D,
                     ReLU, ReLU6, Residual, Sequential, Sigmoid, SyncBatchNorm2D, ZeroPad2D)
from minicnn.architectures import ARCHITECTURES, build
from minicnn.cli import main
from minicnn.data import Normalize, channel_stats, load_image
from minicnn.functional import probabilities, sigmoid, softmax
from minicnn.layers import LAYER_TYPES, Container

from conftest import host
from test_gradients import window_geometry

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
import minicnn.onnx as monnx  # noqa: E402  (after the skips: it needs onnx)
from google.protobuf.message import DecodeError  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

SHARED = os.environ.get("MINICNN_DATA") or os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")
CATDOG = os.path.join(SHARED, "cats_vs_dogs")  # the bundled photos, where the examples find them
AVAILABLE = [name for name in ("numpy", "cupy") if name in minicnn.available_backends()]


# --- helpers -----------------------------------------------------------------------------------------------------------

def run_ort(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def assert_close(got, want):
    """float32 through two implementations: equal to a few units in the last place of the largest value."""
    # Two float32 libraries, each with its own summation order and kernels for the CPU: the sums' rounding is a
    # few eps relative to the magnitudes, so the bound is relative to the largest value, or to 1 for probabilities
    # (ONNX Runtime's sigmoid and softmax are accurate to about eps of 1, not of a probability near 0). 1e-5 is
    # 84 eps; seen: up to 7 eps, with the deepest architectures, on AVX-512 and AVX2. A wrong layer, padding or
    # batch norm epsilon (1e-3 for 1e-5) is off by 1e-4 or more.
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(want).max(initial=0))))


def assert_close_after_normalizing(got, want):
    """As :func:`assert_close`, where ONNX Runtime also normalized the float pixels (``input="float"``) by other
    float32 operations than :class:`Normalize`: an input a few eps away, amplified by the network."""
    # Seen: up to 29 eps of the largest logit (an image of one colour: every pixel's error is the same, so they
    # add up instead of averaging out); 1e-4 is 840 eps. A wrong mean or std is off by 1e-2 or more.
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max(initial=0)))


def randomize(model, seed=0):
    """Batch norm statistics and affine parameters away from their initial 1s and 0s, biases away from 0."""
    rng = np.random.default_rng(seed)
    for _, layer in model.named_layers():
        put = partial(layer.backend.asarray, dtype=np.float32)
        if isinstance(layer, BatchNorm2D):
            c = layer.num_channels
            layer.buffers["running_mean"] = put(rng.normal(0, 0.5, c))
            layer.buffers["running_var"] = put(rng.uniform(0.5, 2, c))
            layer.params["gamma"] = put(rng.uniform(0.5, 1.5, c))
            layer.params["beta"] = put(rng.normal(0, 0.3, c))
        elif "b" in layer.params:
            layer.params["b"] = put(rng.normal(0, 0.1, layer.params["b"].shape))
    return model


def predict(model, x):
    """``model.predict`` of host data, on the host."""
    return host(model.backend, model.predict(model.backend.asarray(x)))


def architecture(layers):
    """Layer specs as an ONNX file keeps them: nested Sequentials flattened, no Dropout, no init scheme,
    SyncBatchNorm2D as the BatchNorm2D it is at inference."""
    specs = []
    for layer in layers:
        if isinstance(layer, Sequential):
            specs += architecture(layer)
        elif isinstance(layer, Residual):
            specs.append(("Residual", architecture(layer.body), layer.shortcut and architecture(layer.shortcut)))
        elif not isinstance(layer, Dropout):
            name = "BatchNorm2D" if isinstance(layer, SyncBatchNorm2D) else type(layer).__name__
            specs.append((name, {k: v for k, v in layer.config().items() if k != "init"}))
    return specs


def assert_same_model(loaded, model):
    """Same architecture (as ONNX keeps it), bit-identical parameters and buffers, in the same order; those of
    ``loaded`` on its backend."""
    assert architecture(loaded) == architecture(model)
    assert all(layer.backend is loaded.backend for _, layer in loaded.named_layers())
    for store in ("params", "buffers"):
        mine, theirs = list(getattr(model, store).values()), list(getattr(loaded, store).values())
        assert len(mine) == len(theirs)
        for a, b in zip(mine, theirs):
            assert isinstance(b, loaded.backend.xp.ndarray)
            assert a.dtype == b.dtype and np.array_equal(host(model.backend, a), host(loaded.backend, b))


def assert_loads_onto_every_backend(path, model, x):
    """The file at ``path`` loads onto every backend as ``model`` (on its own backend) and predicts as it does
    on ``x``: the same bits on the same backend."""
    want = predict(model, x)
    for name in AVAILABLE:
        loaded = monnx.load(path, backend=name)
        assert loaded.backend is minicnn.get_backend(name)
        assert_same_model(loaded, model)
        got = predict(loaded, x)
        if loaded.backend is model.backend:
            assert np.array_equal(got, want)  # the same layers with the same weights: the same bits
        else:
            assert_close(got, want)
    return loaded


def op_types(path):
    return [node.op_type for node in onnx.load(str(path)).graph.node]


# --- export: every layer type ------------------------------------------------------------------------------------------

def _nested():
    return Sequential(Sequential(Conv2D(3, 4, 3), ReLU()), Flatten(), Sequential(Dense(4 * 5 * 4, 3)))


LAYER_CASES = {
    "conv": (lambda: Sequential(Conv2D(3, 4, (3, 2), stride=(2, 1), padding=(1, 0))), (3, 9, 8)),
    "max pool, padded with -inf": (lambda: Sequential(MaxPool2D(3, stride=2, padding=1)), (2, 7, 8)),
    "avg pool, padded cells counted": (lambda: Sequential(AvgPool2D((3, 2), stride=(2, 1), padding=1)), (2, 7, 8)),
    "global avg pool": (lambda: Sequential(Conv2D(3, 4, 3), GlobalAvgPool2D(), Dense(4, 2)), (3, 7, 6)),
    "relu, sigmoid, flatten, dense": (lambda: Sequential(Conv2D(3, 2, 3), ReLU(), Sigmoid(), Flatten(), Dense(18, 4)),
                                      (3, 5, 5)),
    "batch norm": (lambda: Sequential(Conv2D(3, 4, 3, padding=1), BatchNorm2D(4), ReLU()), (3, 6, 6)),
    "synchronized batch norm": (lambda: Sequential(Conv2D(3, 4, 3, padding=1), SyncBatchNorm2D(4), ReLU()), (3, 6, 6)),
    "dropout": (lambda: Sequential(Conv2D(3, 2, 3), Dropout(0.5), Flatten(), Dense(8, 2)).train(), (3, 4, 4)),
    "residual, identity shortcut": (lambda: Sequential(Conv2D(3, 4, 1), Residual(
        Conv2D(4, 4, 3, padding=1), BatchNorm2D(4), ReLU(), Conv2D(4, 4, 3, padding=1)), ReLU()), (3, 6, 6)),
    "residual, projection shortcut": (lambda: Sequential(Residual(
        Conv2D(3, 8, 3, stride=2, padding=1), ReLU(), shortcut=[Conv2D(3, 8, 1, stride=2), BatchNorm2D(8)])), (3, 7, 6)),
    "residual inside residual": (lambda: Sequential(Residual(Residual(Conv2D(3, 3, 3, padding=1), ReLU()),
                                                             Conv2D(3, 3, 1))), (3, 5, 5)),
    "nested sequential": (_nested, (3, 7, 6)),
    "grouped and depthwise conv, asymmetric padding": (lambda: Sequential(
        Conv2D(4, 6, 3, stride=2, padding=(0, 1, 0, 1), groups=2), Conv2D(6, 6, (3, 5), padding=(2, 1, 1, 0), groups=6),
        MaxPool2D(2, padding=(0, 1, 1, 0)), AvgPool2D(3, stride=2, padding=(1, 0, 1, 1))), (4, 8, 9)),
    "zero padding, relu6, clip": (lambda: Sequential(ZeroPad2D((0, 1, 2, 0)), Conv2D(3, 4, 3), ReLU6(), ZeroPad2D(1),
                                                     Clip(-0.25, 0.5)), (3, 6, 5)),
}


def test_every_layer_type_has_an_exporter_and_a_case():
    builtin = {cls for cls in LAYER_TYPES.values() if cls.__module__.startswith("minicnn.") and cls is not Container}
    assert builtin == set(monnx.EXPORTERS)
    covered = {type(layer) for build_model, _ in LAYER_CASES.values()
               for model in [build_model()] for layer in [model, *(part for _, part in model.named_layers())]}
    assert covered == set(monnx.EXPORTERS)


@pytest.mark.parametrize("case", sorted(LAYER_CASES))
def test_layer_export_matches_onnxruntime_and_round_trips(case, backend, tmp_path):
    build_model, shape = LAYER_CASES[case]
    model = randomize(build_model())
    path = tmp_path / "model.onnx"
    monnx.export(model, path, input="raw", output="logits", input_shape=shape)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    x = np.random.default_rng(1).standard_normal((3, *shape)).astype(np.float32)
    assert_close(run_ort(path, x), predict(model, x))
    assert "Dropout" not in op_types(path)
    assert_loads_onto_every_backend(path, model, x)


@given(data=st.data(), kind=st.sampled_from(["conv", "grouped conv", "max", "avg"]), seed=st.integers(0, 999))
def test_window_layers_export_for_any_geometry(backend, tmp_path, data, kind, seed):
    kernel, stride, padding, (h, w) = data.draw(window_geometry(max_pad_half=kind in ("max", "avg")))
    layer = {"conv": lambda: Conv2D(2, 3, kernel, stride, padding),
             "grouped conv": lambda: Conv2D(2, 4, kernel, stride, padding, groups=2),
             "max": lambda: MaxPool2D(kernel, stride, padding), "avg": lambda: AvgPool2D(kernel, stride, padding)}[kind]()
    model = randomize(Sequential(layer), seed)
    path = tmp_path / "window.onnx"
    monnx.export(model, path, input="raw", output="logits", input_shape=(2, h, w))
    x = np.random.default_rng(seed).standard_normal((2, 2, h, w)).astype(np.float32)
    assert_close(run_ort(path, x), predict(model, x))
    assert_same_model(monnx.load(path), model)


# --- export: the deployable classifiers ---------------------------------------------------------------------------------

def trained_like(name, size=32, seed=0):
    """A named architecture with drawn weights and the metadata 'minicnn train' saves."""
    minicnn.seed(seed)
    model, _ = build(name, size, 2)
    model.metadata = dict(classes=["cat", "dog"], image_size=size, architecture=name,
                          mean=[0.49, 0.45, 0.41], std=[0.25, 0.24, 0.26])
    return randomize(model, seed)


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_architecture_exports_the_deployable_classifier(name, backend, tmp_path):
    model = trained_like(name)
    path = tmp_path / "model.onnx"
    monnx.export(model, path)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert [(o.domain, o.version) for o in proto.opset_import] == [("", 17)] and proto.ir_version == 8
    images = np.random.default_rng(2).integers(0, 256, (4, 3, 32, 32), dtype=np.uint8)
    normalized = Normalize.from_metadata(model.metadata, backend="numpy")(images)  # on the host, for predict()
    logits = predict(model, normalized)
    k = logits.shape[1]  # 2 classes: two logits, or one (keras-catdog)
    (graph_input,), (graph_output,) = proto.graph.input, proto.graph.output
    assert graph_input.type.tensor_type.elem_type == TensorProto.UINT8
    assert [d.dim_param or d.dim_value for d in graph_input.type.tensor_type.shape.dim] == ["N", 3, 32, 32]
    assert [d.dim_param or d.dim_value for d in graph_output.type.tensor_type.shape.dim] == ["N", k]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    props = {key: json.loads(value) for key, value in session.get_modelmeta().custom_metadata_map.items()}
    assert props == {**model.metadata, "input": "uint8", "output": "probabilities"}

    want = softmax(logits) if k > 1 else sigmoid(logits)  # one output: (N, 1), the second class's probability
    for batch in (images, images[:1]):  # the batch axis is dynamic
        got = session.run(None, {"images": batch})[0]
        assert got.shape == (len(batch), k)
        assert_close(got, want[:len(batch)])
    monnx.export(model, path, output="logits")
    assert_close(run_ort(path, images), logits)
    monnx.export(model, path, input="float", output="logits")
    assert_close_after_normalizing(run_ort(path, images.astype(np.float32) / 255), logits)

    loaded = assert_loads_onto_every_backend(path, model, normalized)
    assert loaded.metadata == model.metadata


def test_uint8_normalization_in_the_graph_gives_the_bits_of_normalize(tmp_path):
    model = Sequential(Dropout())  # nothing but the normalization is left in the graph
    model.metadata = trained_like("catdog-small").metadata
    images = np.random.default_rng(0).integers(0, 256, (2, 3, 32, 32), dtype=np.uint8)
    monnx.export(model, tmp_path / "m.onnx", output="logits")
    assert op_types(tmp_path / "m.onnx") == ["Cast", "Sub", "Mul"]
    assert np.array_equal(run_ort(tmp_path / "m.onnx", images), Normalize.from_metadata(model.metadata)(images))


@pytest.mark.skipif(not os.path.isdir(CATDOG), reason="shared cat/dog photos not present")
def test_onnxruntime_predicts_as_minicnn_predict_on_photos(tmp_path, capsys):
    photos = [os.path.join(CATDOG, "val", c, name) for c in ("cat", "dog")
              for name in sorted(os.listdir(os.path.join(CATDOG, "val", c)))[:3]]
    model = trained_like("catdog-bn", size=64)
    mean, std = channel_stats(np.stack([load_image(p, 64) for p in photos]))
    model.metadata.update(mean=mean.tolist(), std=std.tolist())
    model.save(tmp_path / "best.npz")
    assert main(["export", str(tmp_path / "best.npz"), str(tmp_path / "catdog.onnx")]) == 0
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "best.npz"), *photos]) == 0
    printed = [line.rsplit(": ", 1)[1].split() for line in capsys.readouterr().out.splitlines()]
    probs = run_ort(tmp_path / "catdog.onnx", np.stack([load_image(p, 64) for p in photos]))
    want = probabilities(model.predict(Normalize.from_metadata(model.metadata)(np.stack([load_image(p, 64) for p in photos]))))
    assert_close(probs, want)
    assert [model.metadata["classes"][p.argmax()] for p in probs] == [name for name, _ in printed]
    # Printed to 3 decimals: a probability within assert_close's 1e-5 of a rounding boundary may print either way.
    np.testing.assert_allclose([float(shown.strip("()")) for _, shown in printed], probs.max(axis=1), rtol=0,
                               atol=5e-4 + 1e-5)


# --- export: errors ------------------------------------------------------------------------------------------------------

class Doubling(Layer):
    def forward(self, x):
        return 2 * x


@pytest.mark.parametrize("model, kwargs, error, message", [
    (Sequential(Conv2D(3, 2, 3), Doubling()), dict(input="raw", input_shape=(3, 5, 5)), TypeError,
     "layer 1 is Doubling(), which has no ONNX form"),
    (Sequential(Conv2D(3, 2, 3)), {}, ValueError, "lacks ['mean', 'std', 'image_size'], needed for input='uint8'"),
    (Sequential(Conv2D(3, 2, 3)), dict(input="raw"), ValueError, "pass input='raw' and input_shape=(C, H, W)"),
    (Sequential(Conv2D(3, 2, 3)), dict(input="raw", input_shape=(3, 5, 5)), ValueError,
     "output='probabilities' needs (N, K) logits, but this model gives shape ('N', 2, 3, 3)"),
    (Sequential(Conv2D(3, 2, 3)), dict(input="raw", input_shape=(4, 5, 5), output="logits"), ValueError,
     "does not take inputs of shape ('N', 4, 5, 5)"),
    (Sequential(Conv2D(3, 2, 3)), dict(input="bytes"), ValueError, "input must be one of ('uint8', 'float', 'raw')"),
    (Sequential(Dropout()), dict(input="raw", input_shape=(3,)), ValueError, "computes nothing"),
    (Sequential(Conv2D(3, 2, 3)), dict(input="raw", input_shape="3,5,5"), TypeError,
     "input_shape must be one sample's shape, a tuple of positive ints"),
    (Sequential(Conv2D(3, 2, 3)), dict(input="raw", input_shape=(3, 5.0, 5)), TypeError, "got (3, 5.0, 5)"),
    (Sequential(Conv2D(3, 2, 3)), dict(input="raw", input_shape=(3, 0, 5)), ValueError, "got (3, 0, 5)"),
])
def test_export_errors(model, kwargs, error, message, backend, tmp_path):
    model.to(backend)
    with pytest.raises(error) as caught:
        monnx.export(model, tmp_path / "m.onnx", **kwargs)
    assert message in str(caught.value)
    assert not os.path.exists(tmp_path / "m.onnx")


def test_export_command(tmp_path, capsys):
    model = trained_like("catdog-small")
    model.save(tmp_path / "m.npz")
    assert main(["export", str(tmp_path / "m.npz"), str(tmp_path / "m.onnx"), "--input", "float", "--logits"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert_close_after_normalizing(run_ort(tmp_path / "m.onnx", np.zeros((1, 3, 32, 32), np.float32)),
                                   model.predict(Normalize.from_metadata(model.metadata)(np.zeros((1, 3, 32, 32)))))
    model.metadata = {}
    model.save(tmp_path / "bare.npz")
    assert main(["export", str(tmp_path / "bare.npz"), str(tmp_path / "bare.onnx")]) == 2
    assert "lacks ['mean', 'std', 'image_size']" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "bare.npz"), str(tmp_path / "bare.onnx"),
                 "--input", "raw", "--input-shape", "3,32,32"]) == 0


# --- import: graphs the way other exporters write them -------------------------------------------------------------------

def weight(name, *shape, seed=0):
    return numpy_helper.from_array(np.random.default_rng(seed).standard_normal(shape).astype(np.float32) * 0.3, name)


def graph_file(tmp_path, nodes, initializers, input_shape, opset=17, name="g.onnx"):
    graph = helper.make_graph(nodes, "other", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *input_shape])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    model = onnx.shape_inference.infer_shapes(model)  # declares the output's shape, as exporters do
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


def node(op, inputs, output, name=None, **attributes):
    return helper.make_node(op, inputs, [output], name=name or output, **attributes)


def constant(output, array):
    return helper.make_node("Constant", [], [output], value=numpy_helper.from_array(np.asarray(array), output))


FOREIGN = {
    "gemm transB alpha beta": (lambda: ([
        node("Flatten", ["x"], "f"), node("Gemm", ["f", "B", "C"], "g", transB=1, alpha=0.5, beta=2.0),
        node("Relu", ["g"], "r"), node("Gemm", ["r", "B2"], "y", transB=1)],
        [weight("B", 5, 48), weight("C", 5), weight("B2", 2, 5)]), (3, 4, 4), [Flatten, Dense, ReLU, Dense]),
    "matmul + add": (lambda: ([
        node("Flatten", ["x"], "f"), node("MatMul", ["f", "W"], "m"), node("Add", ["m", "b"], "a"),
        node("Relu", ["a"], "r"), node("MatMul", ["r", "W2"], "m2"), node("Add", ["b2", "m2"], "y")],
        [weight("W", 48, 6), weight("b", 6), weight("W2", 6, 3), weight("b2", 1, 3)]), (3, 4, 4), [Flatten, Dense, ReLU, Dense]),
    "reshape (0, -1) from a Constant node, reshape (-1, D)": (lambda: ([
        node("Conv", ["x", "W", "b"], "c", pads=[1, 1, 1, 1]), node("Relu", ["c"], "r"),
        constant("shape", np.array([0, -1], dtype=np.int64)), node("Reshape", ["r", "shape"], "f"),
        node("Gemm", ["f", "B"], "g", transB=1), node("Relu", ["g"], "r2"),
        node("Reshape", ["r2", "shape2"], "y")],
        [weight("W", 2, 3, 3, 3), weight("b", 2), weight("B", 6, 32),
         numpy_helper.from_array(np.array([-1, 6], dtype=np.int64), "shape2")]), (3, 4, 4),
        [Conv2D, ReLU, Flatten, Dense, ReLU, Flatten]),
    "conv auto_pad and pads": (lambda: ([
        node("Conv", ["x", "W1", "b1"], "c1", auto_pad="SAME_UPPER", kernel_shape=[3, 3]),
        node("Conv", ["c1", "W2"], "c2", auto_pad="SAME_LOWER", dilations=[1, 1], group=1),
        node("Conv", ["c2", "W3", "b3"], "c3", auto_pad="VALID", strides=[1, 2]),
        node("Conv", ["c3", "W4", "b4"], "c4", auto_pad="SAME_UPPER", strides=[2, 2]),
        node("Conv", ["c4", "W5", "b5"], "y", pads=[1, 2, 1, 2])],
        [weight("W1", 4, 3, 3, 3), weight("b1", 4), weight("W2", 4, 4, 5, 5), weight("W3", 4, 4, 2, 3), weight("b3", 4),
         weight("W4", 4, 4, 3, 3), weight("b4", 4), weight("W5", 2, 4, 3, 1), weight("b5", 2)]), (3, 10, 19),
        [Conv2D] * 5),
    "batch norm before and after relu, global pool, softmax": (lambda: ([
        node("Conv", ["x", "W1", "b1"], "c1"), node("BatchNormalization", ["c1", "g1", "be1", "m1", "v1"], "n1",
                                                  epsilon=1e-3, momentum=0.99),
        node("Relu", ["n1"], "r1"), node("Conv", ["r1", "W2", "b2"], "c2"), node("Relu", ["c2"], "r2"),
        node("BatchNormalization", ["r2", "g2", "be2", "m2", "v2"], "n2"), node("GlobalAveragePool", ["n2"], "p"),
        node("Flatten", ["p"], "f"), node("Gemm", ["f", "B", "C"], "g", transB=1), node("Softmax", ["g"], "y", axis=1)],
        [weight("W1", 4, 3, 3, 3), weight("b1", 4), weight("W2", 5, 4, 3, 3), weight("b2", 5), weight("B", 3, 5),
         weight("C", 3), *batchnorm_arrays("1", 4), *batchnorm_arrays("2", 5)]), (3, 8, 8),
        [Conv2D, BatchNorm2D, ReLU, Conv2D, ReLU, BatchNorm2D, GlobalAvgPool2D, Dense]),
    "identity, dropout (opset 17), squeeze, sigmoid of one output": (lambda: ([
        node("Identity", ["W"], "W_alias"), node("Identity", ["x"], "i"), node("Conv", ["i", "W_alias", "b"], "c"),
        node("Dropout", ["c", "ratio"], "d"), node("GlobalAveragePool", ["d"], "p"),
        node("Squeeze", ["p", "axes"], "s"), node("Gemm", ["s", "B"], "g"), node("Sigmoid", ["g"], "y")],
        [weight("W", 4, 3, 3, 3), weight("b", 4), weight("B", 4, 1), numpy_helper.from_array(np.float32(0.25), "ratio"),
         numpy_helper.from_array(np.array([2, 3]), "axes")]), (3, 6, 6), [Conv2D, Dropout, GlobalAvgPool2D, Dense]),
    "opset 11: dropout ratio and squeeze axes as attributes, reduce mean": (lambda: ([
        node("Conv", ["x", "W", "b"], "c"), node("Dropout", ["c"], "d", ratio=0.3),
        node("GlobalAveragePool", ["d"], "p"), node("Squeeze", ["p"], "s", axes=[-1, -2]),
        node("Relu", ["s"], "y")], [weight("W", 4, 3, 3, 3), weight("b", 4)]), (3, 6, 6),
        [Conv2D, Dropout, GlobalAvgPool2D, ReLU]),
    "pooling, reduce mean": (lambda: ([
        node("MaxPool", ["x"], "m", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        node("AveragePool", ["m"], "a", kernel_shape=[3, 2], pads=[1, 1, 1, 1], count_include_pad=1),
        node("AveragePool", ["a"], "a2", kernel_shape=[2, 2], strides=[2, 2]),
        node("ReduceMean", ["a2"], "y", axes=[2, 3], keepdims=0)], []), (3, 11, 12),
        [MaxPool2D, AvgPool2D, AvgPool2D, GlobalAvgPool2D]),
    "constant nodes for weights": (lambda: ([
        constant("W", np.random.default_rng(3).standard_normal((2, 3, 1, 1)).astype(np.float32)),
        helper.make_node("Constant", [], ["b"], value_floats=[0.5, -0.5]),
        node("Conv", ["x", "W", "b"], "y")], []), (3, 4, 4), [Conv2D]),
    "residual blocks": (lambda: ([
        node("Conv", ["x", "W0", "b0"], "c0", pads=[1, 1, 1, 1]), node("Relu", ["c0"], "r0"),
        node("Conv", ["r0", "W1", "b1"], "c1", pads=[1, 1, 1, 1]), node("Relu", ["c1"], "r1"),
        node("Conv", ["r1", "W2", "b2"], "c2", pads=[1, 1, 1, 1]), node("Add", ["r0", "c2"], "s1"),
        node("Relu", ["s1"], "r2"),
        node("Conv", ["r2", "W4", "b4"], "c4", strides=[2, 2]),  # the shortcut first: the Add says which is which
        node("BatchNormalization", ["c4", "g1", "be1", "m1", "v1"], "n4"),
        node("Conv", ["r2", "W3", "b3"], "c3", strides=[2, 2], pads=[1, 1, 1, 1]), node("Add", ["c3", "n4"], "y")],
        [weight("W0", 4, 3, 3, 3), weight("b0", 4), weight("W1", 4, 4, 3, 3), weight("b1", 4), weight("W2", 4, 4, 3, 3),
         weight("b2", 4), weight("W3", 6, 4, 3, 3), weight("b3", 6), weight("W4", 6, 4, 1, 1), weight("b4", 6),
         *batchnorm_arrays("1", 6)]), (3, 6, 7), [Conv2D, ReLU, Residual, ReLU, Residual]),
    "bias adds after conv and matmul, through identity; sigmoid of several outputs": (lambda: ([
        node("Conv", ["x", "W"], "c"), node("Add", ["c", "b1"], "a1"), node("Add", ["b2", "a1"], "a2"),
        node("Relu", ["a2"], "r"), node("GlobalAveragePool", ["r"], "p"), node("Reshape", ["p", "shape"], "f"),
        node("MatMul", ["f", "M"], "m"), node("Identity", ["m"], "i"), node("Add", ["i", "b3"], "a3"),
        node("Sigmoid", ["a3"], "y")],
        [weight("W", 4, 3, 3, 3), weight("b1", 4, 1, 1), weight("b2", 1, 4, 1, 1), weight("M", 4, 5), weight("b3", 5),
         numpy_helper.from_array(np.array([0, -1]), "shape")]), (3, 6, 6), [Conv2D, ReLU, GlobalAvgPool2D, Dense, Sigmoid]),
    "reduce mean keeping dims, then flatten": (lambda: ([
        node("Conv", ["x", "W", "b"], "c"), node("ReduceMean", ["c"], "p", axes=[2, 3], keepdims=1),
        node("Flatten", ["p"], "f"), node("Gemm", ["f", "B"], "y")],
        [weight("W", 4, 3, 3, 3), weight("b", 4), weight("B", 4, 2)]), (3, 6, 6), [Conv2D, GlobalAvgPool2D, Dense]),
    "tensorflow's same padding (grouped, depthwise), clip by constants, pad": (lambda: ([
        node("Conv", ["x", "W1"], "c1", auto_pad="SAME_UPPER", strides=[2, 2]),  # 8x9: pads (0, 1) and (1, 1)
        constant("zero", np.float32(0)), constant("six", np.float32(6)), node("Clip", ["c1", "zero", "six"], "r1"),
        node("Conv", ["r1", "W2", "b2"], "c2", auto_pad="SAME_LOWER", strides=[2, 2], group=4),  # 4x5: (1, 0), (1, 1)
        node("Clip", ["c2", "zero"], "r2"),
        node("Pad", ["r2", "pads", "zero"], "p", mode="constant"),
        node("Conv", ["p", "W3", "b3"], "c3", group=2), node("Clip", ["c3", "low", "high"], "y")],
        [weight("W1", 4, 3, 3, 3), weight("W2", 4, 1, 3, 3), weight("b2", 4), weight("W3", 2, 2, 1, 1), weight("b3", 2),
         numpy_helper.from_array(np.array([0, 0, 1, 0, 0, 0, 0, 2]), "pads"),
         numpy_helper.from_array(np.float32(-0.1), "low"), numpy_helper.from_array(np.array([0.2], np.float32), "high")]),
        (3, 8, 9), [Conv2D, ReLU6, Conv2D, ReLU, ZeroPad2D, Conv2D, Clip]),
    "pads computed from constants, as PyTorch writes them": (lambda: ([
        constant("zeros", np.zeros(2, np.int64)), constant("begin", np.array([1, 2])), constant("end", np.array([0, 3])),
        node("Concat", ["zeros", "begin", "zeros", "end"], "pads", axis=0), node("Pad", ["x", "pads"], "p"),
        node("Relu", ["p"], "y")], []), (3, 4, 4), [ZeroPad2D, ReLU]),
    "three branches from one tensor": (lambda: ([
        node("Relu", ["x"], "r"), node("Conv", ["r", "W", "b"], "c", pads=[1, 1, 1, 1]), node("Sigmoid", ["r"], "s"),
        node("MaxPool", ["r"], "q", kernel_shape=[3, 3], pads=[1, 1, 1, 1]), node("Add", ["c", "s"], "a"),
        node("Add", ["q", "a"], "y")], [weight("W", 3, 3, 3, 3), weight("b", 3)]), (3, 5, 5), [ReLU, Residual]),
}
LEFT_OUT = {  # the output activation that a case's graph ends with and its imported model leaves out (logits out)
    "batch norm before and after relu, global pool, softmax": softmax,
    "identity, dropout (opset 17), squeeze, sigmoid of one output": sigmoid,
}


def batchnorm_arrays(suffix, c):
    rng = np.random.default_rng(len(suffix) + c)
    return [numpy_helper.from_array(a.astype(np.float32), name + suffix) for name, a in
            (("g", rng.uniform(0.5, 1.5, c)), ("be", rng.normal(0, 0.3, c)), ("m", rng.normal(0, 0.5, c)),
             ("v", rng.uniform(0.5, 2, c)))]


@pytest.mark.parametrize("case", sorted(FOREIGN))
def test_import_graphs_of_other_exporters(case, backend, tmp_path):
    make, shape, layer_types = FOREIGN[case]
    nodes, initializers = make()
    path = graph_file(tmp_path, nodes, initializers, shape, opset=11 if case.startswith("opset 11") else 17)
    model = monnx.load(path)
    assert model.backend is backend and [type(layer) for layer in model] == layer_types
    x = np.random.default_rng(4).standard_normal((3, *shape)).astype(np.float32)
    want, got = run_ort(path, x), predict(model, x)
    if case in LEFT_OUT:
        got = LEFT_OUT[case](got)
    assert got.shape == want.shape
    assert_close(got, want)


def test_imported_layers_take_what_the_graph_says(tmp_path):
    model = monnx.load(graph_file(tmp_path, *FOREIGN["batch norm before and after relu, global pool, softmax"][0](),
                                  (3, 8, 8)))
    assert model[1].config() == dict(num_channels=4, momentum=0.01, eps=0.001)  # 1 - ONNX's momentum, as decimals
    assert model[5].config() == dict(num_channels=5, momentum=0.1, eps=1e-05)  # ONNX's defaults
    residual = monnx.load(graph_file(tmp_path, *FOREIGN["residual blocks"][0](), (3, 6, 7)))
    assert residual[2].shortcut is None and len(residual[2].body) == 3  # Add(r0, c2): the identity comes first
    assert [type(layer) for layer in residual[4].shortcut] == [Conv2D, BatchNorm2D]
    assert [type(layer) for layer in residual[4].body] == [Conv2D] and residual[4].body[0].kernel_size == (3, 3)
    dropout = monnx.load(graph_file(tmp_path, *FOREIGN["identity, dropout (opset 17), squeeze, sigmoid of one output"][0](),
                                    (3, 6, 6)))
    assert dropout[1].p == 0.25


def test_imported_model_trains(backend, tmp_path):
    model = monnx.load(graph_file(tmp_path, *FOREIGN["residual blocks"][0](), (3, 6, 7)))
    before = {k: host(backend, v).copy() for k, v in model.params.items()}
    x = backend.asarray(np.random.default_rng(0).standard_normal((2, 3, 6, 7)), dtype=np.float32)
    model.backward(backend.xp.ones_like(model.forward(x)))
    minicnn.SGD(model, lr=0.1).step()  # weights read from the file are writable arrays
    assert all(not np.array_equal(before[k], host(backend, v)) for k, v in model.params.items() if k.endswith("W"))


# --- import: errors -----------------------------------------------------------------------------------------------------

W333 = weight("W", 4, 3, 3, 3)
PADS = numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1]), "pads")
NAN = numpy_helper.from_array(np.where(np.arange(36).reshape(4, 3, 3, 1) == 7, np.nan, 0.5).astype(np.float32), "Wnan")
ERRORS = [  # the graph, the place an error names first (a node, or for a graph-shape error a tensor), the message
    ([node("Tanh", ["x"], "y", name="bad")], [], "node 'bad' (Tanh): ",
     "operator Tanh is not supported; minicnn imports Add, AveragePool"),
    ([node("Conv", ["x", "W"], "y", name="bad", group=1, dilations=[2, 2])], [W333], "node 'bad' (Conv): ",
     "dilations=[2, 2]"),
    ([node("Pad", ["x", "pads"], "y", name="bad", mode="reflect")], [PADS], "node 'bad' (Pad): ", "mode='reflect'"),
    ([node("Pad", ["x", "pads", "one"], "y", name="bad")], [PADS, numpy_helper.from_array(np.float32(1), "one")],
     "node 'bad' (Pad): ", "pads with zeros"),
    ([node("Pad", ["x", "pads_c"], "y", name="bad")], [numpy_helper.from_array(np.array([0, 1, 0, 0, 0, 0, 0, 0]), "pads_c")],
     "node 'bad' (Pad): ", "[0, 0, top, left, 0, 0, bottom, right]"),
    ([node("Clip", ["x", "", "hi"], "y", name="bad")], [numpy_helper.from_array(np.float32(1), "hi")],
     "node 'bad' (Clip): ", "min=None, max=1.0: minicnn's Clip has both bounds"),
    ([node("Clip", ["x", "hi", "lo"], "y", name="bad")], [numpy_helper.from_array(np.float32(1), "hi"),
                                                          numpy_helper.from_array(np.float32(0), "lo")],
     "node 'bad' (Clip): ", "low must be below high"),
    ([node("Conv", ["x", "Wg"], "y", name="bad", group=2)], [weight("Wg", 3, 1, 3, 3)], "node 'bad' (Conv): ",
     "out_channels (3) must both be multiples of groups (2)"),
    ([node("Reshape", ["W", "s5"], "Wr", name="bad"), node("Relu", ["x"], "y")],
     [W333, numpy_helper.from_array(np.array([5, -1]), "s5")], "node 'bad' (Reshape): ",
     "cannot compute it from its constant inputs"),  # 108 weights are not 5 rows
    ([node("MaxPool", ["x"], "y", name="bad", kernel_shape=[2, 2], ceil_mode=1)], [], "node 'bad' (MaxPool): ",
     "ceil_mode=1"),
    ([node("AveragePool", ["x"], "y", name="bad", kernel_shape=[3, 3], pads=[1, 1, 1, 1])], [],
     "node 'bad' (AveragePool): ", "count_include_pad=0"),
    ([node("MaxPool", ["x"], "y", name="bad", kernel_shape=[3, 3], pads=[2, 2, 2, 2])], [], "node 'bad' (MaxPool): ",
     "at most half the kernel"),
    ([node("Flatten", ["x"], "y", name="bad", axis=2)], [], "node 'bad' (Flatten): ", "axis=2"),
    ([node("Flatten", ["x"], "f"), node("Gemm", ["B", "f"], "y", name="bad", transA=1)], [weight("B", 48, 2)],
     "node 'bad' (Gemm): ", "transA=1"),
    ([node("Softmax", ["x"], "s", name="bad", axis=1), node("Relu", ["s"], "y")], [], "node 'bad' (Softmax): ",
     "only as the graph's last node"),
    ([node("Flatten", ["x"], "f"), node("BatchNormalization", ["f", "g1", "be1", "m1", "v1"], "y", name="bad")],
     batchnorm_arrays("1", 48), "node 'bad' (BatchNormalization): ", "on a 2-D input"),
    ([node("GlobalAveragePool", ["x"], "p", name="bad"), node("Conv", ["p", "W"], "y")], [W333],
     "node 'bad' (GlobalAveragePool): ", "the next node must be a Flatten, Reshape or Squeeze"),
    ([node("Reshape", ["x", "s"], "y", name="bad")], [numpy_helper.from_array(np.array([0, 3, -1]), "s")],
     "node 'bad' (Reshape): ", "only as a flatten to (N, C*H*W)"),
    ([node("Relu", ["x"], "W_computed"), node("Conv", ["x", "W_computed"], "y", name="bad")], [],
     "node 'bad' (Conv): ", "its input 1 ('W_computed') is computed in the graph"),  # from the input (else folded)
    ([node("Relu", ["x"], "r"), node("Add", ["r", "c"], "y", name="bad")], [weight("c", 1, 3, 4, 4)],
     "node 'bad' (Add): ", "only as the bias"),
    ([node("Relu", ["x"], "a"), node("Sigmoid", ["x"], "y")], [], "tensor 'a' ", "is read by no node"),
    ([node("Relu", ["x"], "y"), node("Add", ["x", "x"], "d")], [], "tensor 'x' ",
     "is read by ['Relu', 'Add'], whose paths do not meet"),
    # weights that are not finite numbers, as Sequential.load refuses them in a .npz
    ([node("Conv", ["x", "Wnan"], "y", name="bad")], [NAN], "node 'bad' (Conv): ",
     "its input 1 ('Wnan') holds NaN or infinite values"),
    ([node("Conv", ["x", "W", "binf"], "y", name="bad")], [W333, numpy_helper.from_array(
        np.array([0, np.inf, 0, 0], np.float32), "binf")], "node 'bad' (Conv): ", "its input 2 ('binf') holds NaN"),
    ([constant("Wc", np.full((4, 3, 1, 1), -np.inf, np.float32)), node("Conv", ["x", "Wc"], "y", name="bad")], [],
     "node 'bad' (Conv): ", "its input 1 ('Wc') holds NaN or infinite values"),
    ([node("Conv", ["x", "W"], "c"), node("Add", ["c", "bnan"], "y", name="bad")], [W333, numpy_helper.from_array(
        np.full((4, 1, 1), np.nan, np.float32), "bnan")], "node 'bad' (Add): ", "its input 1 ('bnan') holds NaN"),
    ([node("Flatten", ["x"], "f"), node("Gemm", ["f", "B"], "y", name="bad", alpha=1e38)],
     [numpy_helper.from_array(np.full((48, 2), 10, np.float32), "B")], "node 'bad' (Gemm): ",
     "W of Dense(in_features=48, out_features=2, init='he') would hold NaN or infinite values"),  # 10 * 1e38 overflows
    ([node("MaxPool", ["x"], "y", name="bad", kernel_shape=[2, 2], dilations=[1, 1], storage_order=0)], [],
     None, None),  # accepted: the control case
]


@pytest.mark.parametrize("nodes, initializers, where, message", ERRORS)
def test_import_errors_name_the_node(nodes, initializers, where, message, tmp_path):
    path = graph_file(tmp_path, nodes, initializers, (3, 4, 4))
    if message is None:
        assert isinstance(monnx.load(path)[0], MaxPool2D)
        return
    with pytest.raises(ValueError) as caught:
        monnx.load(path)
    text = str(caught.value)
    assert text.startswith(f"{path}: {where}") and message in text, text


def test_import_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        monnx.load(tmp_path / "absent.onnx")
    with pytest.raises(TypeError, match="minicnn.onnx.load: path must be a str or os.PathLike, got None"):
        monnx.load(None)
    path = graph_file(tmp_path, [node("Relu", ["x"], "y")], [], (3, 4, 4), opset=10)
    with pytest.raises(ValueError, match="opset 10; minicnn imports ONNX opset 11 or later"):
        monnx.load(path)
    graph = helper.make_graph([node("Add", ["x", "x2"], "y")], "two", [
        helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 3]) for n in ("x", "x2")],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "two.onnx"))
    with pytest.raises(ValueError, match=r"one input and one output; this one has inputs \['x', 'x2'\]"):
        monnx.load(tmp_path / "two.onnx")


def external_data_file(tmp_path, location, data_at="w.bin"):
    """A model file in ``tmp_path / "model"`` whose Conv weights are in a file of their own, at ``tmp_path /
    data_at``, which the model's file gives as ``location``."""
    (tmp_path / "model").mkdir(exist_ok=True)
    path = graph_file(tmp_path / "model", [node("Conv", ["x", "W"], "y")], [W333], (3, 4, 4), name="ext.onnx")
    proto = onnx.load(str(path))
    onnx.external_data_helper.convert_model_to_external_data(proto, location="w.bin", size_threshold=0)
    onnx.save(proto, str(path))
    os.replace(tmp_path / "model" / "w.bin", tmp_path / data_at)
    proto = onnx.load(str(path), load_external_data=False)
    for entry in proto.graph.initializer[0].external_data:
        if entry.key == "location":
            entry.value = location
    onnx.save(proto, str(path))
    return path


def test_import_reads_tensors_kept_beside_the_model(tmp_path):
    path = external_data_file(tmp_path, "weights.bin", data_at="model/weights.bin")
    np.testing.assert_array_equal(monnx.load(path)[0].params["W"], numpy_helper.to_array(W333))


def bad_file(tmp_path, data):
    (tmp_path / "bad.onnx").write_bytes(data)
    return tmp_path / "bad.onnx"


FILE_ERRORS = {  # a file onnx cannot read or check, what onnx raises (chained), what minicnn.onnx.load says first
    "junk": (lambda tmp_path: bad_file(tmp_path, b"\x00not an onnx file at all"), DecodeError, "not an ONNX file ("),
    "truncated": (lambda tmp_path: bad_file(tmp_path, graph_file(tmp_path, [node("Conv", ["x", "W"], "y")], [W333],
                                                                 (3, 4, 4)).read_bytes()[:200]),
                  DecodeError, "not an ONNX file ("),
    "empty": (lambda tmp_path: bad_file(tmp_path, b""), onnx.checker.ValidationError, "not a valid ONNX model: "),
    "checker": (lambda tmp_path: graph_file(tmp_path, [node("Conv", ["x", "W"], "y", alpha=1.0)], [W333], (3, 4, 4)),
                onnx.checker.ValidationError, "not a valid ONNX model: "),
    # onnx's own words differ between its versions; the ValueError's first words are minicnn's
    "external data outside the folder": (lambda tmp_path: external_data_file(tmp_path, "../w.bin"),
                                         onnx.checker.ValidationError, "cannot read its tensors: "),
    "external data at an absolute path": (lambda tmp_path: external_data_file(tmp_path, str(tmp_path / "w.bin")),
                                          onnx.checker.ValidationError, "cannot read its tensors: "),
    "external data absent": (lambda tmp_path: external_data_file(tmp_path, "absent.bin"), onnx.checker.ValidationError,
                             "cannot read its tensors: "),
}


@pytest.mark.parametrize("case", sorted(FILE_ERRORS))
def test_import_turns_the_errors_of_onnx_into_value_errors_naming_the_file(case, tmp_path):
    make, cause, message = FILE_ERRORS[case]
    path = make(tmp_path)
    with pytest.raises(ValueError) as caught:
        monnx.load(path)
    assert str(caught.value).startswith(f"{path}: {message}"), str(caught.value)
    assert type(caught.value) is ValueError and isinstance(caught.value.__cause__, cause)


def test_import_checks_the_normalization_against_the_metadata(tmp_path):
    model = trained_like("catdog-small")
    proto = monnx.export(model, tmp_path / "m.onnx")
    for prop in proto.metadata_props:
        if prop.key == "mean":
            prop.value = json.dumps([0.5, 0.5, 0.5])
    onnx.save(proto, str(tmp_path / "edited.onnx"))
    with pytest.raises(ValueError, match="normalization nodes disagree with its metadata's mean and std"):
        monnx.load(tmp_path / "edited.onnx")


# --- import: PyTorch's exporter ------------------------------------------------------------------------------------------

def torch_models(torch):
    nn = torch.nn

    class Block(nn.Module):
        """relu(body(x) + shortcut(x)), as torchvision's BasicBlock."""

        def __init__(self, c_in, c_out, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1)
            self.bn1 = nn.BatchNorm2d(c_out)
            self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1)
            self.shortcut = (nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride), nn.BatchNorm2d(c_out))
                             if stride != 1 or c_in != c_out else None)

        def forward(self, x):
            out = self.conv2(torch.relu(self.bn1(self.conv1(x))))
            return torch.relu(out + (x if self.shortcut is None else self.shortcut(x)))

    return {
        "sequential": nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 0)), nn.ReLU(), nn.AvgPool2d(2, padding=1),
            nn.Flatten(), nn.Linear(6 * 2 * 2, 8), nn.Sigmoid(), nn.Dropout(0.2), nn.Linear(8, 3)),
        "residual": nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), Block(4, 4, 1), Block(4, 6, 2),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 2)),
        # TensorFlow's "same" padding as EfficientNet-Lite's PyTorch port writes it; depthwise and grouped convolutions
        "mobile": nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(3, 8, 3, 2), nn.BatchNorm2d(8), nn.ReLU6(),
                                nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.Hardtanh(-1.5, 2.5), nn.Conv2d(8, 4, 1, groups=2),
                                nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)),
    }


@pytest.mark.parametrize("name", ["sequential", "residual", "mobile"])
def test_import_from_torch_onnx_export(name, backend, tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = torch_models(torch)[name].eval()
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.3, 0.3)
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter is deprecated, but needs no onnxscript
        torch.onnx.export(net, torch.zeros(1, 3, 8, 8), f, dynamo=False, opset_version=17, do_constant_folding=False,
                          input_names=["x"], dynamic_axes={"x": {0: "N"}})  # no folding: BatchNorm stays a node
    (tmp_path / "torch.onnx").write_bytes(f.getvalue())
    model = monnx.load(tmp_path / "torch.onnx").astype(np.float64).eval()
    net = net.double()

    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8))
    dout = np.random.default_rng(1).standard_normal((2, 3 if name == "sequential" else 2))
    y = host(backend, model.forward(backend.asarray(x)))
    model.backward(backend.asarray(dout))
    ty = net(torch.tensor(x))
    ty.backward(torch.tensor(dout))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-10, atol=1e-12)
    # minicnn's parameters in order, beside PyTorch's (a Dense weight is the transpose of a Linear's)
    ours = [(layer, key) for _, layer in model.named_layers() if not layer.sublayers() for key in layer.params]
    theirs = [p for p in net.parameters()]
    assert len(ours) == len(theirs)
    for (layer, key), p in zip(ours, theirs):
        transpose = isinstance(layer, Dense) and key == "W"
        np.testing.assert_array_equal(host(backend, layer.params[key]),
                                      p.detach().numpy().T if transpose else p.detach().numpy())
        np.testing.assert_allclose(host(backend, layer.grads[key]), p.grad.numpy().T if transpose else p.grad.numpy(),
                                   rtol=1e-10, atol=1e-12, err_msg=f"{layer.describe()} {key}")
