"""Value checks deferred to the next host transfer.

A check of device values (no NaN in a loss, labels within range) must read
them on the host, and reading waits for the device. :meth:`Checks.check`
does that at once; inside :meth:`Checks.deferred` the checks are queued
instead and judged together at the next :meth:`PendingChecks.flush`, in the
one transfer that fetches whatever else the caller needs then (a training
step's loss, say). Each backend holds one :class:`Checks`; layers and the
loop reach it as ``backend.check`` and ``backend.deferred_checks()``.
"""
import contextlib


class Checks:
    """The value checks of one backend: judged now, or queued inside :meth:`deferred`."""

    def __init__(self, backend):
        self.backend = backend
        self.pending = None

    def check(self, ok, message, error=ValueError):
        """Raise ``error(message())`` unless every entry of the boolean array ``ok`` is true."""
        if self.pending is not None:
            self.pending.add(ok, message, error)
        elif not bool(self.backend.to_numpy(ok.all())):
            raise error(message())

    @contextlib.contextmanager
    def deferred(self):
        """Queue the checks made inside the block; yields the :class:`PendingChecks`, flushed when the block ends."""
        if self.pending is not None:  # nested: the outer block judges
            yield self.pending
            return
        pending = self.pending = PendingChecks(self.backend)
        try:
            yield pending
            pending.flush()
        finally:
            self.pending = None


class PendingChecks:
    """The checks queued by :meth:`Checks.deferred`, judged together at each flush."""

    def __init__(self, backend):
        self.backend = backend
        self.checks = []

    def add(self, ok, message, error):
        self.checks.append((ok.all(), message, error))

    def flush(self, *values):
        """Fetch the queued checks and ``values`` (device arrays) in one transfer; raise for the
        first failed check; return the values on the host: a Python float for each scalar, a NumPy
        array of its dtype and shape for any other (integers exact up to 2^53, as float64 carries them)."""
        if not self.checks and not values:
            return []
        xp = self.backend.xp
        parts = [xp.asarray(v, dtype=xp.float64).reshape(-1) for v in values]
        parts += [ok.astype(xp.float64).reshape(1) for ok, _, _ in self.checks]
        fetched = self.backend.to_numpy(xp.concatenate(parts))
        results, offset = [], 0
        for value, part in zip(values, parts):
            host = fetched[offset:offset + part.size]
            offset += part.size
            results.append(float(host[0]) if value.ndim == 0 else host.reshape(value.shape).astype(value.dtype.name))
        checks, self.checks = self.checks, []
        for passed, (_, message, error) in zip(fetched[offset:], checks):  # the checks follow the values
            if not passed:
                raise error(message())
        return results
