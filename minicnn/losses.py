"""Losses: each takes logits (never probabilities) so it can stay numerically stable."""
from .backend import backend_of, get_backend
from .layers.activations import sigmoid


class NonFiniteError(ValueError):
    """The logits given to a loss hold NaN or infinity."""


def softmax(logits):
    """Row-wise softmax of (N, K) logits, computed without overflow."""
    xp = backend_of(logits).xp
    z = logits - logits.max(axis=1, keepdims=True)
    e = xp.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def probabilities(logits):
    """Class probabilities (N, K) from logits: softmax of (N, K >= 2) logits, or for a
    single binary output of shape (N,) or (N, 1) the pair ``[1 - sigmoid(z), sigmoid(z)]``."""
    xp = backend_of(logits).xp
    if logits.ndim == 1 or logits.shape[1] == 1:
        p = sigmoid(logits.reshape(-1))
        return xp.stack([1 - p, p], axis=1)
    return softmax(logits)


class Loss:
    """Base class: ``forward(logits, labels) -> float`` (mean over the batch), ``backward(dloss=1) -> dlogits``."""

    def __init__(self):
        self.backend = get_backend()

    def __call__(self, logits, labels):
        return self.forward(logits, labels)

    def __repr__(self):
        return f"{type(self).__name__}()"

    def to(self, backend):
        self.backend = get_backend(backend)
        return self

    def check_logits(self, logits, ndims):
        name = type(self).__name__
        if not self.backend.is_native(logits):
            raise TypeError(f"{name}: the logits are a {type(logits).__name__}, but this loss lives on the "
                            f"{self.backend.name} backend; use .to(...) or move the data")
        if logits.ndim not in ndims:
            raise ValueError(f"{name}: expected logits of shape {' or '.join(ndims.values())}, got {tuple(logits.shape)}")
        if logits.dtype.kind != "f":
            raise TypeError(f"{name}: expected floating-point logits, got dtype {logits.dtype}")
        if not bool(self.backend.xp.isfinite(logits).all()):
            raise NonFiniteError(f"{name}: the logits of shape {tuple(logits.shape)} contain NaN or infinity "
                             f"(a diverging model, or NaN in the input data?)")

    def check_labels(self, labels, logits, expected_shapes):
        name = type(self).__name__
        if not self.backend.is_native(labels):
            raise TypeError(f"{name}: the labels are a {type(labels).__name__}, not an array of the {self.backend.name} backend")
        if tuple(labels.shape) not in expected_shapes:
            raise ValueError(f"{name}: labels of shape {tuple(labels.shape)} do not fit logits of shape "
                             f"{tuple(logits.shape)}; expected {' or '.join(map(str, expected_shapes))}")


class SoftmaxCrossEntropy(Loss):
    """Softmax followed by cross-entropy, fused for stability.

    ``forward(logits, labels)``:
        logits: (N, K) unnormalized scores.
        labels: (N,) integer class indices in [0, K), or (N, K) rows of
            target probabilities (one-hot or soft labels).
        returns: the mean over the batch of ``-sum_k t_k log softmax(z)_k``.

    Uses log-sum-exp, so logits of 1e4 neither overflow nor give NaN.
    ``backward(dloss=1) -> dlogits`` of shape (N, K) equals
    ``dloss * (softmax(z) - t) / N``.
    """

    def forward(self, logits, labels):
        self.check_logits(logits, {2: "(N, K)"})
        n, k = logits.shape
        self.check_labels(labels, logits, [(n,), (n, k)])
        xp = self.backend.xp
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_probs = shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))
        self.probs = xp.exp(log_probs)
        if labels.ndim == 1:
            if labels.dtype.kind not in "iu":
                raise ValueError(f"SoftmaxCrossEntropy: class-index labels of shape {tuple(labels.shape)} must be integers, got {labels.dtype}")
            if n and (int(labels.min()) < 0 or int(labels.max()) >= k):
                raise ValueError(f"SoftmaxCrossEntropy: labels must lie in [0, {k}) for logits of shape {(n, k)}, "
                                 f"got values from {int(labels.min())} to {int(labels.max())}")
            self.targets = xp.zeros_like(logits)
            self.targets[xp.arange(n), labels] = 1
        else:
            self.targets = labels.astype(logits.dtype)
        return float(-(self.targets * log_probs).sum() / n)

    def backward(self, dloss=1.0):
        n = self.probs.shape[0]
        return (self.probs - self.targets) * (dloss / n)


class BinaryCrossEntropy(Loss):
    """Sigmoid followed by binary cross-entropy, fused for stability.

    ``forward(logits, labels)``:
        logits: (N,) or (N, 1) scores of the positive class (a ``Dense(.., 1)`` output).
        labels: (N,) or (N, 1) targets in [0, 1] (0/1 integers or probabilities).
        returns: mean of ``max(z, 0) - z t + log(1 + exp(-|z|))``,
            which equals ``-t log s(z) - (1 - t) log(1 - s(z))`` without overflow.

    ``backward(dloss=1) -> dlogits`` (shape of the logits) equals ``dloss * (s(z) - t) / N``.
    """

    def forward(self, logits, labels):
        self.check_logits(logits, {1: "(N,)", 2: "(N, 1)"})
        n = logits.shape[0]
        if logits.ndim == 2 and logits.shape[1] != 1:
            raise ValueError(f"BinaryCrossEntropy: expected logits of shape (N,) or (N, 1), got {tuple(logits.shape)}")
        self.check_labels(labels, logits, [(n,), (n, 1)])
        xp = self.backend.xp
        t = labels.reshape(logits.shape).astype(logits.dtype)
        if n and (float(t.min()) < 0 or float(t.max()) > 1):
            raise ValueError(f"BinaryCrossEntropy: labels must lie in [0, 1], got values from {float(t.min())} to {float(t.max())}")
        self.targets, self.logits = t, logits
        losses = xp.maximum(logits, 0) - logits * t + xp.log1p(xp.exp(-xp.abs(logits)))
        return float(losses.mean())

    def backward(self, dloss=1.0):
        return (sigmoid(self.logits) - self.targets) * (dloss / self.logits.shape[0])


def loss_for(model):
    """The loss that fits a classifier's output: binary cross-entropy for a single
    output unit (a final ``Dense(.., 1)``), softmax cross-entropy otherwise."""
    last = model.layers[-1].config() if len(model) else {}
    return BinaryCrossEntropy() if last.get("out_features") == 1 else SoftmaxCrossEntropy()
