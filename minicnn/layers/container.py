"""The base of layers made of layers (Sequential, Residual)."""
from ..backend import get_backend
from .base import Layer, _check_float_dtype, _known_parameters


class Container(Layer):
    """A layer made of other layers (its parts, see :meth:`sublayers`).

    It owns no arrays itself: ``params``, ``grads`` and ``buffers`` are
    read-only views of its parts', under dotted names (``"body.0.W"``), and
    ``to``, ``astype``, ``train``, ``eval``, ``freeze`` and ``unfreeze``
    apply to every part.
    """

    def __init__(self, parts, backend=None):
        seen = set()
        for layer in (layer for part in parts for layer in (part, *(sub for _, sub in part.named_layers()))):
            if id(layer) in seen:  # it would keep the state of one place and overwrite the gradients of the other
                raise ValueError(f"{type(self).__name__}: the same {layer.describe()} object appears twice; a layer "
                                 "keeps what its backward needs, so each place needs its own layer object")
            seen.add(id(layer))
        backends = {id(part.backend): part.backend for part in parts}
        if len(backends) > 1:
            names = sorted(b.name for b in backends.values())
            raise TypeError(f"{type(self).__name__}: its layers live on different backends ({', '.join(names)}); "
                            "move them to one with .to(...)")
        self.backend = next(iter(backends.values())) if backends else get_backend(backend)
        if backend is not None and get_backend(backend) is not self.backend:
            raise TypeError(f"{type(self).__name__}: backend={backend!r}, but its layers live on {self.backend.name}")
        self.needs_input_grad = True

    def _gather(self, store):
        return ReadOnlyView(store, {f"{name}.{key}": value for name, part in self.sublayers().items()
                                    for key, value in getattr(part, store).items()})

    @property
    def frozen(self):
        """The dotted names of the frozen parameters of every part."""
        return {f"{name}.{key}" for name, part in self.sublayers().items() for key in part.frozen}

    def freeze(self, *names):
        """Stop training the parameters ``names`` (dotted, ``"0.W"``; default: all of them)."""
        return self._each_part("freeze", names)

    def unfreeze(self, *names):
        """Train the parameters ``names`` (dotted; default: all of them) again."""
        return self._each_part("unfreeze", names)

    def _each_part(self, method, names):
        _known_parameters(self, method, names)
        for part_name, part in self.sublayers().items():
            keys = [name[len(part_name) + 1:] for name in names if name.startswith(part_name + ".")]
            if keys or not names:
                getattr(part, method)(*keys)
        return self

    @property
    def params(self):
        """The parameters of every part, by dotted name."""
        return self._gather("params")

    @property
    def grads(self):
        """The gradients of every part from the last backward, named like :attr:`params`."""
        return self._gather("grads")

    @property
    def buffers(self):
        """The buffers (e.g. running statistics) of every part, by dotted name."""
        return self._gather("buffers")

    @property
    def dtype(self):
        return next((part.dtype for part in self.sublayers().values() if part.dtype is not None), None)

    @property
    def training(self):
        """True when every part is in training mode."""
        return all(part.training for part in self.sublayers().values())

    def train(self, mode=True):
        for part in self.sublayers().values():
            part.train(mode)
        return self

    def to(self, backend):
        for part in self.sublayers().values():
            part.to(backend)
        self.backend = get_backend(backend)
        return self

    def astype(self, dtype):
        _check_float_dtype(self, dtype)
        for part in self.sublayers().values():
            part.astype(dtype)
        return self


class ReadOnlyView(dict):
    """A container's ``params``, ``grads`` or ``buffers``: gathered from its parts at each access, so
    writing into it would change nothing; it refuses instead."""

    def __init__(self, store, items):
        super().__init__(items)
        self.store = store

    def _refuse(self, *args, **kwargs):
        raise TypeError(f"a model's {self.store} is a read-only view gathered from its layers: set an array's values "
                        f"in place (model.{self.store}[name][...] = value), load saved weights with "
                        f"model.load_weights(path), or assign to the layer's own {self.store} "
                        f"(model[0].{self.store}['W'] = value)")

    __setitem__ = __delitem__ = update = pop = popitem = clear = setdefault = __ior__ = _refuse

    def __reduce__(self):  # a copy (pickled to another process, say) is a plain dict: it is no view of anything
        return dict, (dict(self),)
