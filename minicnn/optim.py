"""Optimizers. Each updates a model's parameters in place from the gradients its last backward wrote.

An optimizer is built on the model itself (or on one layer): ``SGD(model,
lr=0.1)``. It reads ``model.params`` and ``model.grads`` afresh at every
step, so it always sees the arrays the last backward wrote, also after
``to()`` or ``astype()`` replaced them. ``weight_decay`` adds
``weight_decay * param`` to every gradient: L2 regularization, the
documented way to regularize. ``lr`` is a plain attribute, so schedules
simply assign to it.
"""
from .backend import backend_of


class Optimizer:
    """Base class: ``step()`` updates every parameter that has a gradient, by name."""

    def __init__(self, model, lr, weight_decay=0.0):
        name = type(self).__name__
        if not (hasattr(model, "params") and hasattr(model, "grads")):
            raise TypeError(f"{name}: expected the model (or a layer) whose parameters to train, got a "
                            f"{type(model).__name__}; write {name}(model, lr=...)")
        if lr <= 0:
            raise ValueError(f"{name}: lr must be positive, got {lr}")
        self.model = model
        self.lr = lr
        self.weight_decay = weight_decay
        self.state = {}
        """Per-parameter arrays (momentum, moments) by ``(parameter name, slot)``."""
        self.steps = 0

    def step(self):
        """Update every parameter that has a gradient."""
        self.steps += 1
        grads = self.model.grads
        for name, param in self.model.params.items():
            grad = grads.get(name)
            if grad is None:
                continue
            if self.weight_decay:
                grad = grad + self.weight_decay * param
            self.update(name, param, grad)

    def update(self, name, param, grad):
        """Update the parameter called ``name`` in place."""
        raise NotImplementedError

    def state_dict(self):
        """The optimizer's state as host arrays (``"<param name>/<slot>"``) and plain numbers, for checkpoints."""
        arrays = {f"{name}/{slot}": backend_of(a).to_numpy(a) for (name, slot), a in self.state.items()}
        return {"lr": self.lr, "steps": self.steps, "arrays": arrays}

    def load_state_dict(self, state):
        """Restore what :meth:`state_dict` returned, onto the parameters' backend."""
        self.lr, self.steps = state["lr"], state["steps"]
        params = self.model.params
        self.state = {}
        for key, value in state["arrays"].items():
            name, slot = key.rsplit("/", 1)
            if name not in params:
                raise ValueError(f"{type(self).__name__}: saved state for a parameter {name!r} this model does not have")
            self.state[name, slot] = backend_of(params[name]).asarray(value)

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
        if nesterov and momentum <= 0:
            raise ValueError("SGD: nesterov=True needs momentum > 0")
        self.momentum, self.nesterov = momentum, nesterov

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
        self.betas, self.eps = betas, eps

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
        self.alpha, self.eps, self.momentum = alpha, eps, momentum

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
