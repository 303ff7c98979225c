"""Batch normalization for convolutional feature maps."""
from ..validate import NonFiniteError, integer, real
from .base import Layer, build_layer, layer_spec
from .container import Container


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
        if self.training:
            mean, var, m = self.batch_statistics(x)
            if m < 2:
                raise ValueError(f"{self!r}: training mode needs more than one value per channel, got shape {tuple(x.shape)}")
            self.update_running_statistics(mean, var * (m / (m - 1)))
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
        """The per-channel mean and (biased) variance of x (N, C, H, W), each of shape (C,), and the
        number M = N*H*W of values per channel they are over.

        Two passes: the mean, then the mean square around it (not ``E[x^2] - mean^2``,
        which loses every digit when the mean is large against the spread).
        """
        m = x.size // self.num_channels
        stats = self.xp.empty((2, self.num_channels), dtype=x.dtype)

        def moments(c):  # both passes over a slice of the channels while it is in the cache
            values = x[:, c]
            mean = _sum_per_channel(values) / m
            stats[0, c] = mean
            squares = values - mean[:, None, None]
            squares *= squares
            stats[1, c] = _sum_per_channel(squares) / m
        self.in_channel_slices(moments, x)
        return stats[0], stats[1], m

    def in_channel_slices(self, work, x):
        """Call ``work(c)`` for slices ``c`` of the channels of ``x`` (N, C, H, W) that together cover them once,
        several at a time on the CPU (``Backend.parallel``)."""
        self.backend.parallel(work, self.num_channels, item_bytes=3 * x[:, :1].nbytes)

    def gradient_sums(self, sum_dout_xhat, sum_dout):
        """The sums over the batch that ``dx`` needs, and the values per channel M they are over."""
        return sum_dout_xhat, sum_dout, self.x.size // self.num_channels

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
        mean, inv_std = self.mean, self.inv_std
        sums = self.xp.empty((2, self.num_channels), dtype=dout.dtype)

        def gradient_sums(c):
            products = self.x[:, c] - mean[c]
            products *= dout[:, c]
            sums[0, c] = _sum_per_channel(products)
            sums[1, c] = _sum_per_channel(dout[:, c])
        self.in_channel_slices(gradient_sums, dout)
        self.grads["gamma"] = sums[0] * inv_std[:, 0, 0]  # sum(dout * xhat)
        self.grads["beta"] = sums[1]
        if not self.needs_input_grad:
            return None
        scale = self.params["gamma"][:, None, None] * inv_std
        if not self.training:
            return self.backend.batched(lambda dout, out: self.xp.multiply(dout, scale, out=out), dout)
        # dx = scale * (dout - mean(dout) - xhat * mean(dout * xhat)) is, per channel, affine in dout and x:
        # dx = scale * dout + x_coef * x + const, three passes over a slice instead of six
        sum_dout_xhat, sum_dout, m = self.gradient_sums(self.grads["gamma"], self.grads["beta"])  # all ranks' under MPI
        x_coef = -scale * inv_std * (sum_dout_xhat / m)[:, None, None]
        const = -scale * (sum_dout / m)[:, None, None] - x_coef * mean

        def input_gradient(dout, x, out):
            self.xp.multiply(x, x_coef, out=out)
            out += const
            out += dout * scale
        return self.backend.batched(input_gradient, dout, self.x)


def _sum_per_channel(a):
    """(N, C, H, W) -> (C,): the batch axis first, which adds long runs of memory even on a 2x2 map."""
    return a.sum(axis=0).sum(axis=(1, 2))


class SyncBatchNorm2D(BatchNorm2D):
    """:class:`BatchNorm2D` whose statistics are those of the global batch of a data-parallel run.

    Each process holds some rows of the batch. Forward gathers every rank's
    (count, mean, sum of squared deviations) per channel and combines them
    exactly (Chan's formula, no cancellation as with sum(x^2)); backward sums
    ``sum(dout)`` and ``sum(dout * xhat)`` over the ranks, the two sums ``dx``
    needs (see docs/backprop.md). The parameter gradients stay this rank's
    sums: the gradient allreduce of the training loop adds them up. So the
    ranks together compute exactly what BatchNorm2D computes on the whole batch,
    and with one process (``comm`` None) it *is* BatchNorm2D.

    Args: as BatchNorm2D, and ``comm``: a :class:`~minicnn.distributed.Communicator`
    (:func:`minicnn.distributed.world` under ``mpiexec``), or None.
    Evaluation mode uses the running statistics and communicates nothing.
    """

    def __init__(self, num_channels, momentum=0.1, eps=1e-5, comm=None, backend=None):
        super().__init__(num_channels, momentum, eps, backend)
        self.comm = comm

    @classmethod
    def convert(cls, model, comm):
        """``model`` rebuilt with every BatchNorm2D, at any depth (inside Residual blocks too), a
        SyncBatchNorm2D talking to ``comm``; it shares ``model``'s weight and statistics arrays, so use one or the other."""
        def synchronized(spec):
            if isinstance(spec, dict):
                return {key: cls.__name__ if key == "type" and value == BatchNorm2D.__name__ else synchronized(value)
                        for key, value in spec.items()}
            return [synchronized(item) for item in spec] if isinstance(spec, list) else spec
        copy = build_layer(synchronized(layer_spec(model)), backend=model.backend)
        for (_, old), (_, new) in zip([("", model), *model.named_layers()], [("", copy), *copy.named_layers()]):
            if isinstance(new, cls):
                new.comm = comm
            if not isinstance(new, Container):
                new.params, new.buffers = dict(old.params), dict(old.buffers)
        if hasattr(model, "metadata"):
            copy.metadata = dict(model.metadata)
        return copy

    def batch_statistics(self, x):
        if self.comm is None:
            return super().batch_statistics(x)
        mean, var, m = super().batch_statistics(x)
        xp = self.xp
        count = xp.full(mean.shape, m, dtype=mean.dtype)
        ranks = self.comm.gather(xp.stack([count, mean, var * m]))  # (P, 3, C): count, mean, squared deviations
        counts, means, squares = ranks[:, 0], ranks[:, 1], ranks[:, 2]
        total = int(self.backend.to_numpy(counts[:, 0]).sum())
        mean = (counts * means).sum(axis=0) / total
        var = (squares + counts * (means - mean) ** 2).sum(axis=0) / total
        self.count = total  # what backward's sums are over
        return mean, var, total

    def gradient_sums(self, sum_dout_xhat, sum_dout):
        if self.comm is None:
            return super().gradient_sums(sum_dout_xhat, sum_dout)
        both = self.comm.sum(self.xp.stack([sum_dout_xhat, sum_dout]))  # a new array: self.grads stay ours
        return both[0], both[1], self.count
