"""What a minicnn ONNX file is, shared by export and import: the opset, the input and output choices, the
input normalization written into the graph, and how a graph value's shape reads."""
import numpy as np

OPSET = 17
IR_VERSION = 8  # the IR that came with opset 17: runtimes from then on read the files
INPUTS = ("uint8", "float", "raw")
OUTPUTS = ("probabilities", "logits")
GRAPH_KEYS = ("input", "output")  # metadata_props that describe the graph rather than the model


def normalization(metadata, unit):
    """(1, C, 1, 1) float32 offset and scale with ``(x - offset) * scale = (x / unit - mean) / std``, computed as
    :class:`minicnn.data.Normalize` does (unit 255: uint8 pixels), so that both give the same bits."""
    mean = np.asarray(metadata["mean"], dtype=np.float64).reshape(1, -1, 1, 1)
    std = np.asarray(metadata["std"], dtype=np.float64).reshape(1, -1, 1, 1)
    return (unit * mean).astype(np.float32), (1 / (unit * std)).astype(np.float32)


def value_shape(value_info):
    """The shape of a graph value: ints, names of dynamic axes, None where unknown; None if not even the rank is known."""
    if not value_info.type.tensor_type.HasField("shape"):
        return None
    return tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                 for d in value_info.type.tensor_type.shape.dim)
