"""Canonicalization: other tools' habits rewritten into the forms minicnn's export writes, so that each node
converts on its own (importer.py) into one layer, and no converter needs to look at, or edit, another's::

    Cast, Sub, Mul after the input (export's normalization)   gone: checked against the metadata, kept there
    Identity                                                  gone: its readers read its input
    MatMul by a (D, M) constant                               Gemm
    Reshape to (N, -1), Flatten(axis=1)                       Flatten
    Add of a constant right after a Conv or Gemm              that node's bias (``node.biases``)
    GlobalAveragePool or ReduceMean(keepdims=1) over (H, W),  one GlobalAveragePool giving (N, C), as
      then Flatten, Reshape or Squeeze; ReduceMean(keepdims=0)  GlobalAvgPool2D does
    Softmax at the output, Sigmoid of one output at the output gone: minicnn models output logits

What cannot take its canonical form is refused here, naming the node; the only Adds left add two computed
tensors (they end residual blocks). Nodes are visited once, in the file's order (ONNX's is topological).
"""
import math

import numpy as np

from .conventions import normalization
from .graph import attributes, axes

REWRITTEN = ("Add", "Constant", "Identity", "MatMul", "ReduceMean", "Reshape", "Softmax", "Squeeze")
"""ONNX operators imported through their canonical forms, beside those in ``importer.IMPORTERS``."""


def canonicalize(g, kind, metadata):
    """Rewrite ``g.nodes`` (and ``g.input``, ``g.output``) into canonical form; ``kind`` is the file's "input"
    property (how export normalized), ``metadata`` the rest of its properties."""
    _strip_normalization(g, kind, metadata)
    _drop_identities(g)
    g.index()
    kept = []
    for node in g.nodes:
        rewrite = REWRITES.get(node.op) if node.domain in ("", "ai.onnx") else None
        with g.about(node):
            if rewrite is None or rewrite(node, g):
                kept.append(node)
    g.nodes = kept
    g.index()


def _strip_normalization(g, kind, metadata):
    """Step over the input normalization that export writes (Cast, Sub, Mul), checking it against the metadata."""
    if kind not in ("uint8", "float"):
        return
    tensor, nodes = g.input, []
    for op in (["Cast"] if kind == "uint8" else []) + ["Sub", "Mul"]:
        readers = g.readers.get(tensor, [])
        if len(readers) != 1 or readers[0].op != op:
            raise ValueError(f"{g.path}: its metadata says the input is {kind} pixels normalized in the graph, but the "
                             "input is not followed by the Cast, Sub and Mul that minicnn export writes")
        nodes.append(readers[0])
        tensor = readers[0].output
    try:
        expected = normalization(metadata, 255 if kind == "uint8" else 1)
        found = [g.constant(node, 1) for node in nodes[-2:]]
        agree = all(np.array_equal(e, f) for e, f in zip(expected, found))
    except (KeyError, ValueError) as e:
        raise ValueError(f"{g.path}: cannot read the input normalization ({e})") from None
    if not agree:
        raise ValueError(f"{g.path}: the graph's normalization nodes disagree with its metadata's mean and std")
    g.nodes = [node for node in g.nodes if all(node is not n for n in nodes)]
    g.input = tensor


def _drop_identities(g):
    alias, kept = {}, []
    for node in g.nodes:
        node.inputs = [alias.get(name, name) for name in node.inputs]
        if node.op == "Identity" and node.domain in ("", "ai.onnx"):
            alias[node.output] = node.inputs[0]
        else:
            kept.append(node)
    g.nodes, g.output = kept, alias.get(g.output, g.output)


# --- one rewrite per operator: the node to keep (rewritten in place), or None when it is folded away ----------------

def _matmul(node, g):
    W = g.constant(node, 1)
    if W.ndim != 2 or g.rank(node.inputs[0]) != 2:
        raise ValueError(f"a product of shapes {g.shapes.get(node.inputs[0])} and {W.shape}: minicnn imports a MatMul "
                         "only as a Dense layer, (N, D) by a (D, M) constant")
    node.op = "Gemm"  # Gemm's defaults (alpha, beta 1, no transposes, no C) make it the same product
    return node


def _reshape(node, g):
    attributes(node, allowzero=0)
    shape, dims = [int(v) for v in g.constant(node, 1)], g.shapes.get(node.inputs[0])
    rest = math.prod(dims[1:]) if dims and all(isinstance(d, int) for d in dims[1:]) else None
    if not (len(shape) == 2 and ((shape[0] == 0 and shape[1] in (-1, rest)) or (shape[0] == -1 and shape[1] == rest))):
        raise ValueError(f"shape {shape} for an input of shape {dims}: minicnn imports a Reshape only as a flatten "
                         f"to (N, C*H*W), i.e. shape [0, -1] or [-1, {rest or 'C*H*W'}]")
    node.op, node.inputs, node.attributes = "Flatten", node.inputs[:1], {}
    return _unless_pooled(node, g)


def _flatten(node, g):
    axis, rank = attributes(node, axis=1)["axis"], g.rank(node.inputs[0])
    if (axis + rank if axis < 0 and rank else axis) != 1:
        raise ValueError(f"axis={axis}: minicnn's Flatten keeps the batch axis and flattens the rest (axis=1)")
    node.attributes = {}
    return _unless_pooled(node, g)


def _squeeze(node, g):
    if _after_pool(node, g) is None or axes(node, g, attributes(node, axes=None)["axes"]) != [2, 3]:
        raise ValueError("minicnn imports a Squeeze only right after global average pooling, over axes [2, 3]")
    return _unless_pooled(node, g)


def _after_pool(node, g):
    """The global pooling whose (N, C, 1, 1) output ``node`` reads (minicnn's gives (N, C) already), or None."""
    writer = g.writer.get(node.inputs[0])
    return writer if writer is not None and writer.op == "GlobalAveragePool" and g.rank(node.inputs[0]) == 4 else None


def _unless_pooled(node, g):
    """``node``, a flatten, unless it flattens a global pooling's output: then folded into the pooling (None)."""
    pool = _after_pool(node, g)
    if pool is None:
        return node
    pool.outputs[0] = node.output
    g.writer[node.output] = pool
    return None


def _global_pool(node, g):
    readers = g.readers.get(node.output, [])
    if len(readers) != 1 or readers[0].op not in ("Flatten", "Reshape", "Squeeze"):
        raise ValueError(f"its (N, C, 1, 1) output goes to {[n.op for n in readers] or 'no node'}; minicnn's "
                         "GlobalAvgPool2D gives (N, C), so the next node must be a Flatten, Reshape or Squeeze")
    return node


def _reduce_mean(node, g):
    a = attributes(node, axes=None, keepdims=1, noop_with_empty_axes=0)
    over = axes(node, g, a["axes"])
    if g.rank(node.inputs[0]) != 4 or over != [2, 3]:
        raise ValueError(f"axes {over} of a tensor of shape {g.shapes.get(node.inputs[0])}: minicnn imports a "
                         "ReduceMean only as global average pooling, over axes [2, 3] of (N, C, H, W)")
    node.op, node.inputs, node.attributes = "GlobalAveragePool", node.inputs[:1], {}
    return _global_pool(node, g) if a["keepdims"] else node


def _add(node, g):
    """An Add of two computed tensors stays (it ends a residual block); one of a constant is a bias."""
    if not any(name in g.constants for name in node.inputs):
        return node
    i = 0 if node.inputs[0] in g.constants else 1
    constant, x = g.constant(node, i), node.inputs[1 - i]
    writer = g.writer.get(x)
    per_output = _per_output(writer, g) if len(g.readers.get(x, [])) == 1 and x != g.output else None
    if per_output is None or constant.ndim > len(per_output) or not all(
            n in (1, m) for n, m in zip(constant.shape[::-1], per_output[::-1])):
        raise ValueError(f"an Add of a constant of shape {constant.shape}: minicnn imports it only as the bias of the "
                         "MatMul, Gemm or Conv right before it (one value per output)")
    writer.biases.append(np.broadcast_to(constant, per_output).reshape(-1))
    writer.outputs[0] = node.output
    g.writer[node.output] = writer
    return None


def _per_output(writer, g):
    """The shape of one value per output of a Conv, (1, F, 1, 1), or a Gemm, (1, M); None for other writers."""
    if writer is None or writer.op not in ("Conv", "Gemm"):
        return None
    with g.about(writer):
        W = g.constant(writer, 1)
    if writer.op == "Conv":
        return (1, W.shape[0], 1, 1) if W.ndim == 4 else None
    return (1, W.shape[0] if writer.attributes.get("transB") else W.shape[1]) if W.ndim == 2 else None


def _softmax(node, g):
    axis = attributes(node, axis=1)["axis"]
    if node.output != g.output or g.rank(node.inputs[0]) != 2 or axis not in (1, -1):
        raise ValueError(f"axis={axis}: minicnn imports a Softmax only as the graph's last node, over the classes of "
                         "(N, K) logits, and leaves it out (its models output logits)")
    g.output = node.inputs[0]
    return None


def _sigmoid(node, g):
    shape = g.shapes.get(node.inputs[0])
    if node.output == g.output and shape is not None and len(shape) == 2 and shape[1] == 1:
        g.output = node.inputs[0]  # a binary classifier's output activation: minicnn models output the logit
        return None
    return node


REWRITES = {
    "MatMul": _matmul,
    "Reshape": _reshape,
    "Flatten": _flatten,
    "Squeeze": _squeeze,
    "GlobalAveragePool": _global_pool,
    "ReduceMean": _reduce_mean,
    "Add": _add,
    "Softmax": _softmax,
    "Sigmoid": _sigmoid,
}
"""ONNX operator -> ``rewrite(node, graph)``: the node in canonical form, or None when folded into another."""
