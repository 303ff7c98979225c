"""Data-parallel training on several processes with MPI: the same run as one process, only faster.

    mpiexec -n 4 minicnn train DATA_DIR --out RUN_DIR

Data parallelism is four steps (the recipe of ChainerMN and Horovod), each a wrapper around the plain loop:

1. every process (rank) starts from rank 0's weights (:class:`DataParallel`, a Trainer callback);
2. each global batch is split across the ranks, each taking its rows
   (``DataLoader(..., shard=(rank, size))``); each rank backpropagates its share
   ``n_rank / n`` of the global batch's mean loss (the loader's ``rows`` tell the Trainer);
3. before each update, one allreduce sums the gradients of all layers, sent as one
   flat buffer (:class:`DistributedOptimizer`), so every rank takes the same step;
4. only rank 0 writes files and shows progress; the loss and accuracy sums are
   reduced over the ranks (:class:`DataParallel`).

With the random numbers of augmentation and dropout drawn for the whole global
batch (each rank using its rows), P processes give the model one process would,
up to the order of floating-point sums. mpi4py is imported only under
``mpiexec``: a plain run does not need it.
"""
import array
import contextlib
import io
import os
import stat
import sys
import time
import traceback

import numpy as np

from .backend import backend_of
from .callbacks import Callback
from .checkpoint import optimizer_name

INSTALL = 'pip install ".[mpi]" in the minicnn checkout (the PyPI package named minicnn is another project)'
_LAUNCHER_VARIABLES = ("PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS")
_RANK_VARIABLES = ("PMI_RANK", "PMIX_RANK", "OMPI_COMM_WORLD_RANK")


def launched_by_mpi():
    """True when this process was started by ``mpiexec`` / ``mpirun`` (MPICH's and Open MPI's variables say so)."""
    return any(name in os.environ for name in _LAUNCHER_VARIABLES)


@contextlib.contextmanager
def only_rank_0_prints():
    """Inside the block, ranks other than 0 write nothing to ``sys.stdout`` and ``sys.stderr``: for what every
    rank does alike before MPI starts (reading the command line: its help, its refusals), told once.
    The rank is the launcher's variable; without one, this process prints."""
    rank = next((os.environ[name] for name in _RANK_VARIABLES if name in os.environ), "0")
    if rank.strip() == "0":
        yield
        return
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


_world = None


def world():
    """The :class:`Communicator` of all processes of this run, or None for a run of one process.

    Outside ``mpiexec`` this is None without importing mpi4py. Under ``mpiexec``
    without mpi4py it raises ImportError naming the install command.
    """
    global _world
    if _world is None and launched_by_mpi():
        try:
            from mpi4py import MPI
        except ImportError as e:
            raise ImportError(f"this process was started by mpiexec, but mpi4py is not installed ({e}); "
                              f"install it with: {INSTALL}") from None
        _world = Communicator(MPI.COMM_WORLD)
    return _world if _world is not None and _world.size > 1 else None


class Communicator:
    """The ranks of one run and the few collective operations data-parallel training needs.

    Args:
        comm: an ``mpi4py.MPI.Comm`` (e.g. ``MPI.COMM_WORLD``).

    Attributes: ``rank`` (this process, 0..size-1), ``size`` (processes),
    ``local_rank`` (its place among the processes of its machine: the GPU it uses,
    see :meth:`Backend.use_device`), ``seconds`` (time spent in :meth:`sum_gradients`,
    for measurements).

    Arrays may live on any backend: device arrays travel through host memory.
    """

    def __init__(self, comm):
        from mpi4py import MPI
        self.comm, self._MPI = comm, MPI
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self._local = comm.Split_type(MPI.COMM_TYPE_SHARED)  # the processes that share this machine's memory
        self.local_rank = self._local.Get_rank()
        self.seconds = 0.0
        self._failing_together = False
        self._errors = comm.Dup()  # for agreeing on an error whatever collective operation the others are in

    def __repr__(self):
        return f"Communicator(rank {self.rank} of {self.size})"

    def __deepcopy__(self, memo):
        return self  # a copied layer (SyncBatchNorm2D) talks to the same processes

    def sum(self, array):
        """Sum ``array`` over the ranks, in place (every rank gets the total); returns it."""
        backend = backend_of(array)
        host = backend.to_numpy(array)
        host = host if host.flags.c_contiguous and host.flags.writeable else np.ascontiguousarray(host)
        self.comm.Allreduce(self._MPI.IN_PLACE, host, op=self._MPI.SUM)
        if host is not array:
            array[...] = backend.asarray(host)
        return array

    def gather(self, array):
        """The ``array`` (any shape) of every rank, stacked in rank order: (size, *shape), on ``array``'s backend."""
        backend = backend_of(array)
        host = np.ascontiguousarray(backend.to_numpy(array))
        stacked = np.empty((self.size, *host.shape), dtype=host.dtype)
        self.comm.Allgather(host, stacked)
        return backend.asarray(stacked)

    def sum_numbers(self, *values):
        """The sums over the ranks of a few numbers (float64), as a tuple of floats."""
        return tuple(float(v) for v in self.sum(np.array(values, dtype=np.float64)))

    def abort(self, status):
        """End every rank now with exit status ``status`` (after this rank reported why).

        What this rank wrote is flushed and left to be read by mpiexec first (an abort tears down
        the forwarding of output: a flushed message was lost about one run in fifteen), and
        MPICH's own notice of the abort is silenced: this rank's message says why.
        """
        for stream, fd in ((sys.stdout, 1), (sys.stderr, 2)):
            with contextlib.suppress(Exception):  # closed, or replaced by an object without flush
                stream.flush()
            _wait_until_read(fd)
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
        self.comm.Abort(status)

    def fail(self, text, status, wait=5.0):
        """Report the error that ended this rank's run once, and end the run on every rank: returns ``status``.

        An error that every rank meets within ``wait`` seconds of this one (a
        missing data folder) is reported by rank 0 alone (with any different
        text of another rank after it), and every rank returns ``status`` to end
        normally: nothing is lost, as an abort may lose what was written just
        before it. An error on some ranks only is reported by each of them,
        then :meth:`abort` ends the others, which may be waiting for this one
        in a collective operation; then this call does not return.
        """
        everyone = self._errors.Ibarrier()  # completes once every rank is here
        if self.rank == 0:
            _say(text)  # at once: rank 0's message is the one shown in either case
        deadline = time.monotonic() + wait
        try:
            while not everyone.Test():
                if time.monotonic() > deadline:
                    if self.rank != 0:
                        _say(text)
                    self.abort(status)
                time.sleep(0.01)
        except KeyboardInterrupt:  # Ctrl-C while waiting: end them all now
            self.abort(status)
        texts = self._errors.gather(text, root=0)
        for other in dict.fromkeys(texts or ()):
            if other != text:
                _say(other)
        return status

    def barrier(self):
        """Wait until every rank is here."""
        self.comm.Barrier()

    def any(self, *flags):
        """For each of ``flags``, True on every rank when it is true on any (a tuple of bools)."""
        return tuple(total > 0 for total in self.sum_numbers(*(bool(f) for f in flags)))

    def broadcast(self, model):
        """Give every rank rank 0's parameters and buffers (in place: optimizers keep seeing the same arrays)."""
        arrays = [a for store in (model.params, model.buffers) for _, a in sorted(store.items())]
        for group in _by_dtype(arrays):  # one message per dtype (float32 weights, int buffers)
            flat = _flatten(group)
            host = np.ascontiguousarray(backend_of(flat).to_numpy(flat))
            self.comm.Bcast(host, root=0)
            _unflatten(backend_of(flat).asarray(host), group)

    def average_buffers(self, model):
        """Give every rank the mean over the ranks of ``model``'s floating-point buffers, in place.

        Batch norm with each process's own statistics leaves each rank running
        estimates of its own rows only; averaged (as DDP recipes do before
        evaluating), every rank validates the model that rank 0 then saves.
        Buffers that already agree (SyncBatchNorm2D's) keep their values, up to rounding.
        """
        for group in _by_dtype([a for _, a in sorted(model.buffers.items()) if a.dtype.kind == "f"]):
            flat = self.sum(_flatten(group))
            _unflatten(flat / flat.dtype.type(self.size), group)

    def sum_gradients(self, model):
        """Sum every gradient of ``model`` over the ranks, in place: one allreduce of one flat buffer (per dtype)."""
        start = time.perf_counter()
        grads = [g for _, g in sorted(model.grads.items())]
        for group in _by_dtype(grads):
            flat = self.sum(_flatten(group))
            _unflatten(flat, group)
        self.seconds += time.perf_counter() - start

    @contextlib.contextmanager
    def machine_by_machine(self):
        """Inside the block, the first rank of each machine goes first, the others after it:
        e.g. one rank per machine decodes the images and fills the cache that the others then read."""
        if self.local_rank != 0:
            self._local.Barrier()
        try:
            yield
        finally:  # on an error too: the others then meet it themselves, and all report it together (see fail)
            if self.local_rank == 0:
                self._local.Barrier()

    @contextlib.contextmanager
    def failing_together(self, describe=None):
        """An exception inside the block ends every rank, never leaving the others waiting forever.

        The error is reported and the ranks ended by :meth:`fail`
        (``describe(e) -> (text, exit status)``, by default the traceback and
        status 1): an error on every rank raises ``SystemExit(status)`` on each,
        one on some ranks only ends all with ``MPI.Abort``. Nested blocks leave
        the error to the outermost.
        """
        if self._failing_together:
            yield
            return
        self._failing_together = True
        try:
            yield
        except BaseException as e:  # noqa: B902 (a Ctrl-C on one rank, too, must end all of them)
            text, status = describe(e) if describe else (f"rank {self.rank}: {traceback.format_exc()}", 1)
            raise SystemExit(self.fail(text, status)) from None
        finally:
            self._failing_together = False


class DistributedOptimizer:
    """``optimizer`` on one rank of a data-parallel run: :meth:`step` first sums the gradients of all ranks.

    Each rank backpropagated its share of the global batch's mean loss, so the sum is the whole batch's
    gradient and every rank takes the same step. Everything else (``lr``, the state, the hyperparameters)
    is the wrapped optimizer's.
    """

    def __init__(self, optimizer, comm):
        object.__setattr__(self, "optimizer", optimizer)
        object.__setattr__(self, "comm", comm)

    def __repr__(self):
        return f"DistributedOptimizer({self.optimizer!r}, {self.comm!r})"

    @property
    def name(self):
        return optimizer_name(self.optimizer)

    def step(self):
        self.comm.sum_gradients(self.optimizer.model)
        self.optimizer.step()

    def __getattr__(self, name):  # only reached for what the wrapper lacks
        return getattr(self.optimizer, name)

    def __setattr__(self, name, value):  # lr, set by the learning-rate schedule
        setattr(self.optimizer, name, value)


class DataParallel(Callback):
    """The Trainer's side of data-parallel training, with a :class:`DistributedOptimizer`.

    Every rank starts from rank 0's weights; the ranks agree on when to stop and when to fetch numbers;
    loss and accuracy sums are reduced over the ranks; batch norm statistics are averaged after each epoch
    (they differ where each process normalizes its own rows), so the model validated is the model saved;
    only rank 0 writes the run folder and prints. An exception on one rank ends all of them (MPI Abort).
    """

    def __init__(self, comm):
        self.comm = comm
        self.main_process = comm.rank == 0

    @contextlib.contextmanager
    def fitting(self, trainer, train_loader):
        rank, size = self.comm.rank, self.comm.size
        if getattr(train_loader, "shard", None) != (rank, size):
            raise ValueError(f"Trainer.fit: with a communicator of {size} processes, train_loader must give "
                             f"this rank's part of each batch: DataLoader(..., shard=({rank}, {size}))")
        if not isinstance(trainer.optimizer, DistributedOptimizer):
            raise ValueError("Trainer: data-parallel training needs the optimizer wrapped, so that the ranks sum "
                             "their gradients: DistributedOptimizer(optimizer, comm)")
        with self.comm.failing_together():
            yield
            self.comm.barrier()  # no rank goes on (to a resume, say) before rank 0's files are written

    def on_train_begin(self, trainer):
        self.comm.broadcast(trainer.model)

    def agree(self, *flags):
        return self.comm.any(*flags)

    def reduce(self, *sums):
        return self.comm.sum_numbers(*sums)

    def on_epoch_end(self, trainer):
        self.comm.average_buffers(trainer.model)

    def on_interrupt(self, trainer):
        raise KeyboardInterrupt  # a rank that stops alone would leave the others waiting: end them all


def data_parallel(optimizer, comm):
    """``(optimizer, callbacks)`` for a Trainer on one rank of ``comm``: ``optimizer`` wrapped in a
    :class:`DistributedOptimizer`, and ``[DataParallel(comm)]``; with ``comm`` None (one process),
    ``optimizer`` itself and no callbacks::

        optimizer, callbacks = data_parallel(SGD(model, lr=0.1), comm)
        Trainer(model, loss_fn, optimizer, callbacks=callbacks).fit(DataLoader(..., shard=(comm.rank, comm.size)))
    """
    return (optimizer, []) if comm is None else (DistributedOptimizer(optimizer, comm), [DataParallel(comm)])


def _say(text):
    """Write ``text`` and a newline to stderr in one piece, now."""
    sys.stderr.write(text.rstrip("\n") + "\n")
    sys.stderr.flush()


def _wait_until_read(fd, seconds=1.0):
    """Wait, ``seconds`` at most, until the reader of ``fd`` (mpiexec, at the other end of a pipe or socket)
    has taken everything written to it; at once for a file, a terminal, or where the system cannot tell."""
    try:
        import fcntl
        import termios
        mode = os.fstat(fd).st_mode
    except (ImportError, OSError):
        return
    # the bytes still in the pipe / not yet taken from the socket
    request = termios.FIONREAD if stat.S_ISFIFO(mode) else termios.TIOCOUTQ if stat.S_ISSOCK(mode) else None
    unread = array.array("i", [0])
    deadline = time.monotonic() + seconds
    while request is not None and time.monotonic() < deadline:
        try:
            fcntl.ioctl(fd, request, unread)
        except OSError:
            return
        if unread[0] == 0:
            return
        time.sleep(0.005)


def _by_dtype(arrays):
    """``arrays`` in groups of one dtype each (in a fixed order of dtypes, the same on every rank)."""
    return [[a for a in arrays if a.dtype.str == dtype] for dtype in sorted({a.dtype.str for a in arrays})]


def _flatten(arrays, extra=0):
    """One new 1-D array holding ``arrays`` one after another (then ``extra`` free slots), in their common dtype."""
    xp = backend_of(arrays[0]).xp
    dtype = np.result_type(*(a.dtype for a in arrays))
    flat = xp.empty(sum(a.size for a in arrays) + extra, dtype=dtype)
    offset = 0
    for a in arrays:
        flat[offset:offset + a.size] = a.ravel()
        offset += a.size
    return flat


def _unflatten(flat, arrays):
    """Copy the pieces of ``flat`` back into ``arrays``, in place."""
    offset = 0
    for a in arrays:
        a[...] = flat[offset:offset + a.size].reshape(a.shape)
        offset += a.size
