"""Gradient checking: compare a backward pass with central finite differences in float64."""
import copy

import numpy as np

from .losses import Loss
from .validate import real


class GradcheckResult:
    """Maximum relative errors of a gradient check, by name ("input", "W", "0.b", ...).

    The relative error of an array is ``max|analytic - numeric| / max(max|analytic|, max|numeric|, 1)``:
    its worst entry measured against the scale of the whole gradient, so
    that single entries that are legitimately near zero do not blow it up.
    Below a scale of 1 it becomes an absolute error: a gradient that is
    truly zero (a bias followed by batch norm) only ever shows finite-difference
    noise, which must not count as a relative error of 100%.
    """

    def __init__(self, target, errors, tol):
        self.target, self.errors, self.tol = target, errors, tol

    @property
    def max_error(self):
        return max(self.errors.values())

    @property
    def ok(self):
        """True when every relative error is within ``tol``."""
        return self.max_error <= self.tol

    def assert_ok(self):
        if not self.ok:
            raise AssertionError(f"gradient check failed:\n{self}")

    def __repr__(self):
        width = max(len(name) for name in self.errors)
        name = type(self.target).__name__ if "\n" in repr(self.target) else repr(self.target)
        lines = [f"gradcheck of {name}", f"{'gradient':<{width}}  rel. error  (tol {self.tol:.0e})"]
        for name, err in self.errors.items():
            lines.append(f"{name:<{width}}  {err:10.2e}  {'ok' if err <= self.tol else 'FAIL'}")
        return "\n".join(lines)


def gradcheck(target, x, labels=None, *, eps=1e-6, tol=1e-6, seed=0):
    """Check ``target.backward`` against central finite differences.

    Args:
        target: a layer, a :class:`~minicnn.Sequential`, or a loss.
        x: the input (for a loss, the logits); any float dtype, cast to float64.
        labels: the labels, for a loss.
        eps: the finite-difference step.
        tol: the largest relative error that passes.
        seed: seeds the random upstream gradient and any randomness inside
            the target (the same dropout mask is replayed on every forward).

    Returns:
        a :class:`GradcheckResult`; ``result.ok`` tells whether it passed,
        ``print(result)`` shows the table.

    The target is copied and cast to float64, so the original is untouched.
    With upstream gradient ``g`` (random), the scalar checked is
    ``sum(forward(x) * g)``; its gradient is what ``backward(g)`` returns.
    """
    eps = real(eps, "eps", "gradcheck", 0, low_open=True)
    tol = real(tol, "tol", "gradcheck", 0, low_open=True)
    target = copy.deepcopy(target)
    is_loss = isinstance(target, Loss)
    if not is_loss:
        target.astype(np.float64)
    backend = target.backend
    # A fresh contiguous copy: the caller's array is never perturbed, and a strided view
    # (x[:, 0], say) would make numerical_gradient perturb a copy and see no effect.
    x = backend.asarray(np.array(backend.to_numpy(x), dtype=np.float64))
    rng = np.random.default_rng(seed)

    def run():
        with backend.fixed_rng(seed):
            return target.forward(x, labels) if is_loss else target.forward(x)

    out = run()
    upstream = float(rng.standard_normal()) if is_loss else backend.asarray(rng.standard_normal(out.shape))

    def objective():
        return float((run() * upstream).sum()) if not is_loss else float(run()) * upstream

    params = {} if is_loss else {name: p for name, p in target.params.items() if name not in target.frozen}
    analytic = _analytic_gradients(target, upstream, params, is_loss)
    if not is_loss:  # the contract's other half: grads replaced at each backward, not added to
        run()
        again = _analytic_gradients(target, upstream, params, is_loss)
        changed = [name for name in params if not np.array_equal(again[name], analytic[name])]
        if changed:
            raise ValueError(f"{target.describe()}.backward: a second backward with the same input and dout gave "
                             f"other grads[{changed[0]!r}]: it must replace the gradient (self.grads[key] = ...), "
                             "not add to the previous one (+=)")

    errors = {}
    for name, array in {"input": x, **params}.items():
        numeric = numerical_gradient(objective, array, eps)
        try:
            errors[name] = relative_error(analytic[name], numeric)
        except ValueError as e:
            raise ValueError(f"gradcheck of {getattr(target, 'describe', lambda: type(target).__name__)()}: "
                             f"the gradient of {name!r}: {e}") from None
    return GradcheckResult(target, errors, tol)


def _analytic_gradients(target, upstream, params, is_loss):
    """Host copies of ``backward(upstream)``'s input gradient and of the gradients of ``params``, checking
    that ``backward`` left ``upstream`` (its dout) as it was."""
    backend = target.backend
    before = None if is_loss else backend.to_numpy(upstream).copy()
    dx = target.backward(upstream)
    if before is not None and not np.array_equal(backend.to_numpy(upstream), before):
        raise ValueError(f"{target.describe()}.backward modified dout in place; it must leave it alone (a layer "
                         "below or a residual block's other branch still needs it): compute new arrays, "
                         "dout * mask rather than dout *= mask")
    return {"input": backend.to_numpy(dx), **{name: backend.to_numpy(target.grads[name]) for name in params}}


def numerical_gradient(f, array, eps):
    """d f / d array by central differences: ``(f(a + eps) - f(a - eps)) / (2 eps)`` entry by entry.

    ``f()`` takes no argument and returns a float that depends on ``array``,
    which is perturbed in place (and restored), so it must be contiguous.
    Returns a float64 NumPy array of ``array``'s shape.
    """
    if not array.flags.c_contiguous:
        raise ValueError(f"numerical_gradient: the array of shape {tuple(array.shape)} must be C-contiguous "
                         "(it is perturbed in place through a flat view)")
    flat = array.reshape(-1)  # a view, since the array is contiguous
    grad = np.zeros(flat.shape)
    for i in range(flat.size):
        original = float(flat[i])
        flat[i] = original + eps
        plus = f()
        flat[i] = original - eps
        minus = f()
        flat[i] = original
        grad[i] = (plus - minus) / (2 * eps)
    return grad.reshape(array.shape)


def relative_error(analytic, numeric):
    """``max|a - n| / max(max|a|, max|n|, 1)``, see :class:`GradcheckResult`."""
    analytic, numeric = np.asarray(analytic, dtype=np.float64), np.asarray(numeric, dtype=np.float64)
    if analytic.shape != numeric.shape:
        raise ValueError(f"gradient of shape {analytic.shape} where {numeric.shape} was expected")
    scale = max(np.abs(analytic).max(initial=0), np.abs(numeric).max(initial=0), 1.0)
    return float(np.abs(analytic - numeric).max(initial=0) / scale)
