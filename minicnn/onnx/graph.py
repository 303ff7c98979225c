"""Reading an ONNX file for import: the model checked, its constants (nodes computed from constants alone
evaluated by onnx's reference implementation), its nodes, its inferred shapes.

Every problem with the file is a ValueError that names it (``onnx`` raises its own types: they are chained).
"""
import os
from contextlib import contextmanager
from decimal import Decimal

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from ..backend import get_backend
from .conventions import value_shape


def read(path):
    """The checked ``onnx.ModelProto`` in the file at ``path`` (a missing file is the OSError open gives)."""
    try:
        proto = onnx.load(path, load_external_data=False)
    except DecodeError as e:
        raise ValueError(f"{path}: not an ONNX file ({e})") from e
    try:  # tensors kept in files of their own, which must lie in the model's folder
        onnx.external_data_helper.load_external_data_for_model(proto, os.path.dirname(os.path.abspath(path)))
    except (onnx.checker.ValidationError, OSError, ValueError) as e:  # outside the folder, absent, malformed
        raise ValueError(f"{path}: cannot read its tensors: {e}") from e
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as e:
        raise ValueError(f"{path}: not a valid ONNX model: {e}") from e
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or opset < 11:
        raise ValueError(f"{path}: opset {opset}; minicnn imports ONNX opset 11 or later")
    return proto


class Node:
    """One node of the graph being imported: an ONNX node's operator, inputs, outputs and attributes (by name),
    which canonicalization (canonical.py) may rewrite; ``label`` keeps naming the file's node in errors."""

    def __init__(self, proto):
        self.op, self.inputs, self.outputs = proto.op_type, list(proto.input), list(proto.output)
        self.domain = proto.domain
        self.attributes = {a.name: helper.get_attribute_value(a) for a in proto.attribute}
        self.label = (f"node {proto.name!r} ({proto.op_type})" if proto.name
                      else f"the {proto.op_type} node writing {(proto.output or [''])[0]!r}")
        self.biases = []  # (M,) constants of Adds that canonicalization folded into a Conv or Gemm, in order

    @property
    def output(self):
        return self.outputs[0]


class Graph:
    """What the converters read: the file's constants and nodes, who reads each tensor, inferred shapes."""

    def __init__(self, proto, path, backend):
        self.path, self.backend = path, get_backend(backend)
        graph = proto.graph
        opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))  # read() checked it
        self.constants, self.nodes = {}, []
        for t in graph.initializer:
            try:
                self.constants[t.name] = numpy_helper.to_array(t)
            except (ValueError, TypeError) as e:
                raise ValueError(f"{path}: cannot read initializer {t.name!r}: {e}") from e
        for proto_node in graph.node:
            node = Node(proto_node)
            if not node.outputs:  # the checker lets a node of an unknown domain write nothing
                raise ValueError(f"{path}: {node.label}: it writes no tensor")
            if node.op == "Constant":
                with self.about(node):
                    self.constants[node.output] = _constant_value(node)
            elif node.domain in ("", "ai.onnx") and any(node.inputs) and all(
                    name in self.constants for name in node.inputs if name):
                # Computed from constants alone: an alias of shared weights (Identity), or the pads of a Pad that
                # PyTorch's exporter computes from the padding in ten nodes. Folded into a constant.
                with self.about(node):
                    self.constants.update(_folded(proto_node, self.constants, opset))
            else:
                self.nodes.append(node)
        inputs = [v for v in graph.input if v.name not in self.constants]
        if len(inputs) != 1 or len(graph.output) != 1:
            raise ValueError(f"{path}: minicnn imports graphs with one input and one output; this one has inputs "
                             f"{[v.name for v in inputs]} and outputs {[v.name for v in graph.output]}")
        self.input, self.output = inputs[0].name, graph.output[0].name
        self.dtype = np.float64 if inputs[0].type.tensor_type.elem_type == TensorProto.DOUBLE else np.float32
        try:
            inferred = onnx.shape_inference.infer_shapes(proto).graph
        except onnx.shape_inference.InferenceError as e:
            raise ValueError(f"{path}: not a valid ONNX model: {e}") from e
        self.shapes = {v.name: value_shape(v) for v in (*inferred.value_info, *inferred.input, *inferred.output)}
        self.index()

    def index(self):
        """Who reads and who writes each tensor, for the nodes as they are now."""
        self.readers, self.writer = {}, {}
        for node in self.nodes:
            for name in dict.fromkeys(node.inputs):
                self.readers.setdefault(name, []).append(node)
            self.writer[node.output] = node

    @contextmanager
    def about(self, node):
        """ValueErrors raised inside name the file and the node (the innermost one, where they nest)."""
        try:
            yield
        except ValueError as e:
            if getattr(e, "names_the_node", False):
                raise
            error = ValueError(f"{self.path}: {node.label}: {e}")
            error.names_the_node = True
            raise error from None

    def rank(self, tensor):
        shape = self.shapes.get(tensor)
        return None if shape is None else len(shape)

    def constant(self, node, i, optional=False):
        """The value of the node's input ``i``, which must be an initializer or a Constant (None if optional and
        absent) holding numbers, finite ones if floating-point."""
        name = node.inputs[i] if i < len(node.inputs) else ""
        if name not in self.constants:
            if optional and not name:
                return None
            raise ValueError(f"its input {i} ({name!r}) is computed in the graph; minicnn reads weights and settings "
                             "only from initializers and Constant nodes")
        value = self.constants[name]
        if value.dtype.kind not in "biuf":
            raise ValueError(f"its input {i} ({name!r}) holds {value.dtype} values; minicnn reads numbers")
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise ValueError(f"its input {i} ({name!r}) holds NaN or infinite values; minicnn imports finite weights")
        return value

    def assign(self, layer, **arrays):
        """Give ``layer`` the arrays (by key of its params or buffers), as writable copies in the graph's dtype."""
        for key, value in arrays.items():
            store = layer.params if key in layer.params else layer.buffers
            if tuple(value.shape) != tuple(store[key].shape):
                raise ValueError(f"{key} of {layer.describe()} would have shape {tuple(value.shape)}, "
                                 f"expected {tuple(store[key].shape)}")
            value = np.array(value, dtype=self.dtype)
            if not np.isfinite(value).all():  # finite inputs, but alpha, beta or a bias overflowed
                raise ValueError(f"{key} of {layer.describe()} would hold NaN or infinite values")
            store[key] = layer.backend.asarray(value)
        return layer


def _constant_value(node):
    if len(node.attributes) != 1:
        raise ValueError(f"it has the attributes {sorted(node.attributes)}; a Constant holds one value")
    ((name, value),) = node.attributes.items()
    if name == "value":
        return numpy_helper.to_array(value)
    if name in ("value_float", "value_floats", "value_int", "value_ints"):
        return np.array(value, dtype=np.float32 if "float" in name else np.int64)
    raise ValueError(f"it holds a {name}; minicnn reads numeric tensors only")


def _folded(proto_node, constants, opset):
    """The outputs of a node whose inputs are all constants, computed by onnx's reference implementation."""
    try:
        evaluator = ReferenceEvaluator(proto_node, opsets={"": opset})
        values = evaluator.run(None, {name: constants[name] for name in proto_node.input if name})
    except Exception as e:  # whatever the reference implementation raises for a node it cannot compute
        raise ValueError(f"cannot compute it from its constant inputs: {type(e).__name__}: {e}") from e
    return {name: np.asarray(value) for name, value in zip(proto_node.output, values) if name}


def attributes(node, **defaults):
    """The node's attributes by name, ``defaults`` filling in the absent ones; one not in ``defaults`` is an error."""
    unknown = sorted(set(node.attributes) - set(defaults))
    if unknown:
        raise ValueError(f"attribute {unknown[0]!r} is not supported (minicnn reads: {', '.join(sorted(defaults)) or 'none'})")
    return {k: v.decode() if isinstance(v, bytes) else v for k, v in {**defaults, **node.attributes}.items()}


def decimal(value):
    """The shortest decimal that rounds to the float32 ``value``: attributes are float32, so 1e-5 comes back as 1e-5."""
    return Decimal(str(np.float32(value)))


def axes(node, g, attribute):
    """Sorted non-negative axes of a 4-D tensor, from the attribute (older opsets) or input 1 (newer ones)."""
    given = attribute if attribute is not None else g.constant(node, 1, optional=True)
    return None if given is None else sorted(int(axis) % 4 for axis in np.ravel(given))
