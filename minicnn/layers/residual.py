"""Residual blocks: a skip connection around a stack of layers (He et al. 2015)."""
from .base import build_layer, layer_spec
from .container import Container
from .sequential import Sequential


class Residual(Container):
    """``y = body(x) + shortcut(x)``: the building block of ResNets.

    Args:
        *layers: the body, run in order (e.g. conv, batch norm, ReLU, conv, batch norm).
        shortcut: None for the identity, or a list of layers for when the body
            changes the shape, e.g. ``[Conv2D(c, 2 * c, 1, stride=2), BatchNorm2D(2 * c)]``.
        backend: where the parts must live (default: where they were built).

    Shapes: x (N, C, H, W) -> y, the shape of the body's output; the shortcut's
    output must have that shape too (checked at every forward).

    Backward: the gradient reaches ``x`` by both paths, and the two add up::

        dx = body.backward(dout) + shortcut.backward(dout)

    With the identity shortcut the second term is ``dout`` itself: however
    small the body's gradient becomes, the block passes the gradient from
    above down unchanged. That is why gradients still flow through a ResNet
    of a hundred layers, where a plain stack's would fade away.

    The parts are :class:`~minicnn.Sequential` models, ``body`` and
    ``shortcut``; their parameters are named ``"body.0.W"``, ``"shortcut.1.gamma"``.
    """

    def __init__(self, *layers, shortcut=None, backend=None):
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = layers[0]
        if not layers:
            raise ValueError("Residual: the body needs at least one layer")
        if shortcut is not None and not isinstance(shortcut, (list, tuple)):
            raise TypeError(f"Residual: shortcut must be None (the identity) or a list of layers, got {type(shortcut).__name__}")
        if shortcut is not None and not shortcut:
            raise ValueError("Residual: an empty shortcut list; pass shortcut=None for the identity")
        self.body = Sequential(list(layers), backend=backend)
        self.shortcut = None if shortcut is None else Sequential(list(shortcut), backend=backend)
        super().__init__(list(self.sublayers().values()), backend)

    def sublayers(self):
        return {"body": self.body} if self.shortcut is None else {"body": self.body, "shortcut": self.shortcut}

    def config(self):
        return {"body": [layer_spec(layer) for layer in self.body],
                "shortcut": None if self.shortcut is None else [layer_spec(layer) for layer in self.shortcut]}

    @classmethod
    def from_config(cls, config, backend=None):
        shortcut = config.get("shortcut")
        return cls(*(build_layer(spec, backend) for spec in config["body"]),
                   shortcut=None if shortcut is None else [build_layer(spec, backend) for spec in shortcut], backend=backend)

    def describe(self):
        shortcut = "identity" if self.shortcut is None else f"{len(self.shortcut)} layers"
        return f"Residual(body: {len(self.body)} layers, shortcut: {shortcut})"

    def __repr__(self):
        shortcut = "identity" if self.shortcut is None else repr(self.shortcut).replace("\n", "\n  ")
        return f"Residual(\n  body: {repr(self.body).replace(chr(10), chr(10) + '  ')}\n  shortcut: {shortcut}\n)"

    def forward(self, x):
        out = self.body.forward(x)
        skip = x if self.shortcut is None else self.shortcut.forward(x)
        if out.shape != skip.shape:
            raise ValueError(f"{self.describe()}: the body gives shape {tuple(out.shape)} but the shortcut gives "
                             f"{tuple(skip.shape)} for input {tuple(x.shape)}; when the body changes the shape, give a "
                             "shortcut that changes it the same way, e.g. shortcut=[Conv2D(C, F, 1, stride=s), BatchNorm2D(F)]")
        return out + skip  # a new array: the body's last layer may keep its output for backward

    def backward(self, dout):
        through_body = self.body.backward(dout, input_grad=self.needs_input_grad)
        through_shortcut = dout if self.shortcut is None else self.shortcut.backward(dout, input_grad=self.needs_input_grad)
        if not self.needs_input_grad:
            return None
        return through_body + through_shortcut  # the gradient arrives by both paths
