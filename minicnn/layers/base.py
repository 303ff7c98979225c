"""The layer contract every minicnn layer follows, the checks that hold each layer to it, and the registry of layer types."""
import functools
import inspect
import json

from ..backend import Backend, get_backend

_LAYOUTS = {2: "(N, features)", 4: "(N, C, H, W)"}

LAYER_TYPES = {}
"""Every Layer subclass by class name (filled as classes are defined), to rebuild saved models."""


class Layer:
    """Base class of all layers.

    The contract, the same for every layer:

    * ``forward(x) -> y`` computes the output and keeps, as named attributes,
      whatever ``backward`` will need.
    * ``backward(dout) -> dx`` takes the gradient of the loss with respect
      to ``y`` and returns the one with respect to ``x``. It writes the
      gradient of every parameter into ``self.grads`` under the same key as
      in ``self.params``, replacing (never adding to) the previous one. It
      never modifies ``dout`` and never updates parameters: that is the
      optimizer's job.
    * ``needs_input_grad`` is False while nothing will use ``dx`` (the layer's
      input is the data: see ``Sequential.backward(dout, input_grad=False)``).
      A layer may then skip computing ``dx`` and return None; one that
      ignores the flag simply returns ``dx``, which is then dropped.
    * ``params`` and ``grads`` are dicts with the same keys; ``buffers``
      holds state that is saved with the model but not trained (running
      statistics). A frozen parameter (:meth:`freeze`) needs no gradient and
      is not trained.
    * ``train()`` / ``eval()`` switch modes (they matter for Dropout and
      BatchNorm2D only).
    * ``config()`` returns the constructor arguments (JSON-friendly), so a
      saved model can be rebuilt. By default it reads each argument of
      ``__init__`` (``backend`` aside) from the attribute of the same name:
      keep ``self.slope = slope`` and nothing more is needed.

    A layer lives on the backend given to its constructor (default: the
    active one, see :func:`minicnn.use_backend`); ``to()`` moves it. A layer
    of your own subclasses this, calls ``super().__init__(backend)``, fills
    ``self.params`` with arrays made by ``self.xp`` and follows the contract;
    defining the class registers it for :meth:`Sequential.load` under its
    class name, which must not be another layer's. No layer checks its own
    ``dout`` or its own gradients: the base class does it for all, in
    :meth:`__init_subclass__`.
    """

    def __init_subclass__(cls, **kwargs):
        """Register ``cls`` under its name (:data:`LAYER_TYPES`) and wrap the ``forward`` and ``backward`` it
        defines in the checks every layer gets, yours included: the one place where minicnn changes a method
        you wrote. All that the wrappers add:

        * forward records the shapes of ``x`` and of its output (none while it runs, so a forward that
          raised leaves nothing to go back through);
        * backward first refuses to run without such a forward, or with a ``dout`` that does not fit its
          output (:meth:`check_dout`: a wrong-shaped ``dout`` would broadcast into silently wrong
          gradients); after it, a ``dx`` or ``grads`` that break the contract are an error naming the
          layer (:meth:`check_backward_result`).

        They read shapes, dtypes and keys, never array values. A ``super().forward(x)`` inside a forward
        (or ``super().backward``) runs unchecked: the outermost call checks. :func:`minicnn.gradcheck`
        checks the rest of the contract (``dout`` left alone, ``grads`` replaced, not added to).
        """
        super().__init_subclass__(**kwargs)
        if not cls.__name__.startswith("_"):
            _register(cls)
        forward, backward = cls.__dict__.get("forward"), cls.__dict__.get("backward")
        if forward is not None:
            @functools.wraps(forward)
            def checked_forward(self, x, *args, **kwargs):
                if type(self).forward is not checked_forward:  # a subclass's forward calling this one
                    return forward(self, x, *args, **kwargs)
                self._forward_shapes = None
                y = forward(self, x, *args, **kwargs)
                self._forward_shapes = _shape(x), _shape(y)
                return y
            cls.forward = checked_forward
        if backward is not None:
            @functools.wraps(backward)
            def checked_backward(self, dout, *args, **kwargs):
                if type(self).backward is not checked_backward:  # a subclass's backward calling this one
                    return backward(self, dout, *args, **kwargs)
                self.check_dout(dout)
                dx = backward(self, dout, *args, **kwargs)
                self.check_backward_result(dx)
                return dx
            cls.backward = checked_backward

    def __init__(self, backend=None):
        if backend is not None and not isinstance(backend, (str, Backend)):  # e.g. GlobalAvgPool2D(1), ReLU(0.1)
            takes = f"; {type(self).__name__}() takes no other argument" if type(self).__init__ is Layer.__init__ else ""
            raise TypeError(f"{type(self).__name__}: backend must be None, 'numpy', 'cupy' or a Backend, "
                            f"got {backend!r}{takes}")
        self.backend = get_backend(backend)
        self.params = {}
        self.grads = {}
        self.buffers = {}
        self.training = True
        self.needs_input_grad = True
        self.frozen = set()
        """The keys of the parameters that are not trained (see :meth:`freeze`)."""

    def __getattr__(self, name):  # only reached when the attribute is missing
        if name in _SET_BY_LAYER_INIT:
            raise AttributeError(f"{type(self).__name__} has no {name!r}: its __init__ must call "
                                 "super().__init__(backend) first, which sets up backend, params, grads and buffers")
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

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

    def freeze(self, *keys):
        """Stop training the parameters ``keys`` (default: all of them): optimizers skip them and
        ``backward`` need not write their gradients (transfer learning keeps pretrained layers so)."""
        self.frozen |= set(_known_parameters(self, "freeze", keys) or self.params)
        return self

    def unfreeze(self, *keys):
        """Train the parameters ``keys`` (default: all of them) again."""
        self.frozen -= set(_known_parameters(self, "unfreeze", keys) or self.params)
        return self

    def config(self):
        """The constructor arguments that rebuild this layer (JSON-friendly).

        By default each argument of ``__init__`` but ``backend``, read from the
        attribute of the same name (as scikit-learn's ``get_params``); a layer
        that keeps an argument under another name overrides this method.
        """
        return {name: getattr(self, name) for name in constructor_arguments(type(self)) if hasattr(self, name)}

    @classmethod
    def from_config(cls, config, backend=None):
        """The layer that :meth:`config` describes, on ``backend``."""
        return cls(**config, backend=backend)

    def sublayers(self):
        """The layers this one is made of, by name (none for a plain layer)."""
        return {}

    def named_layers(self, prefix=""):
        """``(dotted name, layer)`` for every layer inside this one, depth first, parents before their parts."""
        for name, part in self.sublayers().items():
            yield prefix + name, part
            yield from part.named_layers(f"{prefix}{name}.")

    @property
    def dtype(self):
        """The dtype of the parameters, or None for a layer without any."""
        return next(iter(self.params.values())).dtype if self.params else None

    def to(self, backend):
        """Move parameters and buffers to ``backend`` ("numpy", "cupy" or a Backend); no copy if already there."""
        target = get_backend(backend)
        if target is self.backend:
            return self
        for store in (self.params, self.buffers):
            for key, value in store.items():
                store[key] = target.asarray(self.backend.to_numpy(value))
        self.grads = {}
        self.backend = target
        return self

    def astype(self, dtype):
        """Cast parameters and buffers to ``dtype`` (float64 for gradient checks); a floating dtype only."""
        _check_float_dtype(self, dtype)
        for store in (self.params, self.buffers):
            for key, value in store.items():
                store[key] = value.astype(dtype, copy=False)
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

    def check_dout(self, dout):
        """Raise a clear error unless ``dout`` fits the output of this layer's last successful forward."""
        shapes = getattr(self, "_forward_shapes", None)  # (input, output), recorded by the checked forward
        if shapes is None:
            raise RuntimeError(f"{self.describe()}.backward: there was no forward pass to go back through "
                               "(call forward(x) first; a forward that raised an error does not count)")
        shape = shapes[1]
        if not self.backend.is_native(dout):
            raise TypeError(f"{self.describe()}.backward: dout is a {type(dout).__module__}.{type(dout).__name__}, "
                            f"expected an array of the {self.backend.name} backend shaped like the output {shape}")
        if dout.dtype.kind != "f":
            raise TypeError(f"{self.describe()}.backward: dout must be a floating-point array, got dtype {dout.dtype}")
        if tuple(dout.shape) != shape:
            raise ValueError(f"{self.describe()}.backward: dout has shape {tuple(dout.shape)}, but the last forward's "
                             f"output has shape {shape} (dout is the gradient of the loss with respect to that output)")

    def check_backward_result(self, dx):
        """Raise a clear error unless ``dx`` (or None) is shaped like the last forward's input and ``grads``
        holds a gradient shaped like each trainable parameter, and nothing else."""
        where = f"{self.describe()}.backward"
        shape = self._forward_shapes[0]
        if dx is not None and _shape(dx) != shape:
            raise ValueError(f"{where} returned dx of shape {_shape(dx)}, but its input had shape "
                             f"{shape} (dx is the gradient of the loss with respect to that input)")
        if self.sublayers():
            return  # a layer made of layers: each part checked its own gradients in its own backward
        strays = sorted(self.grads.keys() - self.params.keys())
        if strays:
            raise KeyError(f"{where} wrote grads[{strays[0]!r}], but the layer has no parameter {strays[0]!r} "
                           f"(its parameters: {sorted(self.params)})")
        for key in sorted(self.params.keys() - self.frozen):
            if key not in self.grads:
                raise KeyError(f"{where} wrote no grads[{key!r}]: every trainable parameter needs its gradient, under "
                               f"the key of params (or freeze it: layer.freeze({key!r}))")
            grad, param = self.grads[key], self.params[key]
            if _shape(grad) != tuple(param.shape):
                raise ValueError(f"{where} wrote grads[{key!r}] of shape {_shape(grad)}, but the "
                                 f"parameter has shape {tuple(param.shape)}")


def _known_parameters(layer, method, keys):
    """``keys``, or a KeyError naming the first that is not one of ``layer``'s parameters."""
    unknown = [key for key in keys if key not in layer.params]
    if unknown:
        raise KeyError(f"{layer.describe()}.{method}: no parameter {unknown[0]!r}; it has {sorted(layer.params)}")
    return keys


_SET_BY_LAYER_INIT = ("backend", "params", "grads", "buffers", "training", "needs_input_grad", "frozen")


def _shape(array):
    """``array.shape`` as a tuple; () for what has no shape (a number, None)."""
    return tuple(getattr(array, "shape", ()))


def _check_float_dtype(layer, dtype):
    try:
        kind = layer.backend.xp.dtype(dtype).kind
    except TypeError:
        kind = None
    if kind != "f":
        raise TypeError(f"{layer.describe()}.astype: parameters must stay floating-point (float32, float64), got {dtype!r}")


def _register(cls):
    """Record ``cls`` in :data:`LAYER_TYPES`; a name taken by another class is an error (saved models name
    layers by class name, so a loaded model would silently get the other class). A class defined again
    (a notebook cell run twice) replaces its earlier self."""
    existing = LAYER_TYPES.get(cls.__name__)
    where = f"{cls.__module__}.{cls.__qualname__}"
    if existing is not None and f"{existing.__module__}.{existing.__qualname__}" != where:
        raise TypeError(f"{where}: the layer name {cls.__name__!r} is taken by {existing.__module__}."
                        f"{existing.__qualname__}, and saved models name their layers by class name; choose "
                        "another name (or one starting with '_' for a layer that is never saved)")
    LAYER_TYPES[cls.__name__] = cls


def constructor_arguments(cls):
    """The names of the arguments of ``cls.__init__`` that :meth:`Layer.config` records (all but ``backend``)."""
    parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]  # not self
    return [p.name for p in parameters if p.name != "backend" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def layer_spec(layer):
    """``{"type": class name, "config": constructor arguments}``: what rebuilds ``layer`` (JSON-friendly).

    Refuses a layer that relies on the default :meth:`Layer.config` while some
    constructor argument is not kept as an attribute of the same name: the
    rebuilt layer would silently take the default.
    """
    cls, config = type(layer), layer.config()
    missing = [name for name in constructor_arguments(cls) if name not in config]
    if missing and cls.config is Layer.config:
        keep = "; ".join(f"self.{name} = {name}" for name in missing)
        record = ", ".join(f"{name}=..." for name in missing)
        raise TypeError(f"{cls.__name__}: cannot record its constructor argument(s) {', '.join(missing)}: "
                        f"a saved copy would come back with the defaults. Keep each under its own name in "
                        f"__init__ ({keep}), or add the method `def config(self): return dict({record})`")
    try:
        json.dumps(config)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{cls.__name__}: its config() {config!r} is not JSON-friendly ({e}); "
                        "a saved model stores it as JSON: use numbers, strings, lists and dicts") from e
    return {"type": cls.__name__, "config": config}


def build_layer(spec, backend=None):
    """The layer that :func:`layer_spec` described, with fresh (unloaded) parameters, on ``backend``."""
    name = spec.get("type") if isinstance(spec, dict) else None
    if name not in LAYER_TYPES:
        known = ", ".join(sorted(LAYER_TYPES))
        raise ValueError(f"unknown layer type {name!r} (known: {known}; a layer class of your own must be "
                         "defined, i.e. its module imported, before loading)")
    return LAYER_TYPES[name].from_config(spec.get("config", {}), backend)
