"""Optimizers. Each updates a model's parameters in place from the gradients its last backward wrote.

An optimizer is built on the model itself (or on one layer): ``SGD(model,
lr=0.1)``. It reads ``model.params`` and ``model.grads`` afresh at every
step, so it always sees the arrays the last backward wrote, also after
``to()`` or ``astype()`` replaced them, and the layers of a model changed
after the optimizer was built. ``weight_decay`` adds
``weight_decay * param`` to every gradient: L2 regularization, the
documented way to regularize. ``lr`` is an attribute, so schedules simply
assign to it.

Valid settings (anything else is refused when the optimizer is built):
``lr > 0`` (a schedule may later set any finite ``lr >= 0``),
``weight_decay >= 0``, ``momentum`` in [0, 1), Adam's ``betas`` each in
[0, 1), RMSProp's ``alpha`` in [0, 1), ``eps > 0`` (with ``eps = 0`` a
parameter whose gradient is exactly 0 would become 0 / 0 = NaN), all finite.
"""
from .backend import backend_of
from .validate import flag, real


class Optimizer:
    """Base class: ``step()`` updates every trainable (not frozen) parameter from its gradient, by name."""

    def __init__(self, model, lr, weight_decay=0.0):
        name = type(self).__name__
        if not (hasattr(model, "params") and hasattr(model, "grads")):
            raise TypeError(f"{name}: expected the model (or a layer) whose parameters to train, got a "
                            f"{type(model).__name__}; write {name}(model, lr=...)")
        if not model.params:
            raise ValueError(f"{name}: {model.describe()} has no parameters to train")
        self.model = model
        self.lr = real(lr, "lr", name, 0, low_open=True)
        self.weight_decay = real(weight_decay, "weight_decay", name, 0)
        self.state = {}
        """Per-parameter arrays (momentum, moments) by ``(parameter name, slot)``."""
        self.steps = 0

    @property
    def lr(self):
        """The learning rate of the next step: a finite number >= 0."""
        return self._lr

    @lr.setter
    def lr(self, value):
        self._lr = real(value, "lr", type(self).__name__, 0)

    def hyperparameters(self):
        """The settings other than ``lr`` (which schedules change), as a JSON-friendly dict."""
        return {"weight_decay": self.weight_decay}

    def step(self):
        """Update every trainable parameter (frozen ones are skipped, see :meth:`Layer.freeze`)."""
        grads, frozen = self.model.grads, getattr(self.model, "frozen", ())
        missing = [name for name in self.model.params if name not in frozen and name not in grads]
        if missing:
            raise RuntimeError(f"{type(self).__name__}.step: no gradient for {missing[0]!r} of {self.model.describe()}: "
                               "call model.backward(...) after each forward, before step() (or freeze the parameter)")
        self.steps += 1
        for name, param in self.model.params.items():
            if name in frozen:
                continue
            grad = grads[name]
            if grad.shape != param.shape:  # broadcasting would update the parameter with a wrong gradient
                raise ValueError(f"{type(self).__name__}.step: the gradient of {name!r} has shape {tuple(grad.shape)}, "
                                 f"but the parameter has shape {tuple(param.shape)}")
            if self.weight_decay:
                grad = grad + self.weight_decay * param
            self.update(name, param, grad)

    def update(self, name, param, grad):
        """Update the parameter called ``name`` in place."""
        raise NotImplementedError

    def state_dict(self):
        """The optimizer's state as host arrays (``"<param name>/<slot>"``) and plain numbers, for checkpoints."""
        arrays = {f"{name}/{slot}": backend_of(a).to_numpy(a) for (name, slot), a in self.state.items()}
        return {"type": type(self).__name__, "lr": self.lr, "steps": self.steps, "arrays": arrays}

    def load_state_dict(self, state):
        """Restore what :meth:`state_dict` returned, onto the parameters' backend."""
        name = type(self).__name__
        saved_type = state.get("type", name)
        if saved_type != name:
            raise ValueError(f"{name}: the saved state is that of {saved_type}, which keeps other numbers")
        params = self.model.params
        arrays = {}
        for key, value in state["arrays"].items():
            param, slot = key.rsplit("/", 1)
            if param not in params:
                raise ValueError(f"{name}: saved state for a parameter {param!r} this model does not have")
            if tuple(value.shape) != tuple(params[param].shape):
                raise ValueError(f"{name}: the saved {slot} of {param!r} has shape {tuple(value.shape)}, "
                                 f"but the parameter has shape {tuple(params[param].shape)}")
            arrays[param, slot] = backend_of(params[param]).asarray(value, dtype=params[param].dtype)
        self.lr, self.steps, self.state = state["lr"], int(state["steps"]), arrays

    def buffer(self, name, slot, like):
        """Per-parameter state array (zeros at first), e.g. a momentum buffer."""
        key = (name, slot)
        if key not in self.state or self.state[key].shape != like.shape:
            self.state[key] = like.copy()
            self.state[key].fill(0)
        return self.state[key]


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum, as in PyTorch::

        v = momentum * v + g
        p -= lr * (g + momentum * v   if nesterov else   v)
    """

    def __init__(self, model, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(model, lr, weight_decay)
        self.momentum = real(momentum, "momentum", "SGD", 0, 1, high_open=True)
        self.nesterov = flag(nesterov, "nesterov", "SGD")
        if self.nesterov and self.momentum == 0:
            raise ValueError("SGD: nesterov=True needs momentum > 0")

    def hyperparameters(self):
        return dict(super().hyperparameters(), momentum=self.momentum, nesterov=self.nesterov)

    def update(self, name, param, grad):
        if self.momentum:
            v = self.buffer(name, "velocity", param)
            v *= self.momentum
            v += grad
            grad = grad + self.momentum * v if self.nesterov else v
        param -= self.lr * grad


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015)::

        m = b1 m + (1 - b1) g          v = b2 v + (1 - b2) g^2
        p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
    """

    def __init__(self, model, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(model, lr, weight_decay)
        if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
            raise TypeError(f"Adam: betas must be a pair of numbers in [0, 1), got {betas!r}")
        self.betas = tuple(real(b, f"betas[{i}]", "Adam", 0, 1, high_open=True) for i, b in enumerate(betas))
        self.eps = real(eps, "eps", "Adam", 0, low_open=True)

    def hyperparameters(self):
        return dict(super().hyperparameters(), betas=list(self.betas), eps=self.eps)

    def update(self, name, param, grad):
        b1, b2 = self.betas
        m, v = self.buffer(name, "m", param), self.buffer(name, "v", param)
        m *= b1
        m += (1 - b1) * grad
        v *= b2
        v += (1 - b2) * grad * grad
        m_hat = m / (1 - b1 ** self.steps)
        v_hat = v / (1 - b2 ** self.steps)
        param -= self.lr * m_hat / (v_hat ** 0.5 + self.eps)


class RMSProp(Optimizer):
    """RMSProp (Hinton), as in PyTorch::

        s = alpha s + (1 - alpha) g^2
        p -= lr * g / (sqrt(s) + eps)          (through a momentum buffer if momentum > 0)
    """

    def __init__(self, model, lr=1e-2, alpha=0.99, eps=1e-8, momentum=0.0, weight_decay=0.0):
        super().__init__(model, lr, weight_decay)
        self.alpha = real(alpha, "alpha", "RMSProp", 0, 1, high_open=True)
        self.eps = real(eps, "eps", "RMSProp", 0, low_open=True)
        self.momentum = real(momentum, "momentum", "RMSProp", 0, 1, high_open=True)

    def hyperparameters(self):
        return dict(super().hyperparameters(), alpha=self.alpha, eps=self.eps, momentum=self.momentum)

    def update(self, name, param, grad):
        s = self.buffer(name, "square_avg", param)
        s *= self.alpha
        s += (1 - self.alpha) * grad * grad
        step = grad / (s ** 0.5 + self.eps)
        if self.momentum:
            buf = self.buffer(name, "momentum", param)
            buf *= self.momentum
            buf += step
            step = buf
        param -= self.lr * step
