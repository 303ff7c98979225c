"""Look inside a forward/backward pass without touching layer code."""


class Record:
    """What one layer saw in one phase.

    Attributes:
        phase: "forward" (input x -> output y) or "backward" (input dout -> output dx).
        name, layer: the layer's place in the model (``"3"``, or ``"3.body.0"`` inside a
            residual block) and the layer itself.
        input_shape, output_shape, dtype: of the arrays (output_shape is None
            for a first layer's skipped ``dx``, see ``Sequential.backward``).
        stats: {"min", "mean", "max"} of the output, as floats.
        input, output: host (NumPy) copies of the arrays, if the tracer keeps them.
    """

    def __init__(self, phase, name, layer, x, y, keep):
        backend = layer.backend
        self.phase, self.name, self.layer = phase, name, layer
        self.input_shape, self.dtype = tuple(x.shape), x.dtype
        self.output_shape = None if y is None else tuple(y.shape)
        self.stats = {"min": float(y.min()), "mean": float(y.mean()), "max": float(y.max())} if y is not None and y.size else {}
        self.input = backend.to_numpy(x).copy() if keep else None
        self.output = backend.to_numpy(y).copy() if keep and y is not None else None
        self.grads = {k: backend.to_numpy(g).copy() for k, g in layer.grads.items()} if keep and phase == "backward" else {}

    def __repr__(self):
        arrow = "x -> y" if self.phase == "forward" else "dout -> dx"
        s = self.stats
        return (f"{self.phase:<8} {self.name:>12} {type(self.layer).__name__:<15} {arrow:<10} "
                f"{str(self.input_shape):<18} -> {str(self.output_shape):<18} {str(self.dtype):<8} "
                f"min {s.get('min', 0):+.3e}  mean {s.get('mean', 0):+.3e}  max {s.get('max', 0):+.3e}")


class Tracer:
    """Record every layer's input and output, forward and backward, while the block runs.

    ::

        with Tracer(model, keep_arrays=True) as trace:
            loss = loss_fn.forward(model.forward(x), labels)
            model.backward(loss_fn.backward())
        print(trace)                      # one line per layer and phase: shapes, dtype, min/mean/max
        trace.forward[0].output           # the first layer's output, as a NumPy array

    Args:
        model: a :class:`~minicnn.Sequential`.
        keep_arrays: also keep host copies of the arrays (and of each layer's
            parameter gradients after its backward); off by default to save memory.
    """

    def __init__(self, model, keep_arrays=False):
        self.model, self.keep_arrays = model, keep_arrays
        self.records = []

    def __call__(self, phase, name, layer, x, y):
        self.records.append(Record(phase, name, layer, x, y, self.keep_arrays))

    def __enter__(self):
        self.records = []
        self._hooked = self.model.hooked(self)
        self._hooked.__enter__()
        return self

    def __exit__(self, *exc):
        self._hooked.__exit__(*exc)
        return False

    @property
    def forward(self):
        """The forward records, in layer order."""
        return [r for r in self.records if r.phase == "forward"]

    @property
    def backward(self):
        """The backward records, in the order they ran (last layer first)."""
        return [r for r in self.records if r.phase == "backward"]

    def __repr__(self):
        return "\n".join(map(repr, self.records))
