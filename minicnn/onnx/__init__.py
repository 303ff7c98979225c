"""ONNX export and import: a minicnn model as a file every runtime reads, and ONNX graphs as minicnn models.

    import minicnn.onnx
    minicnn.onnx.export(model, "catdog.onnx")    # the deployable classifier: uint8 images in, probabilities out
    model = minicnn.onnx.load("catdog.onnx")      # a Sequential again (Residual blocks included)

Export is a table of small functions, one per layer type (``EXPORTERS``, exporter.py). Import reads the
file (graph.py), rewrites other tools' habits into canonical nodes (canonical.py), then converts node by
node with a table of small functions, one per operator (``IMPORTERS``, importer.py). Anything not in a
table is a clear error naming the layer or the node.

Needs the ``onnx`` package: ``pip install ".[onnx]"`` in the minicnn checkout (ONNX Runtime too, to run the files).
"""
try:
    import onnx  # noqa: F401  (here, before the modules that use it, for an error that says what to install)
except ImportError as e:
    raise ImportError(f'minicnn.onnx needs the onnx package ({e}); install it with: pip install ".[onnx]" in the '
                      "minicnn checkout (the PyPI package named minicnn is another project)") from e

from .conventions import INPUTS, IR_VERSION, OPSET, OUTPUTS
from .exporter import EXPORTERS, export
from .importer import IMPORTERS, load

__all__ = ["export", "load", "EXPORTERS", "IMPORTERS", "OPSET", "IR_VERSION", "INPUTS", "OUTPUTS"]
