"""What a real run adds around the training step, as small named pieces: early stopping, Ctrl-C, progress,
and the hooks through which other code (data-parallel training, say) joins the loop.

The anchors are Keras's ``fit`` and fastai's ``Learner``: the loop stays short because these live here.
"""
import contextlib
import signal
import threading

from tqdm.auto import tqdm

from .validate import integer, one_of


class Callback:
    """Hooks a :class:`~minicnn.train.Trainer` calls; each does nothing unless a subclass says otherwise.

    ``main_process``: False makes this process a helper that writes no files and prints nothing
    (every rank but 0 of a data-parallel run). :class:`minicnn.distributed.DataParallel` is the example
    that uses every hook.
    """

    main_process = True

    def fitting(self, trainer, train_loader):
        """A context manager around the whole of ``fit``."""
        return contextlib.nullcontext()

    def on_train_begin(self, trainer):
        """After a resume has loaded the checkpoint, before the first step."""

    def agree(self, *flags):
        """The loop's decisions (stop now, fetch the numbers now) as every process must take them: a tuple of bools."""
        return flags

    def reduce(self, *sums):
        """Sums over this process's examples, as sums over all of them (a tuple of floats)."""
        return sums

    def on_epoch_end(self, trainer):
        """After an epoch's last step, before validation and saving."""

    def on_interrupt(self, trainer):
        """A KeyboardInterrupt stopped the loop at once (a second Ctrl-C); raising here ends the run instead."""


class CallbackList:
    """Several callbacks as one: each hook called on each in turn (``agree`` and ``reduce`` chained)."""

    def __init__(self, callbacks=()):
        self.callbacks = list(callbacks)
        bad = [c for c in self.callbacks if not isinstance(c, Callback)]
        if bad:
            raise TypeError(f"Trainer: callbacks must be minicnn.callbacks.Callback objects, got a {type(bad[0]).__name__}")
        self.main_process = all(c.main_process for c in self.callbacks)

    @contextlib.contextmanager
    def fitting(self, trainer, train_loader):
        with contextlib.ExitStack() as stack:
            for c in self.callbacks:
                stack.enter_context(c.fitting(trainer, train_loader))
            yield

    def on_train_begin(self, trainer):
        for c in self.callbacks:
            c.on_train_begin(trainer)

    def agree(self, *flags):
        for c in self.callbacks:
            flags = c.agree(*flags)
        return flags

    def reduce(self, *sums):
        for c in self.callbacks:
            sums = c.reduce(*sums)
        return sums

    def on_epoch_end(self, trainer):
        for c in self.callbacks:
            c.on_epoch_end(trainer)

    def on_interrupt(self, trainer):
        for c in self.callbacks:
            c.on_interrupt(trainer)


class EarlyStopping:
    """Which epoch is the best so far, and whether ``patience`` validations have passed without a better one.

    ``monitor``: ``"val_loss"`` (lower is better) or ``"val_accuracy"``. ``patience`` None: never stop.
    """

    def __init__(self, monitor="val_loss", patience=None):
        self.monitor = one_of(monitor, "monitor", "Trainer", ("val_loss", "val_accuracy"))
        self.patience = None if patience is None else integer(patience, "patience (or None)", "Trainer")
        self.best = None  # the monitored value of the best epoch
        self.stale = 0    # validations since the last improvement

    def update(self, row, judged):
        """Record the epoch ``row`` (a history dict); ``judged``: it can be the best one (it was validated, or
        there is no validation). True when it is the best so far."""
        if not judged:
            return False
        value = row.get(self.monitor)
        improved = (value is None or self.best is None  # without validation, the latest model is the best we know
                    or (value < self.best if self.monitor == "val_loss" else value > self.best))
        self.stale = 0 if improved else self.stale + 1
        if improved:
            self.best = value
        return improved

    @property
    def stopped(self):
        return self.patience is not None and self.stale >= self.patience

    def message(self, val_every=1):
        return (f"early stopping: no better {self.monitor} in {self.patience} validation(s)"
                + (f" (every {val_every} epochs)" if val_every > 1 else ""))


class CtrlC:
    """The first Ctrl-C becomes a request (``requested``) that the loop honours after the current step; a second
    one stops at once (KeyboardInterrupt), though never in the middle of writing a file (see :meth:`saving`)."""

    def __init__(self, say=tqdm.write):
        self.say = say  # the notices: a helper process of a data-parallel run tells nothing
        self.requested = False
        self._saving = self._interrupt_after_saving = False

    @contextlib.contextmanager
    def handling(self):
        """Inside the block, Ctrl-C (SIGINT) is handled as the class says."""
        if threading.current_thread() is not threading.main_thread():
            yield  # signal handlers can only be set from the main thread: Ctrl-C stays a KeyboardInterrupt
            return
        previous = signal.signal(signal.SIGINT, self._pressed)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def _pressed(self, signum, frame):
        if self.requested and self._saving:
            self._interrupt_after_saving = True  # a file half-written would be lost: stop right after it
            self.say("Ctrl-C: stopping as soon as the file being written is complete")
            return
        if self.requested:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        self.requested = True
        self.say("Ctrl-C: finishing this step, then saving a checkpoint (press again to stop at once)")

    @contextlib.contextmanager
    def saving(self):
        """Inside the block, a second Ctrl-C waits until the files are written, then stops."""
        self._saving = True
        try:
            yield
        finally:
            self._saving = False
        if self._interrupt_after_saving:
            self._interrupt_after_saving = False
            raise KeyboardInterrupt


class Progress:
    """What a run shows: a live bar during each epoch (``bar``) and one line per epoch (``lines``)."""

    def __init__(self, bar=True, lines=True):
        self.show_bar, self.lines = bar, lines

    def bar(self, steps, done, epoch, epochs, refresh_seconds):
        """A tqdm bar over the ``steps`` of epoch ``epoch`` (0-based), ``done`` of them done already."""
        return tqdm(total=steps, initial=done, unit="batch", desc=f"epoch {epoch + 1}/{epochs}", disable=not self.show_bar,
                    leave=False, dynamic_ncols=True, mininterval=refresh_seconds)

    @staticmethod
    def interrupted(epoch, step, files, main_process):
        """The line that says where a stopped run saved its checkpoint (``files``: its RunFolder, or None)."""
        if main_process:
            where = f" to {files.file('checkpoint.npz')}; resume to continue" if files else ""
            done = f"in epoch {epoch + 1} after step {step}" if step else f"after epoch {epoch}"
            tqdm.write(f"interrupted {done}; checkpoint saved{where}")

    def epoch_line(self, row, epochs, best):
        """One line for the history ``row`` of an epoch, marked ``*`` when it is the best so far."""
        if not self.lines:
            return
        text = (f"epoch {row['epoch']}/{epochs}  lr {row['lr']:.2e}  loss {row['train_loss']:.4f}  "
                f"acc {row['train_accuracy']:.3f}")
        if "val_loss" in row:
            text += f"  val_loss {row['val_loss']:.4f}  val_acc {row['val_accuracy']:.3f}"
        tqdm.write(text + f"  ({row['seconds']:.1f}s)" + ("  *" if best else ""))
