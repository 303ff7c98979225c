"""Import: an ONNX graph as a minicnn Sequential.

Three steps: read the file (graph.py, which also folds the nodes computed from constants alone), rewrite other
tools' habits into canonical nodes (canonical.py), then one pass over the nodes in the file's order, each
converted on its own by a small function of ``IMPORTERS`` (one per operator) and each Add of two computed
tensors closing a :class:`Residual` block.
"""
import json
import os

import numpy as np

from ..init import no_random_init
from ..layers import (AvgPool2D, BatchNorm2D, Clip, Conv2D, Dense, Dropout, Flatten, GlobalAvgPool2D, MaxPool2D, ReLU,
                      ReLU6, Residual, Sigmoid, ZeroPad2D)
from ..model import Sequential
from .canonical import REWRITTEN, canonicalize
from .conventions import GRAPH_KEYS
from .graph import Graph, attributes, decimal, read


# --- one converter per operator, for canonical nodes -----------------------------------------------------------------

def _padding(node, g, a, kernel, strides):
    """minicnn's padding, (left, right, top, bottom), from ``pads`` or ``auto_pad``."""
    if a["auto_pad"] == "VALID":
        return 0
    if a["auto_pad"] in ("SAME_UPPER", "SAME_LOWER"):
        sizes = (g.shapes.get(node.inputs[0]) or (None,) * 4)[2:]
        pads = []
        for size, k, s in zip(sizes, kernel, strides):
            if s > 1 and not isinstance(size, int):
                raise ValueError(f"auto_pad={a['auto_pad']} with stride {s} needs the input's size, which the graph does not give")
            total = k - 1 if s == 1 else max((-(-size // s) - 1) * s + k - size, 0)
            less = total // 2  # at the start (UPPER: the odd one at the end, as TensorFlow's "same") or the end
            pads.append((less, total - less) if a["auto_pad"] == "SAME_UPPER" else (total - less, less))
        (top, bottom), (left, right) = pads
        return left, right, top, bottom
    if a["auto_pad"] not in ("NOTSET", ""):
        raise ValueError(f"auto_pad={a['auto_pad']!r} is not supported")
    pads = [int(p) for p in a["pads"] or [0, 0, 0, 0]]
    if len(pads) != 4 or min(pads) < 0:
        raise ValueError(f"pads={pads}: minicnn pads the two spatial axes of (N, C, H, W) by ints >= 0")
    top, left, bottom, right = pads
    return left, right, top, bottom


def _bias(node, g, b):
    """The bias ``b`` (M,) in the graph's dtype plus those of the Adds folded into ``node``, each sum rounded to
    the dtype as it is made (as if each Add were a layer of its own)."""
    b = np.array(b, dtype=g.dtype)
    for added in node.biases:
        b = np.array(b + added, dtype=g.dtype)
    return b


def _conv(node, g):
    a = attributes(node, kernel_shape=None, strides=[1, 1], pads=None, dilations=[1, 1], group=1, auto_pad="NOTSET")
    W = g.constant(node, 1)
    if W.ndim != 4:
        raise ValueError(f"weights of shape {W.shape}: minicnn's Conv2D is 2-D, with weights (F, C, kh, kw)")
    if list(a["dilations"]) != [1, 1]:
        raise ValueError(f"dilations={a['dilations']}: minicnn's Conv2D has dilations [1, 1]")
    kernel, strides = W.shape[2:], tuple(a["strides"])
    b = g.constant(node, 2, optional=True)
    layer = Conv2D(W.shape[1] * a["group"], W.shape[0], kernel, strides, _padding(node, g, a, kernel, strides),
                   groups=a["group"], backend=g.backend)
    return g.assign(layer, W=W, b=_bias(node, g, np.zeros(W.shape[0]) if b is None else b))


def _pool(node, g):
    average = node.op == "AveragePool"
    a = attributes(node, kernel_shape=None, strides=None, pads=None, auto_pad="NOTSET", ceil_mode=0, dilations=None,
                   **({"count_include_pad": 0} if average else {"storage_order": 0}))
    kernel, strides = tuple(a["kernel_shape"]), tuple(a["strides"] or (1, 1))  # ONNX's default stride is 1
    if len(kernel) != 2 or a["ceil_mode"] or list(a["dilations"] or [1, 1]) != [1, 1]:
        raise ValueError(f"kernel_shape={list(kernel)}, ceil_mode={a['ceil_mode']}, dilations={a['dilations']}: minicnn "
                         "pools over 2-D windows without dilation, rounding the output size down (ceil_mode=0)")
    padding = _padding(node, g, a, kernel, strides)
    if average and padding not in (0, (0, 0, 0, 0)) and not a["count_include_pad"]:
        raise ValueError("count_include_pad=0 with padding: minicnn's AvgPool2D counts the padded cells "
                         "(count_include_pad=1)")
    return (AvgPool2D if average else MaxPool2D)(kernel, strides, padding, backend=g.backend)


def _gemm(node, g):
    a = attributes(node, alpha=1.0, beta=1.0, transA=0, transB=0)
    if a["transA"]:
        raise ValueError("transA=1: minicnn's Dense takes (N, D) inputs as they are")
    W = g.constant(node, 1)
    if W.ndim != 2:
        raise ValueError(f"weights of shape {W.shape}: minicnn's Dense has weights (D, M)")
    W = np.ascontiguousarray(W.T) if a["transB"] else W
    W = W if a["alpha"] == 1 else W * np.float32(a["alpha"])
    C = g.constant(node, 2, optional=True)
    b = np.zeros(W.shape[1]) if C is None else np.broadcast_to(C, (1, W.shape[1]))[0]
    b = b if a["beta"] == 1 else b * np.float32(a["beta"])
    return g.assign(Dense(*W.shape, backend=g.backend), W=W, b=_bias(node, g, b))


def _batchnorm(node, g):
    a = attributes(node, epsilon=1e-5, momentum=0.9, training_mode=0)
    rank = g.rank(node.inputs[0])
    if a["training_mode"] or rank not in (4, None):
        raise ValueError(f"training_mode={a['training_mode']} on a {rank}-D input: minicnn imports BatchNormalization "
                         "in inference form (running statistics) over (N, C, H, W)")
    gamma, beta, mean, var = (g.constant(node, i) for i in range(1, 5))
    layer = BatchNorm2D(gamma.shape[0], momentum=float(1 - decimal(a["momentum"])), eps=float(decimal(a["epsilon"])),
                        backend=g.backend)
    return g.assign(layer, gamma=gamma, beta=beta, running_mean=mean, running_var=var)


def _dropout(node, g):
    ratio = attributes(node, ratio=0.5, seed=0)["ratio"]  # an attribute before opset 12, input 1 since
    given = g.constant(node, 1, optional=True)
    return Dropout(float(decimal(ratio if given is None else given)), backend=g.backend)


def _clip(node, g):
    low, high = g.constant(node, 1, optional=True), g.constant(node, 2, optional=True)  # inputs since opset 11
    if any(bound is not None and bound.size != 1 for bound in (low, high)):
        raise ValueError(f"bounds of shapes {[None if b is None else b.shape for b in (low, high)]}: minicnn's Clip "
                         "takes one number for each")
    # float32 bounds as the decimals they were written as (6 for 6.0f, 0.1 for 0.1f), as the other attributes
    low, high = (None if bound is None else float(decimal(bound.item()) if bound.dtype == np.float32 else bound.item())
                 for bound in (low, high))
    if (low, high) == (0.0, 6.0):
        return ReLU6(backend=g.backend)
    if (low, high) == (0.0, None):
        return ReLU(backend=g.backend)
    if low is None or high is None:
        raise ValueError(f"min={low}, max={high}: minicnn's Clip has both bounds (or is a ReLU: min 0, no max)")
    return Clip(low, high, backend=g.backend)


def _pad(node, g):
    mode = attributes(node, mode="constant")["mode"]
    value = g.constant(node, 2, optional=True)
    if mode != "constant" or (value is not None and np.any(value != 0)) or len(node.inputs) > 3:
        raise ValueError(f"mode={mode!r}, constant_value={value}, axes {node.inputs[3:]}: minicnn's ZeroPad2D pads "
                         "with zeros (mode 'constant', value 0) on every axis's both ends (no axes input)")
    pads = [int(p) for p in g.constant(node, 1)]
    if len(pads) != 8 or pads[:2] + pads[4:6] != [0, 0, 0, 0] or min(pads) < 0:
        raise ValueError(f"pads={pads}: minicnn's ZeroPad2D pads the height and width of (N, C, H, W) by ints "
                         ">= 0, i.e. [0, 0, top, left, 0, 0, bottom, right]")
    top, left, bottom, right = pads[2:4] + pads[6:]
    return ZeroPad2D((left, right, top, bottom), backend=g.backend)


IMPORTERS = {
    "Conv": _conv,
    "MaxPool": _pool,
    "AveragePool": _pool,
    "GlobalAveragePool": lambda node, g: GlobalAvgPool2D(backend=g.backend),  # (N, C): the flatten after it folded in
    "Relu": lambda node, g: ReLU(backend=g.backend),
    "Clip": _clip,
    "Pad": _pad,
    "Sigmoid": lambda node, g: Sigmoid(backend=g.backend),
    "Flatten": lambda node, g: Flatten(backend=g.backend),
    "Gemm": _gemm,
    "BatchNormalization": _batchnorm,
    "Dropout": _dropout,
}
"""ONNX operator -> ``converter(node, graph)``: the layer for a canonical node (canonical.py), made from that node
alone; ``canonical.REWRITTEN`` lists the operators that are imported through these."""


def _convert(g, node):
    converter = IMPORTERS.get(node.op) if node.domain in ("", "ai.onnx") else None
    with g.about(node):
        if converter is None:
            known = ", ".join(sorted({*IMPORTERS, *REWRITTEN}))
            raise ValueError(f"operator {node.domain + '.' if node.domain else ''}{node.op} is not supported; "
                             f"minicnn imports {known}")
        used = [name for name in node.outputs[1:] if name and (name in g.readers or name == g.output)]
        if used:
            raise ValueError(f"its extra outputs {used} are used; a minicnn layer has one output")
        # The weights come from the file; an overflow (alpha, beta, biases added) is refused by Graph.assign.
        with no_random_init(), np.errstate(over="ignore", invalid="ignore"):
            return converter(node, g)


# --- one pass over the graph: chains of layers, and residual blocks where two paths from one tensor meet --------------

class _Path:
    """``layers`` that, applied to the tensor ``start`` (None: the graph's input), give a tensor of the graph."""

    def __init__(self, start, layers):
        self.start, self.layers = start, layers


class _Fork:
    """A tensor read by several nodes: the path that led to it, and how many paths leave it still unjoined."""

    def __init__(self, before, open_paths, order):
        self.before, self.open, self.order = before, open_paths, order


def _assemble(g):
    """The layers from ``g.input`` to ``g.output``, in one pass over the canonical nodes in the file's order.

    Each tensor reached is held as a path: the layers that, applied to the tensor where the path starts (None:
    the input), give it. A node extends its input's path by its layer. A tensor read by several nodes is a
    fork: each reader starts an empty path from it. An Add of two paths from one fork makes a :class:`Residual`
    block of them (the body is the Add's first input, or the path that is not empty; an empty path is the
    identity shortcut) and goes on as one path from the fork; when the last two paths of a fork meet, the
    block extends the path that led to the fork. So blocks nest, and a block in a branch closes before it.
    """
    paths, forks, done, end = {}, {}, set(), None

    def arrive(tensor, path):
        nonlocal end
        readers = g.readers.get(tensor, [])
        if tensor == g.output:
            end = path  # whatever reads the output lies off the path
        elif not readers:
            raise ValueError(f"{g.path}: tensor {tensor!r} is read by no node; minicnn imports a chain of layers and "
                             "residual blocks from the input to the output")
        elif len(readers) > 1:
            forks[tensor] = _Fork(path, len(readers), len(forks))
        else:
            paths[tensor] = path

    def leave(tensor):
        return _Path(tensor, []) if tensor in forks else paths.pop(tensor)

    arrive(g.input, _Path(None, []))
    for node in g.nodes:
        reached = [name for name in dict.fromkeys(node.inputs) if name in paths or name in forks]
        join = node.op == "Add" and node.domain in ("", "ai.onnx")  # canonical: of two computed tensors
        if not reached or (join and len(reached) < len(set(node.inputs))):
            continue  # off the path (reported below)
        done.add(id(node))
        if join:
            a = leave(node.inputs[0])
            b = leave(node.inputs[1]) if node.inputs[1] != node.inputs[0] else _Path(a.start, [])
            arrive(node.output, _join(g, node, a, b, forks))
        else:
            layer = _convert(g, node)
            path = leave(reached[0])
            path.layers.append(layer)
            arrive(node.output, path)
    left = [node.label for node in g.nodes if id(node) not in done]
    if left:
        raise ValueError(f"{g.path}: {', '.join(left)} lie off the path from the input to the output; minicnn imports "
                         "a chain of layers and residual blocks")
    if end is None:
        raise ValueError(f"{g.path}: its output {g.output!r} is not computed from its input {g.input!r}")
    if end.start is not None:
        raise _unjoined(g, end.start)
    return end.layers


def _join(g, add, a, b, forks):
    """The path from an ``add`` of paths ``a`` and ``b``: a Residual block of the two, on the path to their fork."""
    if a.start != b.start or a.start is None or not (a.layers or b.layers):
        starts = [start for start in (a.start, b.start) if start is not None]  # blame the innermost fork
        raise _unjoined(g, max(starts, key=lambda start: forks[start].order) if starts else add.inputs[0])
    body, shortcut = (a.layers, b.layers) if a.layers else (b.layers, [])  # Add(body, shortcut), as export writes it
    block = Residual(*body, shortcut=shortcut or None, backend=g.backend)
    fork = forks[a.start]
    fork.open -= 1
    if fork.open > 1:
        return _Path(a.start, [block])
    del forks[a.start]
    fork.before.layers.append(block)
    return fork.before


def _unjoined(g, tensor):
    return ValueError(f"{g.path}: tensor {tensor!r} is read by {[n.op for n in g.readers.get(tensor, [])]}, whose paths "
                      "do not meet in Adds; minicnn imports residual blocks: two branches from one tensor joined by Add")


def _decode(text):
    try:
        return json.loads(text)
    except ValueError:
        return text  # written by another tool: plain text


def load(path, backend=None):
    """The Sequential that the ONNX file at ``path`` describes, on ``backend`` (default: the active one).

    The graph must be a chain of the operators in ``IMPORTERS`` and ``canonical.REWRITTEN`` from its one input
    to its one output, where two branches from one tensor meeting in an Add become a :class:`Residual` block
    (the Add's first input is the body's); weights come from initializers and Constant nodes, and must be
    finite. Any other operator, attribute value or graph shape is a ValueError naming the node, and a file
    that ``onnx`` cannot read or check a ValueError naming the file. Other tools' habits import too: Gemm
    with transB, alpha and beta or MatMul + Add (-> Dense), Reshape to (N, -1) (-> Flatten), auto_pad,
    Identity, Constant, Clip with min 0 only (-> ReLU), and any node computed from constants alone (as
    PyTorch's exporter computes the pads of a Pad).

    minicnn models output logits: a Softmax that ends the graph, or a Sigmoid of one output, is the
    classifier's output activation and is left out (``minicnn.probabilities`` applies it). The input
    normalization that :func:`export` writes is left out too, its mean and std staying in
    ``model.metadata`` with the rest of the file's ``metadata_props`` (JSON values decoded), so a file
    written by :func:`export` comes back with the same layers (Dropout aside), weights and metadata.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"minicnn.onnx.load: path must be a str or os.PathLike, got {path!r}")
    path = os.fspath(path)
    proto = read(path)
    g = Graph(proto, path, backend)
    props = {p.key: _decode(p.value) for p in proto.metadata_props}
    metadata = {key: value for key, value in props.items() if key not in GRAPH_KEYS}
    canonicalize(g, props.get("input"), metadata)
    model = Sequential(_assemble(g), backend=g.backend)
    model.metadata = metadata
    return model
