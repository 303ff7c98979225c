"""Export: a minicnn model as an ONNX file, written by a table of small functions, one per layer type (``EXPORTERS``).

The exported graph (opset 17, a dynamic batch axis N), by default::

    images (N, 3, S, S) uint8 -> Cast -> Sub(255 mean) -> Mul(1 / (255 std))   the training set's normalization
      -> a node per layer (Dropout: none; GlobalAvgPool2D: two)                 logits (N, K)
      -> Softmax, or Sigmoid for one output                                    probabilities
"""
import json
import numbers

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .. import __version__
from ..fileio import atomic_write
from ..layers import (AvgPool2D, BatchNorm2D, Clip, Conv2D, Dense, Dropout, Flatten, GlobalAvgPool2D, MaxPool2D, ReLU,
                      ReLU6, Residual, Sigmoid, SyncBatchNorm2D, ZeroPad2D)
from ..windows import edges
from ..model import Sequential
from .conventions import GRAPH_KEYS, INPUTS, IR_VERSION, OPSET, OUTPUTS, normalization, value_shape


class _GraphBuilder:
    """The nodes and initializers of the graph being written. A node's output tensor is named like the node."""

    def __init__(self):
        self.nodes, self.initializers = [], []

    def constant(self, name, array, dtype=np.float32):
        self.initializers.append(numpy_helper.from_array(np.asarray(array, dtype=dtype), name))
        return name

    def array(self, layer, name, key):
        """The layer's parameter or buffer ``key`` as an initializer named as in ``model.params`` ("3.W")."""
        value = layer.params[key] if key in layer.params else layer.buffers[key]
        return self.constant(f"{name}.{key}", layer.backend.to_numpy(value))

    def node(self, op, inputs, name, **attributes):
        self.nodes.append(helper.make_node(op, inputs, [name], name=name, **attributes))
        return name

    def rename(self, old, new):
        for node in self.nodes:
            for names in (node.input, node.output):
                for i, name in enumerate(names):
                    if name == old:
                        names[i] = new

    def model(self, inputs, outputs, props=None):
        graph = helper.make_graph(self.nodes, "minicnn", inputs, outputs, self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION,
                                  producer_name="minicnn", producer_version=__version__)
        helper.set_model_props(model, props or {})
        return model


def _pads(layer):
    """ONNX's ``pads`` of a 4-D tensor's two spatial axes: [top, left, bottom, right]."""
    (top, bottom), (left, right) = edges(layer.padding)
    return [top, left, bottom, right]


def _window_attributes(layer):
    return dict(kernel_shape=list(layer.kernel_size), strides=list(layer.stride), pads=_pads(layer))


def _export_conv(layer, name, x, g):
    groups = {} if layer.groups == 1 else dict(group=layer.groups)  # the default unwritten: older files alike
    return g.node("Conv", [x, g.array(layer, name, "W"), g.array(layer, name, "b")], name, **_window_attributes(layer),
                  **groups)


def _export_clip(layer, name, x, g):
    return g.node("Clip", [x, g.constant(f"{name}.low", layer.low), g.constant(f"{name}.high", layer.high)], name)


def _export_pad(layer, name, x, g):
    top, left, bottom, right = _pads(layer)
    pads = g.constant(f"{name}.pads", [0, 0, top, left, 0, 0, bottom, right], dtype=np.int64)  # (N, C, H, W)'s
    return g.node("Pad", [x, pads], name, mode="constant")


def _export_max_pool(layer, name, x, g):
    return g.node("MaxPool", [x], name, **_window_attributes(layer))  # ONNX, too, never picks a padded cell


def _export_avg_pool(layer, name, x, g):
    return g.node("AveragePool", [x], name, count_include_pad=1, **_window_attributes(layer))


def _export_global_pool(layer, name, x, g):
    return g.node("Flatten", [g.node("GlobalAveragePool", [x], f"{name}/pool")], name, axis=1)  # (N, C, 1, 1) -> (N, C)


def _export_dense(layer, name, x, g):
    return g.node("Gemm", [x, g.array(layer, name, "W"), g.array(layer, name, "b")], name)  # W (D, M): no transpose


def _export_batchnorm(layer, name, x, g):
    stats = [g.array(layer, name, key) for key in ("gamma", "beta", "running_mean", "running_var")]
    # ONNX's momentum weighs the old running value, minicnn's the batch's.
    return g.node("BatchNormalization", [x, *stats], name, epsilon=layer.eps, momentum=1 - layer.momentum)


def _export_sequential(model, name, x, g):
    for i, layer in enumerate(model):
        x = _export_layer(layer, f"{name}.{i}" if name else str(i), x, g)
    return x


def _export_residual(block, name, x, g):
    body = _export_sequential(block.body, f"{name}.body", x, g)
    shortcut = x if block.shortcut is None else _export_sequential(block.shortcut, f"{name}.shortcut", x, g)
    return g.node("Add", [body, shortcut], name)


EXPORTERS = {
    Conv2D: _export_conv,
    MaxPool2D: _export_max_pool,
    AvgPool2D: _export_avg_pool,
    GlobalAvgPool2D: _export_global_pool,
    ReLU: lambda layer, name, x, g: g.node("Relu", [x], name),
    Clip: _export_clip,
    ReLU6: _export_clip,
    ZeroPad2D: _export_pad,
    Sigmoid: lambda layer, name, x, g: g.node("Sigmoid", [x], name),
    Flatten: lambda layer, name, x, g: g.node("Flatten", [x], name, axis=1),
    Dense: _export_dense,
    BatchNorm2D: _export_batchnorm,
    SyncBatchNorm2D: _export_batchnorm,  # at inference, plain batch normalization
    Dropout: lambda layer, name, x, g: x,  # the identity at inference
    Residual: _export_residual,
    Sequential: _export_sequential,
}
"""Layer class -> ``exporter(layer, name, x, graph)``: adds the layer's nodes reading tensor ``x``, returns its output tensor."""


def _export_layer(layer, name, x, g):
    exporter = EXPORTERS.get(type(layer))  # the exact class: a subclass may compute something else
    if exporter is None:
        known = ", ".join(sorted(cls.__name__ for cls in EXPORTERS))
        raise TypeError(f"minicnn.onnx.export: layer {name} is {layer.describe()}, which has no ONNX form "
                        f"(exportable layers: {known})")
    return exporter(layer, name, x, g)


def _export_normalization(x, input, metadata, g):
    offset, scale = normalization(metadata, 255 if input == "uint8" else 1)
    if input == "uint8":
        x = g.node("Cast", [x], "normalize/cast", to=TensorProto.FLOAT)
    x = g.node("Sub", [x, g.constant("normalize/offset", offset)], "normalize/sub")
    return g.node("Mul", [x, g.constant("normalize/scale", scale)], "normalize/mul")


def _input_shape(metadata, input, input_shape):
    """One sample's shape for the graph's input, after checking that the metadata has what ``input`` needs."""
    needed = (["mean", "std"] if input != "raw" else []) + (["image_size"] if input_shape is None else [])
    missing = [key for key in needed if key not in metadata]
    if missing:
        raise ValueError(f"minicnn.onnx.export: model.metadata lacks {missing}, needed for input={input!r} (a model "
                         "saved by 'minicnn train' has them); for a model built in Python, pass input='raw' and "
                         "input_shape=(C, H, W) (on the command line: --input raw --input-shape C,H,W)")
    clash = [key for key in GRAPH_KEYS if key in metadata]
    if clash:
        raise ValueError(f"minicnn.onnx.export: model.metadata uses the keys {clash}, which the ONNX file keeps "
                         "for describing its graph; rename them")
    size = metadata.get("image_size")
    shape = _checked_shape(input_shape) if input_shape is not None else (3, size, size)
    if input != "raw" and shape[0] != len(metadata["mean"]):
        raise ValueError(f"minicnn.onnx.export: input_shape {shape} has {shape[0]} channels but the "
                         f"normalization has {len(metadata['mean'])}")
    return shape


def _checked_shape(input_shape):
    """``input_shape`` as a tuple of ints >= 1 and names of dynamic axes, or a clear error."""
    what = "one sample's shape, a tuple of positive ints (or names of dynamic axes), e.g. (3, 96, 96)"
    if not isinstance(input_shape, (tuple, list)) or not input_shape or not all(
            (isinstance(d, str) and d) or (isinstance(d, numbers.Integral) and not isinstance(d, bool)) for d in input_shape):
        raise TypeError(f"minicnn.onnx.export: input_shape must be {what}, got {input_shape!r}")
    if any(not isinstance(d, str) and d < 1 for d in input_shape):
        raise ValueError(f"minicnn.onnx.export: input_shape must be {what}, got {tuple(input_shape)}")
    return tuple(d if isinstance(d, str) else int(d) for d in input_shape)


def _logits_shape(model, g, graph_input, logits, input_shape):
    """The shape of the model's output in the graph, checking first that the model takes ``input_shape``."""
    refused = f"minicnn.onnx.export: the model does not take inputs of shape {('N', *input_shape)}"
    if all(isinstance(d, int) for d in input_shape):  # minicnn's errors name the layer that refuses the shape
        try:
            model.predict(model.backend.xp.zeros((1, *input_shape), dtype=model.dtype or np.float32))
        except (ValueError, TypeError) as e:
            raise ValueError(f"{refused}: {e}") from None
    probe = g.model([graph_input], [helper.make_tensor_value_info(logits, TensorProto.FLOAT, None)])
    try:
        inferred = onnx.shape_inference.infer_shapes(probe, strict_mode=True)
    except onnx.shape_inference.InferenceError as e:
        raise ValueError(f"{refused}: {e}") from None
    return value_shape(inferred.graph.output[0])


def _export_output(logits, dims, output, g):
    if output == "logits":
        g.rename(logits, "logits")
    elif dims is None or len(dims) != 2 or not isinstance(dims[1], int):
        raise ValueError(f"minicnn.onnx.export: output='probabilities' needs (N, K) logits, but this model gives "
                         f"shape {dims}; export it with output='logits'")
    elif dims[1] == 1:
        g.node("Sigmoid", [logits], "probabilities")
    else:
        g.node("Softmax", [logits], "probabilities", axis=1)


def export(model, path, input="uint8", output="probabilities", input_shape=None):
    """Write ``model`` to ``path`` as an ONNX file (opset 17, float32) that ONNX Runtime and other runtimes run.

    Args:
        model: a Sequential of minicnn's layers (any of them; Dropout is left out, BatchNorm2D uses its
            running statistics, Residual blocks become their two branches and an Add).
        path: the ``.onnx`` file to write (atomically).
        input: what the graph takes, a batch (N, C, H, W) with a dynamic N:
            ``"uint8"`` (default): RGB pixels 0..255, as decoded from image files;
            ``"float"``: float32 pixels in [0, 1];
            both normalized in the graph with ``model.metadata["mean"]`` and ``["std"]`` (saved by
            ``minicnn train``), as :class:`minicnn.data.Normalize` does;
            ``"raw"``: float32 fed to the first layer as it is (for a model without that metadata).
        output: ``"probabilities"`` (default): (N, K) softmax of the logits, or for a single output (N, 1)
            its sigmoid, the probability of the second class; ``"logits"``: the model's own output.
        input_shape: one sample's shape (C, H, W) (a string names a dynamic axis: ``(3, "H", "W")``);
            default ``(3, S, S)`` with S = ``model.metadata["image_size"]``.

    The model's metadata (classes, image size, normalization, ...) goes into the file's
    ``metadata_props``, every value as JSON text, with ``"input"`` and ``"output"`` saying which of the
    choices above the graph was written with. Returns the ``onnx.ModelProto`` written.
    """
    if not isinstance(model, Sequential):
        raise TypeError(f"minicnn.onnx.export: expected a Sequential model, got {type(model).__name__}")
    if input not in INPUTS or output not in OUTPUTS:
        raise ValueError(f"minicnn.onnx.export: input must be one of {INPUTS} and output one of {OUTPUTS}, "
                         f"got input={input!r}, output={output!r}")
    metadata = model.metadata
    input_shape = _input_shape(metadata, input, input_shape)
    g = _GraphBuilder()
    name = "input" if input == "raw" else "images"
    graph_input = helper.make_tensor_value_info(
        name, TensorProto.UINT8 if input == "uint8" else TensorProto.FLOAT, ("N", *input_shape))
    x = name if input == "raw" else _export_normalization(name, input, metadata, g)
    logits = _export_layer(model, "", x, g)
    if logits == name:
        raise ValueError("minicnn.onnx.export: the model computes nothing (no layers, or only Dropout)")
    dims = _logits_shape(model, g, graph_input, logits, input_shape)
    _export_output(logits, dims, output, g)
    props = {key: json.dumps(value) for key, value in metadata.items()}
    props.update(input=json.dumps(input), output=json.dumps(output))
    graph_output = helper.make_tensor_value_info(output, TensorProto.FLOAT, dims and ("N", *dims[1:]))
    proto = g.model([graph_input], [graph_output], props)
    onnx.checker.check_model(proto, full_check=True)
    atomic_write(path, lambda f: f.write(proto.SerializeToString()))
    return proto
