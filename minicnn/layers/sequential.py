"""Sequential models: a list of layers run forward, then backward in reverse. A Sequential is a layer
too (residual blocks are made of Sequentials), so it lives with the layers."""
import contextlib

from .. import modelfile
from ..validate import flag, integer
from .base import Layer, build_layer, layer_spec
from .container import Container


class Sequential(Container):
    """Layers applied one after another; itself a layer, so it can sit inside another model.

    ``Sequential([Conv2D(3, 8, 3), ReLU(), ...])`` or ``Sequential(Conv2D(3, 8, 3), ReLU(), ...)``.
    A training step reads::

        logits = model.forward(x)                 # x (N, C, H, W)
        loss = loss_fn.forward(logits, labels)
        model.backward(loss_fn.backward())
        optimizer.step()

    Parameters are named ``"<layer index>.<key>"`` (``"0.W"``), with more
    dots for layers inside layers (``"3.body.0.W"``).
    """

    def __init__(self, *layers, backend=None):
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = layers[0]
        for i, layer in enumerate(layers):
            if isinstance(layer, type) and issubclass(layer, Layer):
                raise TypeError(f"Sequential: item {i} is the class {layer.__name__}, not a layer; "
                                f"write {layer.__name__}(...) to make one")
            if not isinstance(layer, Layer):
                raise TypeError(f"Sequential: item {i} is a {type(layer).__name__}, not a minicnn Layer")
        super().__init__(layers, backend)
        self.layers = list(layers)
        self.hooks = []
        """Callables ``hook(phase, name, layer, input, output)`` run after every layer's
        forward (phase "forward") and backward (phase "backward": input is ``dout``,
        output is ``dx``); ``name`` is the layer's index as a string. See
        :meth:`hooked` and :class:`minicnn.trace.Tracer`."""
        self.metadata = {}
        """Anything JSON-friendly saved with the model (class names, normalization, ...)."""

    def sublayers(self):
        return {str(i): layer for i, layer in enumerate(self.layers)}

    def config(self):
        return {"layers": [layer_spec(layer) for layer in self.layers]}

    @classmethod
    def from_config(cls, config, backend=None):
        return cls([build_layer(spec, backend) for spec in config["layers"]], backend=backend)

    def __len__(self):
        return len(self.layers)

    def __getitem__(self, i):
        return self.layers[i]

    def __iter__(self):
        return iter(self.layers)

    def __repr__(self):
        inner = "".join(f"\n  ({i}): " + repr(layer).replace("\n", "\n  ") for i, layer in enumerate(self.layers))
        return f"Sequential({inner}\n)"

    def describe(self):
        return f"Sequential({len(self.layers)} layers)"

    # --- the training step ------------------------------------------------
    def forward(self, x):
        """Run every layer's forward in order: x -> logits."""
        for i, layer in enumerate(self.layers):
            y = layer.forward(x)
            for hook in self.hooks:
                hook("forward", str(i), layer, x, y)
            x = y
        return x

    def backward(self, dout, input_grad=None):
        """Run every layer's backward in reverse order: dlogits -> dx.

        ``dout`` has the shape of the last forward's output, e.g. (N, K) logits
        (checked, as for every layer: see :class:`~minicnn.layers.Layer`).

        With ``input_grad=False`` (training, where the input is data) the
        pass stops at the first layer with parameters, which fills its
        ``grads`` with ``needs_input_grad`` off (skipping its ``dx`` if it
        can); the return value is then None. The default is
        :attr:`needs_input_grad`, which is True unless a model holding this
        one says otherwise.
        """
        if input_grad is None:
            input_grad = self.needs_input_grad
        first = 0 if input_grad else next((i for i, layer in enumerate(self.layers) if layer.params), len(self.layers))
        for i in reversed(range(first, len(self.layers))):
            layer = self.layers[i]
            data_below = not input_grad and i == first
            if data_below:
                layer.needs_input_grad = False
            try:
                dx = layer.backward(dout)
            finally:
                layer.needs_input_grad = True
            if data_below:
                dx = None  # a layer that ignores the flag returned dx anyway: nobody needs it
            for hook in self.hooks:
                hook("backward", str(i), layer, dout, dx)
            dout = dx
        return dout if input_grad else None  # None also when no layer has parameters

    @contextlib.contextmanager
    def hooked(self, hook):
        """Call ``hook(phase, dotted_name, layer, input, output)`` for every layer inside the block,
        those inside residual blocks included (``"3.body.0"``)."""
        groups = [("", self)] + [(name + ".", layer) for name, layer in self.named_layers() if isinstance(layer, Sequential)]
        added = []
        for prefix, group in groups:
            added.append((group, lambda phase, name, *rest, prefix=prefix: hook(phase, prefix + name, *rest)))
            group.hooks.append(added[-1][1])
        try:
            yield self
        finally:
            for group, h in added:
                group.hooks.remove(h)

    @contextlib.contextmanager
    def evaluating(self):
        """Evaluation mode inside the ``with`` block, the previous mode again after it (even on an error)."""
        was_training = self.training
        self.eval()
        try:
            yield self
        finally:
            self.train(was_training)

    def predict(self, x, batch_size=256, tta=False):
        """Logits for images ``x`` (N, C, H, W) in evaluation mode, batch by batch; the mode is restored afterwards.

        With ``tta=True`` (test-time augmentation) each image is also classified
        mirrored left to right and the two logits are averaged: twice the work, for
        photos whose mirror image is as likely (on the bundled cat/dog photos the
        gain was within the noise: benchmarks/RECIPES.md).
        """
        batch_size = integer(batch_size, "batch_size", "Sequential.predict")
        if flag(tta, "tta", "Sequential.predict") and getattr(x, "ndim", None) != 4:  # mirroring (N, D) would reverse features
            raise ValueError(f"Sequential.predict: tta=True mirrors images left to right, so x must be images "
                             f"(N, C, H, W), got shape {tuple(getattr(x, 'shape', ()))}")
        xp = self.backend.xp

        def logits(batch):
            if not tta:
                return self.forward(batch)
            return (self.forward(batch) + self.forward(xp.ascontiguousarray(batch[..., ::-1]))) / 2

        with self.evaluating():
            outputs = [logits(x[i:i + batch_size]) for i in range(0, max(len(x), 1), batch_size)]
        return xp.concatenate(outputs)

    def summary(self, input_shape, print_fn=print):
        """Print each layer's output shape and parameter count, like Keras; the layers of a
        residual block are indented under it, and the last line is the total.

        Args:
            input_shape: one sample's shape without the batch axis, e.g. (3, 150, 150).
            print_fn: what receives the table, as one string.

        Returns:
            None, so that a notebook cell ending in ``model.summary(...)`` shows the table alone
            (the total as a number: ``sum(p.size for p in model.params.values())``).
        """
        if not isinstance(input_shape, (tuple, list)) or not input_shape:
            raise TypeError(f"Sequential.summary: input_shape must be one sample's shape, e.g. (3, 32, 32), got {input_shape!r}")
        input_shape = [integer(size, "input_shape entries", "Sequential.summary") for size in input_shape]
        shapes = {}
        x = self.backend.xp.zeros((1, *input_shape), dtype=self.dtype or "float32")
        with self.evaluating(), self.hooked(lambda phase, name, layer, x, y: shapes.__setitem__(name, y.shape)):
            self.forward(x)
        rows = [("Layer", "Output shape", "Params")]

        def add_rows(container, prefix, depth):
            for name, layer in container.sublayers().items():
                if isinstance(layer, Sequential):  # a branch of a block: its layers sit at the block's depth
                    add_rows(layer, f"{prefix}{name}.", depth)
                    continue
                count = sum(int(p.size) for p in layer.params.values())
                shape = str((None, *shapes[prefix + name][1:]))
                rows.append((f"{'  ' * depth}{prefix}{name}: {layer.describe()}", shape, f"{count:,}"))
                add_rows(layer, f"{prefix}{name}.", depth + 1)

        add_rows(self, "", 0)
        total = sum(int(p.size) for p in self.params.values())
        widths = [max(len(r[c]) for r in rows) for c in range(3)]
        lines = [f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:>{widths[2]}}" for a, b, c in rows]
        rule = "-" * len(lines[0])
        print_fn("\n".join([lines[0], rule, *lines[1:], rule, f"Total params: {total:,}"]))

    # --- files --------------------------------------------------------------
    def save(self, path, extra_arrays=None):
        """Write architecture, weights, buffers and :attr:`metadata` to one ``.npz`` file; see :mod:`minicnn.modelfile`."""
        modelfile.save_model(self, path, extra_arrays)

    @classmethod
    def load(cls, path, backend=None):
        """Rebuild a model saved with :meth:`save`, on ``backend`` (default: the active one)."""
        return modelfile.load_model(path, cls, backend)

    def load_weights(self, path):
        """Load weights saved by :meth:`save` into this model, whose architecture must match."""
        return modelfile.load_weights(self, path)
