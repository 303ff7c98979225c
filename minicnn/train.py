"""The training loop: a step (forward, loss, backward, update) and the epochs around it.

What a real run adds around the step lives in small pieces: :mod:`minicnn.callbacks` (early stopping,
Ctrl-C, progress, hooks), :mod:`minicnn.runfolder` (the run's files), :mod:`minicnn.checkpoint` (resuming).
"""
import contextlib
import json
import math
import sys
import time

from tqdm.auto import tqdm

from .callbacks import CallbackList, CtrlC, EarlyStopping, Progress
from .checkpoint import load_checkpoint, run_settings
from .functional import predicted_classes, probabilities
from .layers.base import Layer
from .losses import NonFiniteError
from .runfolder import RunFolder, check_run_folder, refuse_differences
from .schedules import cosine_schedule, step_schedule  # noqa: F401  (the schedules are part of this module's API)
from .validate import flag, integer


class TrainingDiverged(RuntimeError):
    """The loss, the logits or the weights became NaN or infinite; the message names the epoch and steps.

    The model in memory then holds the diverged weights (the check runs when
    the loop fetches its numbers, not after every step), but nothing of them
    reaches the run folder: its files are those of the last sound epoch.
    """


class Trainer:
    """Fits a model with a loss and an optimizer, epoch by epoch.

    Args:
        model: a :class:`~minicnn.Sequential`.
        loss_fn: e.g. :class:`~minicnn.SoftmaxCrossEntropy`.
        optimizer: e.g. :class:`~minicnn.Adam` over the model.
        schedule: optional ``epoch -> learning rate`` (fractional epochs), see
            :mod:`minicnn.schedules`.
        out_dir: the run folder (:class:`~minicnn.runfolder.RunFolder`: ``model.npz``, ``best.npz``,
            ``checkpoint.npz``, history), written after every epoch; None writes nothing.
        monitor: ``"val_loss"`` (lower is better) or ``"val_accuracy"``: what
            "best" and early stopping look at.
        patience: stop after this many validations without improvement (None: never).
        val_every: validate after every ``val_every``-th epoch and after the last one.
        progress: show a live progress bar during each epoch.
        verbose: print one summary line per epoch.
        seed: an int >= 0; step ``s`` of epoch ``e`` draws its dropout masks from a generator
            seeded ``(seed, e, s)``, so a resumed run draws what an uninterrupted one would have.
        settings: JSON-friendly description of the run (the command line's flags, say), saved in
            checkpoints; a resume with other settings (or optimizer, seed, batches) is refused.
        deployed: ``model -> network``: what ``model.npz`` and ``best.npz`` hold (default: the model
            itself); e.g. a frozen backbone and the trained head as one network, where the loop trains
            the head on the backbone's cached features (the checkpoint holds the model, for resuming).
        callbacks: :class:`~minicnn.callbacks.Callback` objects joining the loop, e.g.
            :class:`minicnn.distributed.DataParallel` (with a
            :class:`~minicnn.distributed.DistributedOptimizer`) for data-parallel training.

    While ``fit`` runs, the run folder is locked; a new run is refused where another run's files are,
    a resume where there is no checkpoint. The training loader follows the protocol of
    :mod:`minicnn.data.loader`. The loop fetches numbers from the device only when it shows them
    (``refresh_seconds``, and at the end of each epoch): the loss, the correct-prediction count and
    every queued value check travel together.
    """

    def __init__(self, model, loss_fn, optimizer, schedule=None, out_dir=None, monitor="val_loss",
                 patience=None, progress=True, verbose=True, seed=0, settings=None, val_every=1, callbacks=(),
                 deployed=None):
        _check_parts(model, loss_fn, optimizer, schedule)
        self.model, self.loss_fn, self.optimizer, self.schedule = model, loss_fn, optimizer, schedule
        self.deployed = deployed if deployed is not None else (lambda model: model)
        self.stopping = EarlyStopping(monitor, patience)
        self.val_every = integer(val_every, "val_every", "Trainer")
        self.seed = integer(seed, "seed", "Trainer", minimum=0)
        self.settings = _json_friendly(settings)
        self.callbacks = CallbackList(callbacks)
        self.main_process = self.callbacks.main_process
        self.files = None if out_dir is None else RunFolder(out_dir)
        self.progress = Progress(bar=progress and self.main_process, lines=verbose and self.main_process)
        self.ctrl_c = CtrlC(say=tqdm.write if self.main_process else lambda text: None)
        self.refresh_seconds = 0.5 if sys.stderr.isatty() else 10.0  # a log file gets a line every 10 s
        self.history = []
        self.epoch = 0      # epochs completed
        self.partial = _fresh_epoch()  # the current epoch's progress, saved by a mid-epoch checkpoint
        self.interrupted = False
        self._started = False  # the files in the run folder are this Trainer's own

    @property
    def out_dir(self):
        return None if self.files is None else self.files.path

    @property
    def best(self):
        """The monitored value of the best epoch so far."""
        return self.stopping.best

    def train_step(self, x, y, rows=None):
        """One step of gradient descent on the batch ``x`` (N, ...) with labels ``y`` (N,).

        ``rows``: the loader's ``(start, stop, total)`` when ``x`` is rows ``start:stop`` of a batch
        of ``total`` (one process's part in data-parallel training): dropout then draws for the whole
        batch, and the gradient is this part's share of the whole batch's mean loss. Returns the mean
        loss of ``x`` (a device scalar) and the logits (N, K).
        """
        with self.model.backend.fixed_rng((self.seed, self.epoch, self.partial["step"]), rows=rows):  # dropout masks
            logits = self.model.forward(x)
        loss = self.loss_fn.forward(logits, y)
        dlogits = self.loss_fn.backward()
        if rows is not None:  # backpropagate this part's share of the whole batch's mean loss
            dlogits = dlogits * (len(y) / rows[2])
        self.model.backward(dlogits, input_grad=False)
        self.optimizer.step()
        return loss, logits

    # --- the epochs around it --------------------------------------------------
    def fit(self, train_loader, val_loader=None, epochs=10, resume=False):
        """Train for ``epochs`` epochs in all (counting those before a resume) and return the history.

        The history is a list with one dict per epoch: epoch, lr, train_loss,
        train_accuracy, val_loss, val_accuracy, seconds. Ctrl-C finishes the
        current step, saves a checkpoint and returns with ``self.interrupted``
        set (a second Ctrl-C stops at once, though never in the middle of
        writing a file); with ``resume=True`` a later call continues from
        ``out_dir/checkpoint.npz`` exactly as if it had not stopped.
        """
        epochs = integer(epochs, "epochs", "Trainer.fit")
        resume = flag(resume, "resume", "Trainer.fit")
        _check_loader(train_loader, "train_loader", training=True)
        if val_loader is not None:
            _check_loader(val_loader, "val_loader", training=False)
        if resume and self.files is None:
            raise ValueError("Trainer.fit: resume=True needs the out_dir that holds the checkpoint")
        with contextlib.ExitStack() as stack:
            stack.enter_context(self.callbacks.fitting(self, train_loader))
            if self._writes_files:
                stack.enter_context(self.files.lock())
                if not self._started:
                    check_run_folder(self.out_dir, resume, self.settings)
            if resume:
                self.load_checkpoint(train_loader)
            elif not self._started:
                with self.ctrl_c.saving():
                    self._save_checkpoint(train_loader)  # from the start: a run killed at any moment can be resumed
            self._started = True
            self.callbacks.on_train_begin(self)
            return self._fit(train_loader, val_loader, epochs)

    @property
    def _writes_files(self):
        return self.files is not None and self.main_process

    def _fit(self, train_loader, val_loader, epochs):
        self.interrupted = self.ctrl_c.requested = False
        with self.ctrl_c.handling():
            try:
                while self.epoch < epochs and not self.stopping.stopped:
                    self.ctrl_c.requested = self.callbacks.agree(self.ctrl_c.requested)[0]  # any rank's Ctrl-C: all stop
                    if self.ctrl_c.requested or (self.train_epoch(train_loader, epochs)
                                                 and self.end_epoch(train_loader, val_loader, epochs)):
                        break
            except KeyboardInterrupt:
                self.callbacks.on_interrupt(self)
                self.ctrl_c.requested = self.interrupted = True
                if self.partial["torn"]:  # stopped inside a step: the arrays may be half-updated
                    tqdm.write("stopped in the middle of a step; no checkpoint written, the last one stays")
                    return self.history
            if self.ctrl_c.requested:
                self.interrupted = True
                with self.ctrl_c.saving():
                    self._save_checkpoint(train_loader)
                self.progress.interrupted(self.epoch, self.partial["step"], self.files, self.main_process)
        return self.history

    def train_epoch(self, loader, epochs):
        """Run the rest of the current epoch's steps; True when the epoch's training is complete."""
        p, steps = self.partial, len(loader)
        loader.load_state_dict({**loader.state_dict(), "epoch": self.epoch, "batch": p["step"]})
        self.model.train()
        start = time.perf_counter()
        bar = self.progress.bar(steps, p["step"], self.epoch, epochs, self.refresh_seconds)
        with bar, self.model.backend.deferred_checks() as pending:
            sums = _RunningSums(self, pending, bar)
            try:
                for x, y in loader:
                    if self.schedule is not None:
                        self.optimizer.lr = self.schedule(self.epoch + p["step"] / steps)
                    p["torn"] = True  # until the step's counters are updated too
                    loss, logits = self.train_step(x, y, getattr(loader, "rows", None))
                    sums.add(loss, logits, y)
                    p["step"] += 1
                    p["torn"] = False
                    bar.update(1)
                    stop, due = self.callbacks.agree(self.ctrl_c.requested, sums.due())
                    self.ctrl_c.requested = stop
                    if stop or p["step"] == steps:  # files may be written next
                        sums.fetch(check_weights=True)
                        if stop:
                            break
                    elif due:
                        sums.fetch()
            except KeyboardInterrupt:
                self.callbacks.on_interrupt(self)
                if not p["torn"]:  # between steps: the sums so far belong to the checkpoint
                    sums.fetch(check_weights=True)
                raise
            finally:
                p["seconds"] += time.perf_counter() - start
        return p["step"] == steps

    def end_epoch(self, train_loader, val_loader, epochs):
        """Validate, record the epoch, save files; True when early stopping ends the run."""
        p = self.partial
        row = dict(epoch=self.epoch + 1, lr=self.optimizer.lr, train_loss=p["loss_sum"] / p["seen"],
                   train_accuracy=p["correct"] / p["seen"], seconds=p["seconds"])
        validating = val_loader is not None and (row["epoch"] % self.val_every == 0 or row["epoch"] == epochs)
        self.callbacks.on_epoch_end(self)
        if validating:
            row.update(self.validate(val_loader))
        with self.ctrl_c.saving():  # the epoch recorded and its files written, or neither (a second Ctrl-C waits)
            self.history.append(row)
            self.epoch += 1
            self.partial = _fresh_epoch()
            improved = self.stopping.update(row, judged=validating or val_loader is None)
            if self._writes_files:
                self.files.save_model(self.deployed(self.model), best=improved)
            self._save_checkpoint(train_loader)
            if self._writes_files:
                self.files.save_history(self.history)
        self.progress.epoch_line(row, epochs, best=improved and validating)
        if self.stopping.stopped and self.main_process:
            tqdm.write(self.stopping.message(self.val_every))
        return self.stopping.stopped

    def validate(self, loader):
        """``val_loss`` and ``val_accuracy`` over ``loader`` (over every process's part of the images)."""
        try:
            loss_sum, correct, n = _evaluation_sums(self.model, self.loss_fn, loader)[:3]
        except NonFiniteError as e:
            raise TrainingDiverged(f"epoch {self.epoch + 1}, validation: {e}{_DIVERGED_HINT}") from None
        loss_sum, correct, n = self.callbacks.reduce(loss_sum, correct, n)
        return dict(val_loss=loss_sum / n, val_accuracy=correct / n)

    # --- checkpoints -------------------------------------------------------------
    def _save_checkpoint(self, loader):
        if not self._writes_files:
            return
        state = dict(epoch=self.epoch, partial=self.partial, best=self.best, stale=self.stopping.stale,
                     history=self.history, seed=self.seed, loader=loader.state_dict(), settings=self.settings,
                     run=run_settings(self.optimizer, self.seed, loader))
        self.files.save_checkpoint(self.model, self.optimizer, state)

    def load_checkpoint(self, train_loader=None):
        """Restore model, optimizer, history and position from ``out_dir/checkpoint.npz``.

        Refuses (FileNotFoundError) when there is none, and (ValueError) a
        checkpoint of a run with other settings, before anything is changed.
        """
        if self.files is None:
            raise ValueError("Trainer.load_checkpoint: this Trainer has no out_dir")
        path = self.files.file("checkpoint.npz")
        saved = check_run_folder(self.out_dir, True, self.settings)
        if train_loader is not None and saved.get("run") is not None:
            refuse_differences(path, saved["run"], run_settings(self.optimizer, self.seed, train_loader))
        state = load_checkpoint(path, self.model, self.optimizer)
        try:
            self.epoch, self.partial = int(state["epoch"]), dict(_fresh_epoch(), **state["partial"])
            self.stopping.best, self.stopping.stale = state["best"], int(state["stale"])
            self.history, self.seed = list(state["history"]), int(state["seed"])
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: a damaged checkpoint (its trainer state does not fit: {e})") from e
        if self.progress.lines:
            tqdm.write(f"resumed from {path} at epoch {self.epoch + 1}, step {self.partial['step']}")
        return True


class _RunningSums:
    """The loss and correct-prediction sums of the steps since the last fetch, kept on the device; :meth:`fetch`
    brings them over with the queued value checks (one transfer) and adds them to the epoch's progress."""

    def __init__(self, trainer, pending, bar):
        self.trainer, self.pending, self.bar = trainer, pending, bar
        self.xp = trainer.model.backend.xp
        self._restart(first_step=trainer.partial["step"])

    def _restart(self, first_step):
        self.loss = self.xp.zeros((), dtype=self.xp.float64)
        self.correct = self.xp.zeros((), dtype=self.xp.int64)
        self.seen = 0
        self.since, self.first_step = time.perf_counter(), first_step  # for messages: the steps since the last fetch

    def add(self, loss, logits, y):
        self.loss += loss * len(y)
        self.correct += (predicted_classes(logits) == y).sum()
        self.seen += len(y)

    def due(self):
        return time.perf_counter() - self.since >= self.trainer.refresh_seconds

    def fetch(self, check_weights=False):
        """``check_weights``: also check that every parameter and buffer is finite (before files are written:
        weights that are not are never saved)."""
        t, p = self.trainer, self.trainer.partial
        if check_weights:
            backend = t.model.backend
            for name, value in {**t.model.params, **t.model.buffers}.items():
                backend.check(backend.xp.isfinite(value), lambda name=name: f"the weights are no longer finite: "
                                                                            f"{name} holds NaN or infinity", NonFiniteError)
        steps = f"epoch {t.epoch + 1}, {_steps(self.first_step, p['step'])}"
        try:
            loss, correct = self.pending.flush(self.loss, self.correct)
        except NonFiniteError as e:
            raise TrainingDiverged(f"{steps}: {e}{_DIVERGED_HINT}") from None
        loss, correct, seen = t.callbacks.reduce(loss, correct, self.seen)
        if not math.isfinite(loss):
            raise TrainingDiverged(f"{steps}: the loss became {loss}{_DIVERGED_HINT}")
        p["loss_sum"] += loss
        p["correct"] += int(correct)
        p["seen"] += int(seen)
        self._restart(first_step=p["step"] + 1)
        if p["seen"]:
            self.bar.set_postfix(loss=f"{p['loss_sum'] / p['seen']:.4f}", acc=f"{p['correct'] / p['seen']:.3f}",
                                 refresh=False)


_DIVERGED_HINT = ("; the files in the run folder are those of the last sound epoch (lower the learning rate, "
                  "check the data for NaN, and start a new run)")


def _json_friendly(settings):
    try:
        return None if settings is None else json.loads(json.dumps(settings))
    except (TypeError, ValueError) as e:
        raise TypeError(f"Trainer: settings must be JSON-friendly (dicts, lists, numbers, strings): {e}") from e


def _check_parts(model, loss_fn, optimizer, schedule):
    if schedule is not None and not callable(schedule):
        raise TypeError(f"Trainer: schedule must be None or a function epoch -> learning rate, got {schedule!r}")
    if not isinstance(model, Layer):
        raise TypeError(f"Trainer: model must be a minicnn layer or Sequential, got a {type(model).__name__}")
    if not (callable(getattr(loss_fn, "forward", None)) and callable(getattr(loss_fn, "backward", None))):
        raise TypeError(f"Trainer: loss_fn must be a loss such as SoftmaxCrossEntropy(), got a {type(loss_fn).__name__}")
    trained = getattr(getattr(optimizer, "model", None), "params", None)
    if trained is None or not callable(getattr(optimizer, "step", None)):
        raise TypeError(f"Trainer: optimizer must be an optimizer such as SGD(model, lr=...), got a {type(optimizer).__name__}")
    ours = {id(array) for array in model.params.values()}
    if not trained or not all(id(array) in ours for array in trained.values()):
        raise ValueError("Trainer: the optimizer was built on another model, so training would never change this one; "
                         "build it on this model: SGD(model, lr=...)")


def _check_loader(loader, name, training):
    needs = ("__iter__", "__len__", "state_dict", "load_state_dict") if training else ("__iter__",)
    lacking = [attr for attr in needs if not hasattr(loader, attr)]
    if lacking:
        raise TypeError(f"Trainer.fit: {name} must follow the loader protocol (minicnn.data.loader), "
                        f"but a {type(loader).__name__} has no {', '.join(lacking)}")
    if training and len(loader) == 0:
        raise ValueError(f"Trainer.fit: {name} gives no batches")


def _fresh_epoch():
    return {"step": 0, "loss_sum": 0.0, "correct": 0, "seen": 0, "seconds": 0.0, "torn": False}


def _steps(first, last):
    return f"step {last}" if first >= last else f"steps {first}-{last}"


def evaluate(model, loss_fn, loader, tta=False):
    """Loss and accuracy of ``model`` over ``loader`` in evaluation mode (the mode is restored afterwards).

    ``tta=True`` averages the logits of each image and its mirror image (see :meth:`Sequential.predict`).

    Returns:
        dict with ``loss``, ``accuracy``, ``labels`` (N,) and ``probabilities`` (N, K), host arrays.
    """
    loss_sum, correct, n, labels, probs = _evaluation_sums(model, loss_fn, loader, tta)
    return dict(loss=loss_sum / n, accuracy=correct / n, labels=labels, probabilities=probs)


def _evaluation_sums(model, loss_fn, loader, tta=False):
    """The summed loss, the number of correct predictions, the number of images, the labels (N,) and the
    probabilities (N, K) of ``model`` over ``loader``, on the host (fetched in one transfer)."""
    backend = model.backend
    xp = backend.xp
    loss_sum, labels, probs = xp.zeros((), dtype=xp.float64), [], []
    with model.evaluating(), backend.deferred_checks() as pending:
        for x, y in loader:
            logits = model.predict(x, batch_size=len(x), tta=tta)
            loss_sum += loss_fn.forward(logits, y) * len(y)
            labels.append(y)
            probs.append(probabilities(logits))
        if not labels:
            raise ValueError(f"evaluate: the loader ({type(loader).__name__}) gave no batches")
        loss_sum, labels, probs = pending.flush(loss_sum, xp.concatenate(labels), xp.concatenate(probs))  # one transfer
    return loss_sum, int((probs.argmax(1) == labels).sum()), len(labels), labels, probs
