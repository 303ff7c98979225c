"""The layer contract every minicnn layer follows."""
from ..backend import get_backend

_LAYOUTS = {2: "(N, features)", 4: "(N, C, H, W)"}


class Layer:
    """Base class of all layers.

    The contract:

    * ``forward(x) -> y`` computes the output and keeps, as named attributes,
      whatever ``backward`` will need.
    * ``backward(dout) -> dx`` takes the gradient of the loss with respect
      to ``y`` and returns the one with respect to ``x``. It writes the
      gradient of every parameter into ``self.grads`` under the same key as
      in ``self.params``, replacing (never adding to) the previous one. It
      never modifies ``dout`` and never updates parameters: that is the
      optimizer's job. Layers with parameters also take ``input_grad=False``,
      meaning nothing needs ``dx`` (their input is data): they then fill
      ``grads`` only and return None.
    * ``params`` and ``grads`` are dicts with the same keys; ``buffers``
      holds state that is saved with the model but not trained (running
      statistics).
    * ``train()`` / ``eval()`` switch modes (they matter for Dropout and
      BatchNorm2D only).

    A layer lives on the backend that was active when it was built (see
    :func:`minicnn.use_backend`); ``to()`` moves it.
    """

    def __init__(self):
        self.backend = get_backend()
        self.params = {}
        self.grads = {}
        self.buffers = {}
        self.training = True

    @property
    def xp(self):
        """The array namespace of this layer's backend (numpy or cupy)."""
        return self.backend.xp

    def forward(self, x):
        raise NotImplementedError

    def backward(self, dout):
        raise NotImplementedError

    def __call__(self, x):
        return self.forward(x)

    def train(self, mode=True):
        """Switch to training mode (or to evaluation mode with ``mode=False``)."""
        self.training = mode
        return self

    def eval(self):
        """Switch to evaluation mode."""
        return self.train(False)

    def config(self):
        """The constructor arguments that rebuild this layer (JSON-friendly)."""
        return {}

    @property
    def dtype(self):
        """The dtype of the parameters, or None for a layer without any."""
        return next(iter(self.params.values())).dtype if self.params else None

    def to(self, backend):
        """Move parameters and buffers to ``backend`` ("numpy", "cupy" or a Backend)."""
        target = get_backend(backend)
        for store in (self.params, self.buffers):
            for key, value in store.items():
                store[key] = target.asarray(self.backend.to_numpy(value))
        self.grads = {}
        self.backend = target
        return self

    def astype(self, dtype):
        """Cast parameters and buffers to ``dtype`` (float64 for gradient checks)."""
        for store in (self.params, self.buffers):
            for key, value in store.items():
                store[key] = value.astype(dtype)
        self.grads = {}
        return self

    def describe(self):
        """The layer's type and hyper-parameters, e.g. ``Dense(in_features=8, out_features=2, init='he')``."""
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"

    def __repr__(self):
        shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in self.params.items())
        return self.describe() + (f" [{shapes}]" if shapes else "")

    def check_input(self, x, ndim=None, channels=None):
        """Raise a clear error unless ``x`` is a floating array of this backend (with ``ndim`` dims if given).

        The input must also have ``channels`` entries on axis 1 if given, and
        the parameters' dtype if the layer has parameters.
        """
        if not self.backend.is_native(x):
            raise TypeError(
                f"{self!r}: the input is a {type(x).__module__}.{type(x).__name__}, but this layer "
                f"lives on the {self.backend.name} backend; move the data with "
                f"minicnn.get_backend({self.backend.name!r}).asarray(x) or the model with .to(...)"
            )
        if ndim is not None and x.ndim != ndim:
            raise ValueError(f"{self!r}: expected a {ndim}-D input {_LAYOUTS.get(ndim, '')}, got shape {tuple(x.shape)}")
        if channels is not None and x.shape[1] != channels:
            what = "features" if ndim == 2 else "channels"
            raise ValueError(f"{self!r}: expected {channels} input {what} on axis 1, got shape {tuple(x.shape)}")
        expected = self.dtype
        if expected is None and x.dtype.kind != "f":
            raise TypeError(f"{self!r}: expected a floating-point input, got dtype {x.dtype}")
        if expected is not None and x.dtype != expected:
            raise TypeError(
                f"{self!r}: the input has dtype {x.dtype} but the parameters are {expected}; "
                f"cast the input with x.astype(...) or the model with .astype(...)"
            )
