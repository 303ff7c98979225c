"""Sequential models: a list of layers run forward, then backward in reverse."""
import contextlib
import json

import numpy as np

from .backend import get_backend
from .fileio import atomic_write
from .layers import LAYER_TYPES, Layer

_FORMAT = 1
_EXTRA = "extra/"


class Parameters:
    """A live view of a model's ``(param, grad)`` pairs, re-read on every iteration.

    Optimizers keep this view rather than a list, so they follow the model
    when ``to()`` or ``astype()`` replaces its arrays.
    """

    def __init__(self, layers):
        self._layers = layers

    def __iter__(self):
        for layer in self._layers:
            for key, param in layer.params.items():
                yield param, layer.grads.get(key)


class Sequential:
    """Layers applied one after another.

    ``Sequential([Conv2D(3, 8, 3), ReLU(), ...])`` or ``Sequential(Conv2D(3, 8, 3), ReLU(), ...)``.
    A training step reads::

        logits = model.forward(x)                 # x (N, C, H, W)
        loss = loss_fn.forward(logits, labels)
        model.backward(loss_fn.backward())
        optimizer.step()
    """

    def __init__(self, *layers):
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = layers[0]
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"Sequential: item {i} is a {type(layer).__name__}, not a minicnn Layer")
        self.layers = list(layers)
        self.hooks = []
        """Callables ``hook(phase, index, layer, input, output)`` run after every layer's
        forward (phase "forward") and backward (phase "backward": input is ``dout``,
        output is ``dx``); see :class:`minicnn.trace.Tracer`."""
        self.metadata = {}
        """Anything JSON-friendly saved with the model (class names, normalization, ...)."""
        self.output_shape = None  # of the last forward: what backward's dout must match

    def __len__(self):
        return len(self.layers)

    def __getitem__(self, i):
        return self.layers[i]

    def __iter__(self):
        return iter(self.layers)

    def __repr__(self):
        inner = "".join(f"\n  ({i}): {layer!r}" for i, layer in enumerate(self.layers))
        return f"Sequential({inner}\n)"

    # --- the training step ------------------------------------------------
    def forward(self, x):
        """Run every layer's forward in order: x -> logits."""
        for i, layer in enumerate(self.layers):
            y = layer.forward(x)
            for hook in self.hooks:
                hook("forward", i, layer, x, y)
            x = y
        self.output_shape = tuple(x.shape)
        return x

    __call__ = forward

    def backward(self, dout, input_grad=True):
        """Run every layer's backward in reverse order: dlogits -> dx.

        ``dout`` has the shape of the last forward's output, e.g. (N, K) logits.

        With ``input_grad=False`` (training, where the input is data) the
        pass stops at the first layer with parameters, which fills its
        ``grads`` without computing its ``dx``; the return value is then None.
        """
        if self.output_shape is None:
            raise RuntimeError("Sequential.backward: there was no forward pass to go back through")
        if tuple(dout.shape) != self.output_shape:  # broadcasting would give silently wrong gradients
            raise ValueError(f"Sequential.backward: dout has shape {tuple(dout.shape)}, "
                             f"but the last forward's output has shape {self.output_shape}")
        first = 0 if input_grad else next((i for i, layer in enumerate(self.layers) if layer.params), len(self.layers))
        for i in reversed(range(first, len(self.layers))):
            layer = self.layers[i]
            dx = layer.backward(dout) if input_grad or i > first else layer.backward(dout, input_grad=False)
            for hook in self.hooks:
                hook("backward", i, layer, dout, dx)
            dout = dx
        return dout if input_grad else None  # None also when no layer has parameters

    def parameters(self):
        """The ``(param, grad)`` pairs of all layers, for an optimizer."""
        return Parameters(self.layers)

    @property
    def params(self):
        """All parameters by name, ``"<layer index>.<key>"`` (e.g. ``"0.W"``)."""
        return {f"{i}.{k}": v for i, layer in enumerate(self.layers) for k, v in layer.params.items()}

    @property
    def grads(self):
        """All gradients from the last backward, named like :attr:`params`."""
        return {f"{i}.{k}": v for i, layer in enumerate(self.layers) for k, v in layer.grads.items()}

    @property
    def buffers(self):
        return {f"{i}.{k}": v for i, layer in enumerate(self.layers) for k, v in layer.buffers.items()}

    @property
    def backend(self):
        return self.layers[0].backend if self.layers else get_backend()

    @property
    def dtype(self):
        return next((layer.dtype for layer in self.layers if layer.dtype is not None), None)

    def train(self, mode=True):
        for layer in self.layers:
            layer.train(mode)
        return self

    def eval(self):
        return self.train(False)

    @property
    def training(self):
        return all(layer.training for layer in self.layers)

    @contextlib.contextmanager
    def evaluating(self):
        """Evaluation mode inside the ``with`` block, the previous mode again after it (even on an error)."""
        was_training = self.training
        self.eval()
        try:
            yield self
        finally:
            self.train(was_training)

    def to(self, backend):
        """Move all parameters and buffers to ``backend`` ("numpy" or "cupy")."""
        for layer in self.layers:
            layer.to(backend)
        return self

    def astype(self, dtype):
        for layer in self.layers:
            layer.astype(dtype)
        return self

    def predict(self, x, batch_size=256):
        """Logits for ``x`` in evaluation mode, batch by batch; the mode is restored afterwards."""
        with self.evaluating():
            outputs = [self.forward(x[i:i + batch_size]) for i in range(0, max(len(x), 1), batch_size)]
        return self.backend.xp.concatenate(outputs)

    def summary(self, input_shape, print_fn=print):
        """Print each layer's output shape and parameter count, like Keras.

        Args:
            input_shape: one sample's shape without the batch axis, e.g. (3, 150, 150).

        Returns:
            the total number of parameters.
        """
        x = self.backend.xp.zeros((1, *input_shape), dtype=self.dtype or "float32")
        rows = [("Layer", "Output shape", "Params")]
        total = 0
        with self.evaluating():
            for i, layer in enumerate(self.layers):
                x = layer.forward(x)
                count = sum(int(p.size) for p in layer.params.values())
                total += count
                rows.append((f"{i}: {layer.describe()}", str((None, *x.shape[1:])), f"{count:,}"))
        widths = [max(len(r[c]) for r in rows) for c in range(3)]
        lines = [f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:>{widths[2]}}" for a, b, c in rows]
        rule = "-" * len(lines[0])
        print_fn("\n".join([lines[0], rule, *lines[1:], rule, f"Total params: {total:,}"]))
        return total

    # --- files --------------------------------------------------------------
    def architecture(self):
        """The layer types and constructor arguments, as JSON-friendly data."""
        return [{"type": type(layer).__name__, "config": layer.config()} for layer in self.layers]

    def save(self, path, extra_arrays=None):
        """Write architecture, weights, buffers and :attr:`metadata` to one ``.npz`` file at ``path``.

        The write is atomic: an interrupted save leaves any previous file intact.
        ``extra_arrays`` (host arrays by name) are stored beside the model and
        read back by :func:`read_extra_arrays`; checkpoints keep optimizer state there.
        """
        header = {"format": _FORMAT, "layers": self.architecture(), "metadata": self.metadata}
        arrays = {name: self.backend.to_numpy(v) for name, v in {**self.params, **self.buffers}.items()}
        arrays.update({_EXTRA + name: value for name, value in (extra_arrays or {}).items()})
        arrays["__header__"] = np.array(json.dumps(header))
        atomic_write(path, lambda f: np.savez(f, **arrays))

    @classmethod
    def load(cls, path, backend=None):
        """Rebuild a model saved with :meth:`save`, on ``backend`` (default: the active one)."""
        header, arrays = _read(path)
        layers = []
        for i, spec in enumerate(header["layers"]):
            if spec["type"] not in LAYER_TYPES:
                raise ValueError(f"{path}: layer {i} has unknown type {spec['type']!r}")
            layers.append(LAYER_TYPES[spec["type"]](**spec["config"]))
        model = cls(layers)
        model.metadata = header.get("metadata", {})
        model._assign(arrays, path)
        return model.to(backend) if backend is not None else model

    def load_weights(self, path):
        """Load weights saved by :meth:`save` into this model, whose architecture must match."""
        header, arrays = _read(path)
        mine, theirs = json.loads(json.dumps(self.architecture())), header["layers"]
        if len(mine) != len(theirs):
            raise ValueError(f"{path}: holds {len(theirs)} layers, this model has {len(mine)}")
        for i, (a, b) in enumerate(zip(mine, theirs)):
            if a != b:
                raise ValueError(f"{path}: layer {i} is {b['type']}({b['config']}), this model has {a['type']}({a['config']})")
        self._assign(arrays, path)
        self.metadata = header.get("metadata", {})
        return self

    def _assign(self, arrays, path):
        for i, layer in enumerate(self.layers):
            for store in (layer.params, layer.buffers):
                for key, current in store.items():
                    name = f"{i}.{key}"
                    if name not in arrays:
                        raise ValueError(f"{path}: no array {name!r} for {layer!r}")
                    value = arrays[name]
                    if value.shape != current.shape:
                        raise ValueError(f"{path}: {name} of {layer!r} has shape {value.shape}, expected {current.shape}")
                    store[key] = layer.backend.asarray(value)
            layer.grads = {}


def read_extra_arrays(path):
    """The ``extra_arrays`` stored by :meth:`Sequential.save`, by name."""
    _, arrays = _read(path)
    return {k[len(_EXTRA):]: v for k, v in arrays.items() if k.startswith(_EXTRA)}


def _read(path):
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable minicnn model file ({e})") from e
    if "__header__" not in arrays:
        raise ValueError(f"{path}: not a minicnn model file (no architecture header)")
    header = json.loads(str(arrays.pop("__header__")))
    if header.get("format") != _FORMAT:
        raise ValueError(f"{path}: model file format {header.get('format')} is not supported (expected {_FORMAT})")
    return header, arrays
