"""Element-wise and row-wise functions of logits: sigmoid, softmax and what they predict.

Free functions: each takes its backend from its array argument.
"""
from .backend import backend_of


def sigmoid(x):
    """The logistic function ``1 / (1 + exp(-x))`` without overflow: ``exp`` only ever sees ``-|x|``."""
    xp = backend_of(x).xp
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1 / (1 + e), e / (1 + e))


def log_softmax(logits):
    """Row-wise ``log(softmax(z))`` of (N, K) logits by log-sum-exp: never overflows, except to -inf
    for a log-probability below the dtype's range (logits of +-3e38 in float32), which is the right answer."""
    backend = backend_of(logits)
    xp = backend.xp
    with backend.overflow_allowed():
        shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))


def softmax(logits):
    """Row-wise softmax of (N, K) logits, computed without overflow."""
    xp = backend_of(logits).xp
    e = xp.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def is_binary(logits):
    """True for one output per sample, (N,) or (N, 1): the score of the positive class."""
    return logits.ndim == 1 or logits.shape[1] == 1


def probabilities(logits):
    """Class probabilities (N, K) from logits: softmax of (N, K >= 2) logits, or for a
    single binary output of shape (N,) or (N, 1) the pair ``[1 - sigmoid(z), sigmoid(z)]``."""
    if is_binary(logits):
        p = sigmoid(logits.reshape(-1))
        return backend_of(logits).xp.stack([1 - p, p], axis=1)
    return softmax(logits)


def predicted_classes(logits):
    """The class each row of logits predicts, (N,) integers: ``probabilities(logits).argmax(1)``
    without computing the probabilities (a binary output predicts 1 where its logit is > 0)."""
    if is_binary(logits):
        return (logits.reshape(-1) > 0).astype(backend_of(logits).xp.int64)
    return logits.argmax(axis=1)
