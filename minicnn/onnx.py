"""ONNX export and import: a minicnn model as a file every runtime reads, and ONNX graphs as minicnn models.

    import minicnn.onnx
    minicnn.onnx.export(model, "catdog.onnx")    # the deployable classifier: uint8 images in, probabilities out
    model = minicnn.onnx.load("catdog.onnx")      # a Sequential again (Residual blocks included)

Export is a table of small functions, one per layer type (``EXPORTERS``);
import is a table of small functions, one per ONNX operator (``IMPORTERS``).
Anything not in a table is a clear error naming the layer or the node.

The exported graph (opset 17, a dynamic batch axis N), by default::

    images (N, 3, S, S) uint8 -> Cast -> Sub(255 mean) -> Mul(1 / (255 std))   the training set's normalization
      -> a node per layer (Dropout: none; GlobalAvgPool2D: two)                 logits (N, K)
      -> Softmax, or Sigmoid for one output                                    probabilities

Needs the ``onnx`` package: ``pip install ".[onnx]"`` in the minicnn checkout (ONNX Runtime too, to run the files).
"""
import json
import math
import numbers
import os
from decimal import Decimal

import numpy as np

try:
    import onnx
    from google.protobuf.message import DecodeError
    from onnx import TensorProto, helper, numpy_helper
except ImportError as e:
    raise ImportError(f'minicnn.onnx needs the onnx package ({e}); install it with: pip install ".[onnx]" in the '
                      "minicnn checkout (the PyPI package named minicnn is another project)") from e

from . import __version__
from .backend import get_backend
from .fileio import atomic_write
from .init import no_random_init
from .layers import (AvgPool2D, BatchNorm2D, Conv2D, Dense, Dropout, Flatten, GlobalAvgPool2D, MaxPool2D, ReLU,
                     Residual, Sigmoid, SyncBatchNorm2D)
from .model import Sequential

OPSET = 17
IR_VERSION = 8  # the IR that came with opset 17: runtimes from then on read the files
INPUTS = ("uint8", "float", "raw")
OUTPUTS = ("probabilities", "logits")
_GRAPH_KEYS = ("input", "output")  # metadata_props that describe the graph rather than the model


# --- export: one function per layer type ----------------------------------------------------------------------------

class _GraphBuilder:
    """The nodes and initializers of the graph being written. A node's output tensor is named like the node."""

    def __init__(self):
        self.nodes, self.initializers = [], []

    def constant(self, name, array):
        self.initializers.append(numpy_helper.from_array(np.asarray(array, dtype=np.float32), name))
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


def _window_attributes(layer):
    (ph, pw) = layer.padding
    return dict(kernel_shape=list(layer.kernel_size), strides=list(layer.stride), pads=[ph, pw, ph, pw])


def _export_conv(layer, name, x, g):
    return g.node("Conv", [x, g.array(layer, name, "W"), g.array(layer, name, "b")], name, **_window_attributes(layer))


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


def _normalization(metadata, unit):
    """(1, C, 1, 1) float32 offset and scale with ``(x - offset) * scale = (x / unit - mean) / std``, computed as
    :class:`minicnn.data.Normalize` does (unit 255: uint8 pixels), so that both give the same bits."""
    mean = np.asarray(metadata["mean"], dtype=np.float64).reshape(1, -1, 1, 1)
    std = np.asarray(metadata["std"], dtype=np.float64).reshape(1, -1, 1, 1)
    return (unit * mean).astype(np.float32), (1 / (unit * std)).astype(np.float32)


def _export_normalization(x, input, metadata, g):
    offset, scale = _normalization(metadata, 255 if input == "uint8" else 1)
    if input == "uint8":
        x = g.node("Cast", [x], "normalize/cast", to=TensorProto.FLOAT)
    x = g.node("Sub", [x, g.constant("normalize/offset", offset)], "normalize/sub")
    return g.node("Mul", [x, g.constant("normalize/scale", scale)], "normalize/mul")


def _dims(value_info):
    """The shape of a graph value: ints, names of dynamic axes, None where unknown; None if not even the rank is known."""
    if not value_info.type.tensor_type.HasField("shape"):
        return None
    return tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                 for d in value_info.type.tensor_type.shape.dim)


def _input_shape(metadata, input, input_shape):
    """One sample's shape for the graph's input, after checking that the metadata has what ``input`` needs."""
    needed = (["mean", "std"] if input != "raw" else []) + (["image_size"] if input_shape is None else [])
    missing = [key for key in needed if key not in metadata]
    if missing:
        raise ValueError(f"minicnn.onnx.export: model.metadata lacks {missing}, needed for input={input!r} (a model "
                         "saved by 'minicnn train' has them); for a model built in Python, pass input='raw' and "
                         "input_shape=(C, H, W) (on the command line: --input raw --input-shape C,H,W)")
    clash = [key for key in _GRAPH_KEYS if key in metadata]
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
    return _dims(inferred.graph.output[0])


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


# --- import: one function per ONNX operator --------------------------------------------------------------------------

class _Graph:
    """What the importers read from an ONNX graph: its constants, its nodes, who reads each tensor, inferred shapes."""

    def __init__(self, proto, path, backend):
        self.path, self.backend = path, get_backend(backend)
        graph = proto.graph
        self.constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        self.nodes = []
        for node in graph.node:
            if node.op_type == "Constant":
                self.constants[node.output[0]] = _constant_value(node)
            elif node.op_type == "Identity" and node.input[0] in self.constants:  # how exporters alias shared weights
                self.constants[node.output[0]] = self.constants[node.input[0]]
            else:
                self.nodes.append(node)
        inputs = [v for v in graph.input if v.name not in self.constants]
        if len(inputs) != 1 or len(graph.output) != 1:
            raise ValueError(f"{path}: minicnn imports graphs with one input and one output; this one has inputs "
                             f"{[v.name for v in inputs]} and outputs {[v.name for v in graph.output]}")
        self.input, self.output = inputs[0].name, graph.output[0].name
        self.dtype = np.float64 if inputs[0].type.tensor_type.elem_type == TensorProto.DOUBLE else np.float32
        self.readers = {}
        for node in self.nodes:
            for name in dict.fromkeys(node.input):
                self.readers.setdefault(name, []).append(node)
        inferred = onnx.shape_inference.infer_shapes(proto).graph
        self.shapes = {v.name: _dims(v) for v in (*inferred.value_info, *inferred.input, *inferred.output)}
        self.done = set()  # ids of the nodes imported so far

    def rank(self, tensor):
        shape = self.shapes.get(tensor)
        return None if shape is None else len(shape)

    def constant(self, node, i, optional=False):
        """The value of the node's input ``i``, which must be an initializer or a Constant (None if optional and absent)."""
        name = node.input[i] if i < len(node.input) else ""
        if name in self.constants:
            return self.constants[name]
        if optional and not name:
            return None
        raise ValueError(f"its input {i} ({name!r}) is computed in the graph; minicnn reads weights and settings "
                         "only from initializers and Constant nodes")

    def assign(self, layer, **arrays):
        """Give ``layer`` the arrays (by key of its params or buffers), as writable copies in the graph's dtype."""
        for key, value in arrays.items():
            store = layer.params if key in layer.params else layer.buffers
            if tuple(value.shape) != tuple(store[key].shape):
                raise ValueError(f"{key} of {layer.describe()} would have shape {tuple(value.shape)}, "
                                 f"expected {tuple(store[key].shape)}")
            store[key] = layer.backend.asarray(np.array(value, dtype=self.dtype))
        return layer

    def require_flattened(self, node):
        """Global pooling gives (N, C, 1, 1) in ONNX, (N, C) in minicnn: only a flatten of it may come next."""
        readers = self.readers.get(node.output[0], [])
        if len(readers) != 1 or readers[0].op_type not in ("Flatten", "Reshape", "Squeeze"):
            raise ValueError(f"its (N, C, 1, 1) output goes to {[n.op_type for n in readers] or 'no node'}; minicnn's "
                             "GlobalAvgPool2D gives (N, C), so the next node must be a Flatten, Reshape or Squeeze")


def _constant_value(node):
    (attribute,) = node.attribute
    value = helper.get_attribute_value(attribute)
    if attribute.name == "value":
        return numpy_helper.to_array(value)
    if attribute.name in ("value_float", "value_floats", "value_int", "value_ints"):
        return np.array(value, dtype=np.float32 if "float" in attribute.name else np.int64)
    raise ValueError(f"Constant node {node.name!r} holds a {attribute.name}; minicnn reads numeric tensors only")


def _attributes(node, **defaults):
    """The node's attributes by name, ``defaults`` filling in the absent ones; one not in ``defaults`` is an error."""
    given = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(f"attribute {unknown[0]!r} is not supported (minicnn reads: {', '.join(sorted(defaults)) or 'none'})")
    return {k: v.decode() if isinstance(v, bytes) else v for k, v in {**defaults, **given}.items()}


def _decimal(value):
    """The shortest decimal that rounds to the float32 ``value``: attributes are float32, so 1e-5 comes back as 1e-5."""
    return Decimal(str(np.float32(value)))


def _padding(node, g, a, kernel, strides):
    """(ph, pw) from ``pads`` or ``auto_pad``; minicnn pads both ends of an axis alike."""
    if a["auto_pad"] == "VALID":
        return (0, 0)
    if a["auto_pad"] in ("SAME_UPPER", "SAME_LOWER"):
        sizes = (g.shapes.get(node.input[0]) or (None,) * 4)[2:]
        totals = []
        for size, k, s in zip(sizes, kernel, strides):
            if s > 1 and not isinstance(size, int):
                raise ValueError(f"auto_pad={a['auto_pad']} with stride {s} needs the input's size, which the graph does not give")
            totals.append(k - 1 if s == 1 else max((-(-size // s) - 1) * s + k - size, 0))
        if any(t % 2 for t in totals):
            raise ValueError(f"auto_pad={a['auto_pad']} pads {totals} in all, unevenly; minicnn pads both ends alike")
        return (totals[0] // 2, totals[1] // 2)
    if a["auto_pad"] not in ("NOTSET", ""):
        raise ValueError(f"auto_pad={a['auto_pad']!r} is not supported")
    pads = list(a["pads"] or [0, 0, 0, 0])
    if len(pads) != 4 or pads[:2] != pads[2:]:
        raise ValueError(f"pads={pads}: minicnn pads both ends of an axis alike ([ph, pw, ph, pw])")
    return tuple(pads[:2])


def _after_global_pool(node, g, previous):
    """True when ``node`` reads the (N, C, 1, 1) of a global pooling, which minicnn already gives as (N, C)."""
    return isinstance(previous, GlobalAvgPool2D) and g.rank(node.input[0]) == 4


def _axes(node, g, attribute):
    """Sorted non-negative axes of a 4-D tensor, from the attribute (older opsets) or input 1 (newer ones)."""
    axes = attribute if attribute is not None else g.constant(node, 1, optional=True)
    return None if axes is None else sorted(int(axis) % 4 for axis in np.ravel(axes))


def _import_conv(node, g, previous):
    a = _attributes(node, kernel_shape=None, strides=[1, 1], pads=None, dilations=[1, 1], group=1, auto_pad="NOTSET")
    W = g.constant(node, 1)
    if W.ndim != 4:
        raise ValueError(f"weights of shape {W.shape}: minicnn's Conv2D is 2-D, with weights (F, C, kh, kw)")
    if a["group"] != 1 or list(a["dilations"]) != [1, 1]:
        raise ValueError(f"group={a['group']}, dilations={a['dilations']}: minicnn's Conv2D has group 1 and dilations [1, 1]")
    kernel, strides = W.shape[2:], tuple(a["strides"])
    b = g.constant(node, 2, optional=True)
    layer = Conv2D(W.shape[1], W.shape[0], kernel, strides, _padding(node, g, a, kernel, strides), backend=g.backend)
    return g.assign(layer, W=W, b=np.zeros(W.shape[0]) if b is None else b)


def _import_pool(node, g, previous):
    average = node.op_type == "AveragePool"
    a = _attributes(node, kernel_shape=None, strides=None, pads=None, auto_pad="NOTSET", ceil_mode=0, dilations=None,
                    **({"count_include_pad": 0} if average else {"storage_order": 0}))
    kernel, strides = tuple(a["kernel_shape"]), tuple(a["strides"] or (1, 1))  # ONNX's default stride is 1
    if len(kernel) != 2 or a["ceil_mode"] or list(a["dilations"] or [1, 1]) != [1, 1]:
        raise ValueError(f"kernel_shape={list(kernel)}, ceil_mode={a['ceil_mode']}, dilations={a['dilations']}: minicnn "
                         "pools over 2-D windows without dilation, rounding the output size down (ceil_mode=0)")
    padding = _padding(node, g, a, kernel, strides)
    if average and padding != (0, 0) and not a["count_include_pad"]:
        raise ValueError("count_include_pad=0 with padding: minicnn's AvgPool2D counts the padded cells "
                         "(count_include_pad=1)")
    return (AvgPool2D if average else MaxPool2D)(kernel, strides, padding, backend=g.backend)


def _import_global_pool(node, g, previous):
    g.require_flattened(node)
    return GlobalAvgPool2D(backend=g.backend)


def _import_reduce_mean(node, g, previous):
    a = _attributes(node, axes=None, keepdims=1, noop_with_empty_axes=0)
    axes = _axes(node, g, a["axes"])
    if g.rank(node.input[0]) != 4 or axes != [2, 3]:
        raise ValueError(f"axes {axes} of a tensor of shape {g.shapes.get(node.input[0])}: minicnn imports a "
                         "ReduceMean only as global average pooling, over axes [2, 3] of (N, C, H, W)")
    if a["keepdims"]:
        g.require_flattened(node)
    return GlobalAvgPool2D(backend=g.backend)


def _import_flatten(node, g, previous):
    axis, rank = _attributes(node, axis=1)["axis"], g.rank(node.input[0])
    if (axis + rank if axis < 0 and rank else axis) != 1:
        raise ValueError(f"axis={axis}: minicnn's Flatten keeps the batch axis and flattens the rest (axis=1)")
    return None if _after_global_pool(node, g, previous) else Flatten(backend=g.backend)


def _import_reshape(node, g, previous):
    _attributes(node, allowzero=0)
    shape, dims = [int(v) for v in g.constant(node, 1)], g.shapes.get(node.input[0])
    rest = math.prod(dims[1:]) if dims and all(isinstance(d, int) for d in dims[1:]) else None
    if not (len(shape) == 2 and ((shape[0] == 0 and shape[1] in (-1, rest)) or (shape[0] == -1 and shape[1] == rest))):
        raise ValueError(f"shape {shape} for an input of shape {dims}: minicnn imports a Reshape only as a flatten "
                         f"to (N, C*H*W), i.e. shape [0, -1] or [-1, {rest or 'C*H*W'}]")
    return None if _after_global_pool(node, g, previous) else Flatten(backend=g.backend)


def _import_squeeze(node, g, previous):
    if not _after_global_pool(node, g, previous) or _axes(node, g, _attributes(node, axes=None)["axes"]) != [2, 3]:
        raise ValueError("minicnn imports a Squeeze only right after global average pooling, over axes [2, 3]")
    return None


def _import_gemm(node, g, previous):
    a = _attributes(node, alpha=1.0, beta=1.0, transA=0, transB=0)
    if a["transA"]:
        raise ValueError("transA=1: minicnn's Dense takes (N, D) inputs as they are")
    W = g.constant(node, 1)
    W = np.ascontiguousarray(W.T) if a["transB"] else W
    W = W if a["alpha"] == 1 else W * np.float32(a["alpha"])
    C = g.constant(node, 2, optional=True)
    b = np.zeros(W.shape[1]) if C is None else np.broadcast_to(C, (1, W.shape[1]))[0]
    b = b if a["beta"] == 1 else b * np.float32(a["beta"])
    return g.assign(Dense(*W.shape, backend=g.backend), W=W, b=b)


def _import_matmul(node, g, previous):
    W = g.constant(node, 1)
    if W.ndim != 2 or g.rank(node.input[0]) != 2:
        raise ValueError(f"a product of shapes {g.shapes.get(node.input[0])} and {W.shape}: minicnn imports a MatMul "
                         "only as a Dense layer, (N, D) by a (D, M) constant")
    return g.assign(Dense(*W.shape, backend=g.backend), W=W, b=np.zeros(W.shape[1]))  # an Add may bring the bias


def _import_bias(node, g, previous):
    # An Add of two computed tensors ends a residual block (see _walk); this one adds a constant: a bias.
    constant = g.constant(node, 0 if node.input[0] in g.constants else 1)
    if isinstance(previous, (Dense, Conv2D)):
        b = previous.backend.to_numpy(previous.params["b"])
        per_output = (1, b.shape[0]) if isinstance(previous, Dense) else (1, b.shape[0], 1, 1)
        if constant.ndim <= len(per_output) and all(n in (1, m) for n, m in zip(constant.shape[::-1], per_output[::-1])):
            g.assign(previous, b=b + np.broadcast_to(constant, per_output).reshape(b.shape))
            return None
    raise ValueError(f"an Add of a constant of shape {constant.shape}: minicnn imports it only as the bias of the "
                     "MatMul, Gemm or Conv right before it (one value per output)")


def _import_batchnorm(node, g, previous):
    a = _attributes(node, epsilon=1e-5, momentum=0.9, training_mode=0)
    rank = g.rank(node.input[0])
    if a["training_mode"] or rank not in (4, None):
        raise ValueError(f"training_mode={a['training_mode']} on a {rank}-D input: minicnn imports BatchNormalization "
                         "in inference form (running statistics) over (N, C, H, W)")
    gamma, beta, mean, var = (g.constant(node, i) for i in range(1, 5))
    layer = BatchNorm2D(gamma.shape[0], momentum=float(1 - _decimal(a["momentum"])), eps=float(_decimal(a["epsilon"])),
                        backend=g.backend)
    return g.assign(layer, gamma=gamma, beta=beta, running_mean=mean, running_var=var)


def _import_dropout(node, g, previous):
    ratio = _attributes(node, ratio=0.5, seed=0)["ratio"]  # an attribute before opset 12, input 1 since
    given = g.constant(node, 1, optional=True)
    return Dropout(float(_decimal(ratio if given is None else given)), backend=g.backend)


def _import_sigmoid(node, g, previous):
    shape = g.shapes.get(node.input[0])
    if node.output[0] == g.output and shape is not None and len(shape) == 2 and shape[1] == 1:
        return None  # a binary classifier's output activation: minicnn models output the logit
    return Sigmoid(backend=g.backend)


def _import_softmax(node, g, previous):
    axis = _attributes(node, axis=1)["axis"]
    if node.output[0] != g.output or g.rank(node.input[0]) != 2 or axis not in (1, -1):
        raise ValueError(f"axis={axis}: minicnn imports a Softmax only as the graph's last node, over the classes of "
                         "(N, K) logits, and leaves it out (its models output logits)")
    return None


IMPORTERS = {
    "Conv": _import_conv,
    "MaxPool": _import_pool,
    "AveragePool": _import_pool,
    "GlobalAveragePool": _import_global_pool,
    "ReduceMean": _import_reduce_mean,
    "Relu": lambda node, g, previous: ReLU(backend=g.backend),
    "Sigmoid": _import_sigmoid,
    "Softmax": _import_softmax,
    "Flatten": _import_flatten,
    "Reshape": _import_reshape,
    "Squeeze": _import_squeeze,
    "Gemm": _import_gemm,
    "MatMul": _import_matmul,
    "Add": _import_bias,
    "BatchNormalization": _import_batchnorm,
    "Dropout": _import_dropout,
    "Identity": lambda node, g, previous: None,
}
"""ONNX operator -> ``importer(node, graph, previous)``: the layer for ``node`` (None if it adds none), where
``previous`` is the layer just imported before it on the same path (None at a path's start)."""


def _label(node):
    return f"node {node.name!r} ({node.op_type})" if node.name else f"the {node.op_type} node writing {node.output[0]!r}"


def _convert(g, node, previous):
    importer = IMPORTERS.get(node.op_type) if node.domain in ("", "ai.onnx") else None
    if importer is None:
        known = ", ".join(sorted([*IMPORTERS, "Constant"]))
        raise ValueError(f"{g.path}: {_label(node)}: operator {node.domain + '.' if node.domain else ''}{node.op_type} "
                         f"is not supported; minicnn imports {known}")
    used = [name for name in node.output[1:] if name and (name in g.readers or name == g.output)]
    g.done.add(id(node))
    try:
        if used:
            raise ValueError(f"its extra outputs {used} are used; a minicnn layer has one output")
        with no_random_init():  # the weights come from the file
            return importer(node, g, previous)
    except ValueError as e:
        raise ValueError(f"{g.path}: {_label(node)}: {e}") from None


def _walk(g, tensor, node=None):
    """Import the nodes from ``tensor`` on (beginning with ``node`` if given) up to the graph's output or to the
    Add that ends a residual branch: (the layers, the last tensor)."""
    layers, previous = [], None
    while True:
        if node is None:
            readers = g.readers.get(tensor, [])
            if tensor == g.output or _join_after(g, tensor) is not None:
                return layers, tensor
            if len(readers) > 1:
                blocks, tensor = _residual(g, tensor, readers)
                layers += blocks
                previous = layers[-1]
                continue
            if len(readers) != 1:
                raise ValueError(f"{g.path}: tensor {tensor!r} is read by {[n.op_type for n in readers] or 'no node'}; "
                                 "minicnn imports a chain of layers and residual blocks from the input to the output")
            node = readers[0]
        layer = _convert(g, node, previous)
        if layer is not None:
            layers.append(layer)
            previous = layer
        tensor, node = node.output[0], None


def _is_join(g, node):
    return node.op_type == "Add" and not any(name in g.constants for name in node.input)


def _residual(g, tensor, readers):
    """The Residual blocks whose branches leave ``tensor`` and meet in Adds: (their layers, the tensor they end at).

    Two paths that meet in an Add make a block, whose output then goes on as one path; blocks nest this way
    when their shortcuts share ``tensor``. An empty path (an Add reading ``tensor``) is the identity.
    """
    paths = [([], tensor, node) if _is_join(g, node) else _branch(g, tensor, node) for node in readers]
    while len(paths) > 1:
        pair = next(((a, b) for a in paths for b in paths if a is not b and a[2] is not None and a[2] is b[2]), None)
        if pair is None or not (pair[0][0] or pair[1][0]):
            raise ValueError(f"{g.path}: tensor {tensor!r} is read by {[n.op_type for n in readers]}, whose paths do "
                             "not meet in Adds; minicnn imports residual blocks: two branches from one tensor joined by Add")
        (body, body_end, join), (shortcut, _, _) = pair
        # Add(body, shortcut), as export writes it (and PyTorch's "out + identity").
        if not body or (shortcut and body_end != join.input[0]):
            body, shortcut = shortcut, body
        g.done.add(id(join))
        block = Residual(*body, shortcut=shortcut or None, backend=g.backend)
        layers, end = _walk(g, join.output[0])
        paths = [path for path in paths if all(path is not p for p in pair)] + [([block, *layers], end, _join_after(g, end))]
    layers, end, _ = paths[0]
    return layers, end


def _branch(g, tensor, node):
    layers, end = _walk(g, tensor, node)
    return layers, end, _join_after(g, end)


def _join_after(g, tensor):
    """The Add that ``tensor`` ends a branch in (None at the graph's output)."""
    readers = g.readers.get(tensor, [])
    return readers[0] if len(readers) == 1 and _is_join(g, readers[0]) else None


def _strip_normalization(g, kind, metadata):
    """Step over the input normalization that export writes (Cast, Sub, Mul), checking it against the metadata."""
    if kind not in ("uint8", "float"):
        return g.input
    tensor, nodes = g.input, []
    for op in (["Cast"] if kind == "uint8" else []) + ["Sub", "Mul"]:
        readers = g.readers.get(tensor, [])
        if len(readers) != 1 or readers[0].op_type != op:
            raise ValueError(f"{g.path}: its metadata says the input is {kind} pixels normalized in the graph, but the "
                             "input is not followed by the Cast, Sub and Mul that minicnn export writes")
        nodes.append(readers[0])
        tensor = readers[0].output[0]
    try:
        expected = _normalization(metadata, 255 if kind == "uint8" else 1)
        found = [g.constant(node, 1) for node in nodes[-2:]]
        agree = all(np.array_equal(e, f) for e, f in zip(expected, found))
    except (KeyError, ValueError) as e:
        raise ValueError(f"{g.path}: cannot read the input normalization ({e})") from None
    if not agree:
        raise ValueError(f"{g.path}: the graph's normalization nodes disagree with its metadata's mean and std")
    g.done.update(id(node) for node in nodes)
    return tensor


def _read(path):
    try:
        proto = onnx.load(path)
    except DecodeError as e:
        raise ValueError(f"{path}: not an ONNX file ({e})") from None
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as e:
        raise ValueError(f"{path}: not a valid ONNX model: {e}") from None
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or opset < 11:
        raise ValueError(f"{path}: opset {opset}; minicnn imports ONNX opset 11 or later")
    return proto


def _decode(text):
    try:
        return json.loads(text)
    except ValueError:
        return text  # written by another tool: plain text


def load(path, backend=None):
    """The Sequential that the ONNX file at ``path`` describes, on ``backend`` (default: the active one).

    The graph must be a chain of the operators in ``IMPORTERS`` from its one input to its one output, where
    two branches from one tensor meeting in an Add become a :class:`Residual` block (the Add's first input
    is the body's); weights come from initializers and Constant nodes. Any other operator, attribute value
    or graph shape is a ValueError naming the node. Other tools' habits import too: Gemm with transB, alpha
    and beta or MatMul + Add (-> Dense), Reshape to (N, -1) (-> Flatten), auto_pad, Identity, Constant.

    minicnn models output logits: a Softmax that ends the graph, or a Sigmoid of one output, is the
    classifier's output activation and is left out (``minicnn.probabilities`` applies it). The input
    normalization that :func:`export` writes is left out too, its mean and std staying in
    ``model.metadata`` with the rest of the file's ``metadata_props`` (JSON values decoded), so a file
    written by :func:`export` comes back with the same layers (Dropout aside), weights and metadata.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"minicnn.onnx.load: path must be a str or os.PathLike, got {path!r}")
    path = os.fspath(path)
    proto = _read(path)
    g = _Graph(proto, path, backend)
    props = {p.key: _decode(p.value) for p in proto.metadata_props}
    metadata = {key: value for key, value in props.items() if key not in _GRAPH_KEYS}
    layers, _ = _walk(g, _strip_normalization(g, props.get("input"), metadata))
    left = [_label(node) for node in g.nodes if id(node) not in g.done]
    if left:
        raise ValueError(f"{path}: {', '.join(left)} lie off the path from the input to the output; minicnn imports "
                         "a chain of layers and residual blocks")
    model = Sequential(layers, backend=g.backend)
    model.metadata = metadata
    return model
