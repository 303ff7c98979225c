"""Batch normalization for convolutional feature maps."""
from ..validate import NonFiniteError, integer, real
from .base import Layer


class BatchNorm2D(Layer):
    """Normalize each channel of (N, C, H, W) inputs over the batch and spatial axes.

    Training: ``y = gamma * (x - mean) / sqrt(var + eps) + beta`` with the
    batch's per-channel mean and (biased) variance, and running estimates
    updated as ``running = (1 - momentum) * running + momentum * batch``
    (unbiased variance, as in PyTorch). Evaluation uses the running
    estimates instead.

    Args: num_channels C (a positive int), momentum in [0, 1], eps > 0.

    Params: gamma (C,), beta (C,).  Buffers: running_mean (C,), running_var (C,).

    Backward (training), with M = N*H*W values per channel and
    ``xhat = (x - mean) / std``::

        dgamma = sum(dout * xhat)       dbeta = sum(dout)
        dx = gamma / std * (dout - mean(dout) - xhat * mean(dout * xhat))
    """

    def __init__(self, num_channels, momentum=0.1, eps=1e-5, backend=None):
        super().__init__(backend)
        name = type(self).__name__
        self.num_channels = integer(num_channels, "num_channels", name)
        self.momentum = real(momentum, "momentum", name, 0, 1)
        self.eps = real(eps, "eps", name, 0, low_open=True)
        xp, c = self.xp, self.num_channels
        self.params["gamma"] = xp.ones(c, dtype=xp.float32)
        self.params["beta"] = xp.zeros(c, dtype=xp.float32)
        self.buffers["running_mean"] = xp.zeros(c, dtype=xp.float32)
        self.buffers["running_var"] = xp.ones(c, dtype=xp.float32)

    def config(self):
        return dict(num_channels=self.num_channels, momentum=self.momentum, eps=self.eps)

    def forward(self, x):
        self.check_input(x, 4, channels=self.num_channels)
        n, c, h, w = x.shape
        if self.training:
            if n * h * w < 2:
                raise ValueError(f"{self!r}: training mode needs more than one value per channel, got shape {tuple(x.shape)}")
            mean, var = self.batch_statistics(x)
            self.update_running_statistics(mean, var * (n * h * w / (n * h * w - 1)))
        else:
            mean, var = self.buffers["running_mean"], self.buffers["running_var"]
        self.x, self.mean = x, mean[:, None, None]
        self.inv_std = (1 / self.xp.sqrt(var + self.eps))[:, None, None]
        # y = gamma * xhat + beta = x * scale + shift: one pass over x, nothing kept but x itself
        scale = self.params["gamma"][:, None, None] * self.inv_std
        shift = self.params["beta"][:, None, None] - self.mean * scale

        def affine(x, out):
            self.xp.multiply(x, scale, out=out)
            out += shift
        # batched: the same arithmetic on slices of the batch, in the cache and on several cores on the CPU
        return self.backend.batched(affine, x)

    def batch_statistics(self, x):
        """The per-channel mean and (biased) variance of x (N, C, H, W), each of shape (C,).

        Two passes: the mean, then the mean square around it (not ``E[x^2] - mean^2``,
        which loses every digit when the mean is large against the spread).
        """
        n, c, h, w = x.shape
        per_item = self.backend.batched(lambda x, out: x.sum(axis=(2, 3), out=out), x, shape=(n, c))
        mean = per_item.sum(axis=0) / (n * h * w)

        def squares_around_mean(x, out):
            squares = x - mean[:, None, None]
            squares *= squares
            squares.sum(axis=(2, 3), out=out)
        per_item = self.backend.batched(squares_around_mean, x, shape=(n, c))
        return mean, per_item.sum(axis=0) / (n * h * w)

    def update_running_statistics(self, mean, unbiased_var):
        """Blend the batch's statistics into the running ones, in the channels where they are finite.

        A batch holding NaN or infinity must not poison the statistics that
        evaluation will use: such channels keep their running values, and
        the batch is reported through :meth:`Backend.check` (at once, or at
        the training loop's next flush).
        """
        xp = self.xp
        finite = xp.isfinite(mean) & xp.isfinite(unbiased_var)
        for key, batch in (("running_mean", mean), ("running_var", unbiased_var)):
            running = self.buffers[key]
            blended = running * (1 - self.momentum) + self.momentum * batch
            self.buffers[key] = xp.where(finite, blended, running).astype(running.dtype, copy=False)
        self.backend.check(finite, lambda: (
            f"{self!r}: the batch's mean or variance is NaN or infinite in channel(s) "
            f"{self.backend.to_numpy(~finite).nonzero()[0].tolist()} (NaN or overflow in its input); "
            "the running statistics were left unchanged there"), NonFiniteError)

    def backward(self, dout):
        n, c, h, w = dout.shape
        mean, inv_std = self.mean, self.inv_std

        def sums(dout, x, out):  # per batch item, over (H, W): sum(dout * (x - mean)) and sum(dout)
            products = x - mean
            products *= dout
            products.sum(axis=(2, 3), out=out[:, 0])
            dout.sum(axis=(2, 3), out=out[:, 1])
        per_item = self.backend.batched(sums, dout, self.x, shape=(n, 2, c)).sum(axis=0)
        self.grads["gamma"] = per_item[0] * inv_std[:, 0, 0]  # sum(dout * xhat)
        self.grads["beta"] = per_item[1]
        if not self.needs_input_grad:
            return None
        scale = self.params["gamma"][:, None, None] * inv_std
        if not self.training:
            return self.backend.batched(lambda dout, out: self.xp.multiply(dout, scale, out=out), dout)
        # dx = scale * (dout - mean(dout) - xhat * mean(dout * xhat)) is, per channel, affine in dout and x:
        # dx = scale * dout + x_coef * x + const, three passes over a slice instead of six
        m = n * h * w
        x_coef = -scale * inv_std * (self.grads["gamma"] / m)[:, None, None]
        const = -scale * (self.grads["beta"] / m)[:, None, None] - x_coef * mean

        def input_gradient(dout, x, out):
            self.xp.multiply(x, x_coef, out=out)
            out += const
            out += dout * scale
        return self.backend.batched(input_gradient, dout, self.x)
