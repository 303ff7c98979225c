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
        m = x.size // self.num_channels
        if self.training:
            if m < 2:
                raise ValueError(f"{self!r}: training mode needs more than one value per channel, got shape {tuple(x.shape)}")
            mean = x.mean(axis=(0, 2, 3))
            centred = x - mean[:, None, None]
            var = self.xp.einsum("nchw,nchw->c", centred, centred) / m  # sum of squares without a temporary
            self.update_running_statistics(mean, var * (m / (m - 1)))
        else:
            mean, var = self.buffers["running_mean"], self.buffers["running_var"]
            centred = x - mean[:, None, None]
        self.inv_std = 1 / self.xp.sqrt(var + self.eps)
        centred *= self.inv_std[:, None, None]
        self.xhat = centred
        y = self.xhat * self.params["gamma"][:, None, None]
        y += self.params["beta"][:, None, None]
        return y

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
        self.grads["gamma"] = self.xp.einsum("nchw,nchw->c", dout, self.xhat)
        self.grads["beta"] = dout.sum(axis=(0, 2, 3))
        if not self.needs_input_grad:
            return None
        scale = (self.params["gamma"] * self.inv_std)[:, None, None]
        if not self.training:
            return dout * scale
        m = dout.size // self.num_channels
        dx = self.xhat * (self.grads["gamma"] / m)[:, None, None]
        dx += (self.grads["beta"] / m)[:, None, None]
        self.xp.subtract(dout, dx, out=dx)
        dx *= scale
        return dx
