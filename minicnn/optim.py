"""Optimizers. Each updates parameters in place from the gradients the last backward wrote.

``params`` is what ``model.parameters()`` returns (or any iterable of
``(param, grad)`` pairs). ``weight_decay`` adds ``weight_decay * param`` to
every gradient: L2 regularization, the documented way to regularize.
``lr`` is a plain attribute, so schedules simply assign to it.
"""
from .backend import backend_of


class Optimizer:
    def __init__(self, params, lr, weight_decay=0.0):
        if lr <= 0:
            raise ValueError(f"{type(self).__name__}: lr must be positive, got {lr}")
        # A generator can be walked once only; model.parameters() is re-read every step.
        self.params = list(params) if iter(params) is params else params
        self.lr = lr
        self.weight_decay = weight_decay
        self.state = {}
        self.steps = 0

    def step(self):
        """Update every parameter that has a gradient."""
        self.steps += 1
        for i, (param, grad) in enumerate(self.params):
            if grad is None:
                continue
            if self.weight_decay:
                grad = grad + self.weight_decay * param
            self.update(i, param, grad)

    def update(self, i, param, grad):
        """Update parameter number ``i`` in place."""
        raise NotImplementedError

    def state_dict(self):
        """The optimizer's state as host arrays (``"<param index>.<name>"``) and plain numbers, for checkpoints."""
        arrays = {f"{i}.{name}": backend_of(a).to_numpy(a) for (i, name), a in self.state.items()}
        return {"lr": self.lr, "steps": self.steps, "arrays": arrays}

    def load_state_dict(self, state):
        """Restore what :meth:`state_dict` returned, onto the parameters' backend."""
        self.lr, self.steps = state["lr"], state["steps"]
        params = [p for p, _ in self.params]
        self.state = {}
        for key, value in state["arrays"].items():
            i, name = key.split(".", 1)
            self.state[int(i), name] = backend_of(params[int(i)]).asarray(value)

    def buffer(self, i, name, like):
        """Per-parameter state array (zeros at first), e.g. a momentum buffer."""
        key = (i, name)
        if key not in self.state or self.state[key].shape != like.shape:
            self.state[key] = like.copy()
            self.state[key].fill(0)
        return self.state[key]


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum, as in PyTorch::

        v = momentum * v + g
        p -= lr * (g + momentum * v   if nesterov else   v)
    """

    def __init__(self, params, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(params, lr, weight_decay)
        if nesterov and momentum <= 0:
            raise ValueError("SGD: nesterov=True needs momentum > 0")
        self.momentum, self.nesterov = momentum, nesterov

    def update(self, i, param, grad):
        if self.momentum:
            v = self.buffer(i, "velocity", param)
            v *= self.momentum
            v += grad
            grad = grad + self.momentum * v if self.nesterov else v
        param -= self.lr * grad


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015)::

        m = b1 m + (1 - b1) g          v = b2 v + (1 - b2) g^2
        p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr, weight_decay)
        self.betas, self.eps = betas, eps

    def update(self, i, param, grad):
        b1, b2 = self.betas
        m, v = self.buffer(i, "m", param), self.buffer(i, "v", param)
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

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, momentum=0.0, weight_decay=0.0):
        super().__init__(params, lr, weight_decay)
        self.alpha, self.eps, self.momentum = alpha, eps, momentum

    def update(self, i, param, grad):
        s = self.buffer(i, "square_avg", param)
        s *= self.alpha
        s += (1 - self.alpha) * grad * grad
        step = grad / (s ** 0.5 + self.eps)
        if self.momentum:
            buf = self.buffer(i, "momentum", param)
            buf *= self.momentum
            buf += step
            step = buf
        param -= self.lr * step
