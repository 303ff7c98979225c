"""Losses: each takes logits (never probabilities) so it can stay numerically stable.

``forward(logits, labels)`` returns the mean loss over the batch as a 0-d
array on the loss's backend (``float(loss)`` fetches it); ``backward(dloss=1)``
returns the gradient with respect to the logits.
"""
import functools

from .backend import get_backend
from .functional import log_softmax, sigmoid
from .validate import NonFiniteError, real


class Loss:
    """Base class: ``forward(logits, labels) -> 0-d array`` (mean over the batch), ``backward(dloss=1) -> dlogits``.

    Args:
        backend: where the logits and labels live (default: the active backend).

    Value checks (finite logits, labels in range) go through
    :meth:`Backend.check`, so a training loop can judge them all at once
    instead of waiting for the device at every step. An empty batch is
    refused (its mean loss would be NaN). As for layers, the base class
    guards ``backward``: it needs a successful ``forward`` before it, and
    ``dloss`` must be a finite number.
    """

    def __init_subclass__(cls, **kwargs):
        """Wrap the ``forward`` and ``backward`` that ``cls`` defines in the checks every loss gets (as
        :meth:`Layer.__init_subclass__ <minicnn.layers.base.Layer.__init_subclass__>` does for layers):
        forward notes whether it succeeded; backward refuses to run without a successful forward, or with
        a ``dloss`` that is not a finite number. A ``super()`` call inside them runs unchecked."""
        super().__init_subclass__(**kwargs)
        forward, backward = cls.__dict__.get("forward"), cls.__dict__.get("backward")
        if forward is not None:
            @functools.wraps(forward)
            def checked_forward(self, logits, labels, *args, **kwargs):
                if type(self).forward is not checked_forward:  # a subclass's forward calling this one
                    return forward(self, logits, labels, *args, **kwargs)
                self._forward_succeeded = False
                value = forward(self, logits, labels, *args, **kwargs)
                self._forward_succeeded = True
                return value
            cls.forward = checked_forward
        if backward is not None:
            @functools.wraps(backward)
            def checked_backward(self, dloss=1.0, *args, **kwargs):
                if type(self).backward is not checked_backward:
                    return backward(self, dloss, *args, **kwargs)
                self._check_dloss(dloss)
                return backward(self, dloss, *args, **kwargs)
            cls.backward = checked_backward

    def _check_dloss(self, dloss):
        name = type(self).__name__
        if not getattr(self, "_forward_succeeded", False):
            raise RuntimeError(f"{name}.backward: there was no forward pass to go back through "
                               "(call forward(logits, labels) first; a forward that raised an error does not count)")
        if getattr(dloss, "shape", None) == ():  # a 0-d array: checked on the device, like every value check
            self.backend.check(self.backend.xp.isfinite(dloss), lambda: f"{name}.backward: dloss is not finite",
                               NonFiniteError)
        else:
            real(dloss, "dloss", f"{name}.backward")

    def __init__(self, backend=None):
        self.backend = get_backend(backend)

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
        if logits.shape[0] == 0:
            raise ValueError(f"{name}: an empty batch (logits of shape {tuple(logits.shape)}) has no mean loss")
        self.backend.check(self.backend.xp.isfinite(logits),
                           lambda: f"{name}: the logits of shape {tuple(logits.shape)} contain NaN or infinity "
                                   f"(a diverging model, or NaN in the input data?)", NonFiniteError)

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
            non-negative target weights (one-hot or soft labels).
        returns: the mean over the batch of ``-sum_k t_k log softmax(z)_k``, a 0-d array.

    Uses log-sum-exp, so logits of 1e4 neither overflow nor give NaN.
    ``backward(dloss=1) -> dlogits`` of shape (N, K) equals
    ``dloss * (softmax(z) * sum_k t_k - t) / N``, which is
    ``dloss * (softmax(z) - t) / N`` for rows that sum to 1 (as PyTorch).
    """

    def forward(self, logits, labels):
        self.check_logits(logits, {2: "(N, K)"})
        n, k = logits.shape
        self.check_labels(labels, logits, [(n,), (n, k)])
        xp = self.backend.xp
        if labels.ndim == 1:
            if labels.dtype.kind not in "iu":
                raise ValueError(f"SoftmaxCrossEntropy: class-index labels of shape {tuple(labels.shape)} must be integers, got {labels.dtype}")
            self.backend.check((labels >= 0) & (labels < k), lambda: (
                f"SoftmaxCrossEntropy: labels must lie in [0, {k}) for logits of shape {(n, k)}, "
                f"got values from {int(labels.min())} to {int(labels.max())}"))
            self.targets = (labels[:, None] == xp.arange(k)).astype(logits.dtype)  # one-hot
        else:
            if labels.dtype.kind not in "biuf":
                raise TypeError(f"SoftmaxCrossEntropy: target probabilities must be numbers, got dtype {labels.dtype}")
            self.targets = labels.astype(logits.dtype)
            sound = xp.isfinite(self.targets) & (self.targets >= 0)
            self.backend.check(sound, lambda: (
                "SoftmaxCrossEntropy: target probabilities must be finite and non-negative, got "
                f"{float(self.targets[~sound][0])} (one of {int((~sound).sum())} such values)"))
        log_probs = log_softmax(logits)
        self.probs = xp.exp(log_probs)
        # A target of 0 on a log-probability of -inf (extreme logits) adds 0, not 0 * -inf = NaN.
        # Divided before summing: the mean of losses near the dtype's largest value must not overflow.
        return -(self.targets * xp.where(self.targets > 0, log_probs, 0) / n).sum()

    def backward(self, dloss=1.0):
        n = self.probs.shape[0]
        return (self.probs * self.targets.sum(axis=1, keepdims=True) - self.targets) * (dloss / n)


class BinaryCrossEntropy(Loss):
    """Sigmoid followed by binary cross-entropy, fused for stability.

    ``forward(logits, labels)``:
        logits: (N,) or (N, 1) scores of the positive class (a ``Dense(.., 1)`` output).
        labels: (N,) or (N, 1) targets in [0, 1] (0/1 integers or probabilities).
        returns: mean of ``max(z, 0) - z t + log(1 + exp(-|z|))``,
            which equals ``-t log s(z) - (1 - t) log(1 - s(z))`` without overflow; a 0-d array.

    ``backward(dloss=1) -> dlogits`` (shape of the logits) equals ``dloss * (s(z) - t) / N``.
    """

    def forward(self, logits, labels):
        self.check_logits(logits, {1: "(N,)", 2: "(N, 1)"})
        n = logits.shape[0]
        if logits.ndim == 2 and logits.shape[1] != 1:
            raise ValueError(f"BinaryCrossEntropy: expected logits of shape (N,) or (N, 1), got {tuple(logits.shape)}")
        self.check_labels(labels, logits, [(n,), (n, 1)])
        xp = self.backend.xp
        if labels.dtype.kind not in "biuf":
            raise TypeError(f"BinaryCrossEntropy: labels must be numbers in [0, 1], got dtype {labels.dtype}")
        t = labels.reshape(logits.shape).astype(logits.dtype)
        sound = (t >= 0) & (t <= 1)
        self.backend.check(sound, lambda: (
            f"BinaryCrossEntropy: labels must lie in [0, 1], got {float(t[~sound][0])} "
            f"(one of {int((~sound).sum())} such values)"))
        self.targets, self.logits = t, logits
        losses = xp.maximum(logits, 0) - logits * t + xp.log1p(xp.exp(-xp.abs(logits)))
        return (losses / n).sum()  # not mean(): a sum of losses near the dtype's largest value would overflow

    def backward(self, dloss=1.0):
        return (sigmoid(self.logits) - self.targets) * (dloss / self.logits.shape[0])


def loss_for(model, backend=None):
    """The loss that fits a classifier's output: binary cross-entropy for a single
    output unit (a final ``Dense(.., 1)``), softmax cross-entropy otherwise."""
    last = model.layers[-1].config() if len(model) else {}
    backend = backend or model.backend
    return BinaryCrossEntropy(backend) if last.get("out_features") == 1 else SoftmaxCrossEntropy(backend)
