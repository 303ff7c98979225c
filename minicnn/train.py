"""The training loop: forward, loss, backward, optimizer step; then validation, checkpoints, early stopping."""
import contextlib
import csv
import errno
import io
import json
import math
import os
import signal
import sys
import threading
import time

from tqdm.auto import tqdm

from .checkpoint import load_checkpoint, read_trainer_state, save_checkpoint
from .fileio import RunLock, atomic_write
from .functional import predicted_classes, probabilities
from .layers.base import Layer
from .losses import NonFiniteError
from .schedules import cosine_schedule, step_schedule  # noqa: F401  (the schedules are part of this module's API)
from .validate import flag, integer, one_of

OUTPUT_FILES = ("checkpoint.npz", "model.npz", "best.npz", "history.csv", "history.json")
"""The files a Trainer writes into its run folder."""


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
        out_dir: where ``model.npz`` (the model after the latest epoch: the
            final model once the run ends), ``best.npz`` (the epoch that scored
            best on the validation set: an optimistic pick), ``checkpoint.npz``
            (everything needed to resume) and ``history.csv`` / ``history.json``
            are written, atomically, after every epoch. None writes nothing.
        monitor: ``"val_loss"`` (lower is better) or ``"val_accuracy"``: what
            "best" and early stopping look at.
        patience: stop after this many validations without improvement (None: never).
        val_every: validate after every ``val_every``-th epoch and after the
            last one (1: every epoch); validation can cost a sizeable part of a
            short epoch. ``best.npz`` is then the best of the validated epochs.
        progress: show a live progress bar during each epoch.
        verbose: print one summary line per epoch.
        seed: an int >= 0; decides the dropout masks: step ``s`` of epoch ``e`` draws from a
            generator seeded ``(seed, e, s)``, so a resumed run draws what an
            uninterrupted one would have.
        settings: JSON-friendly description of the run (the command line's
            flags, say), saved in checkpoints; a resume with other settings is
            refused, as is one with another optimizer, other optimizer
            settings, another seed or another number of batches per epoch.
        comm: a :class:`~minicnn.distributed.Communicator` for data-parallel
            training (``minicnn.distributed.world()`` under ``mpiexec``), or None.
            Every rank runs the same Trainer with loaders sharded for it
            (``DataLoader(..., shard=(comm.rank, comm.size))``); rank 0's weights
            are broadcast, the gradients summed after each backward, the
            validation sums reduced; after each epoch the batch norm statistics
            are averaged over the ranks (they differ where each process normalizes
            its own rows), so the model validated is the model saved; only rank 0
            writes the run folder and prints. An exception on one rank ends all of
            them (MPI Abort).

    The run folder is one run's: while ``fit`` runs it holds a lock
    (:class:`~minicnn.fileio.RunLock`), so a second run into it is refused;
    a new run (``resume=False``) is refused where another run's files are
    already, and ``resume=True`` where there is no checkpoint to resume.

    The training loader follows the protocol of :mod:`minicnn.data.loader`.
    The loop fetches numbers from the device only when it shows them
    (``refresh_seconds``, and at the end of each epoch): the loss, the
    correct-prediction count and every queued value check travel together.
    """

    def __init__(self, model, loss_fn, optimizer, schedule=None, out_dir=None, monitor="val_loss",
                 patience=None, progress=True, verbose=True, seed=0, settings=None, comm=None, val_every=1):
        _check_parts(model, loss_fn, optimizer)
        if schedule is not None and not callable(schedule):
            raise TypeError(f"Trainer: schedule must be None or a function epoch -> learning rate, got {schedule!r}")
        self.model, self.loss_fn, self.optimizer, self.schedule = model, loss_fn, optimizer, schedule
        self.monitor = one_of(monitor, "monitor", "Trainer", ("val_loss", "val_accuracy"))
        self.patience = None if patience is None else integer(patience, "patience (or None)", "Trainer")
        self.val_every = integer(val_every, "val_every", "Trainer")
        self.comm = comm
        self.progress, self.verbose = (progress, verbose) if comm is None or comm.rank == 0 else (False, False)
        self.seed = integer(seed, "seed", "Trainer", minimum=0)
        try:
            self.settings = None if settings is None else json.loads(json.dumps(settings))
        except (TypeError, ValueError) as e:
            raise TypeError(f"Trainer: settings must be JSON-friendly (dicts, lists, numbers, strings): {e}") from e
        self.out_dir = None if out_dir is None else run_folder(out_dir)
        self.refresh_seconds = 0.5 if sys.stderr.isatty() else 10.0  # a log file gets a line every 10 s
        self.history = []
        self.best = None
        self.stale = 0      # validations since the last improvement
        self.epoch = 0      # epochs completed
        self.partial = _fresh_epoch()  # the current epoch's progress, saved by a mid-epoch checkpoint
        self.interrupted = False
        self._stop_requested = False
        self._saving = self._interrupt_after_saving = False
        self._wrote_run_folder = False  # the files in out_dir are this Trainer's own

    # --- the loop -----------------------------------------------------------
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
        if resume and self.out_dir is None:
            raise ValueError("Trainer.fit: resume=True needs the out_dir that holds the checkpoint")
        if self.comm is not None and getattr(train_loader, "shard", None) != (self.comm.rank, self.comm.size):
            raise ValueError(f"Trainer.fit: with a communicator of {self.comm.size} processes, train_loader must give "
                             f"this rank's part of each batch: DataLoader(..., shard=({self.comm.rank}, {self.comm.size}))")
        with self.comm.failing_together() if self.comm else contextlib.nullcontext(), \
                RunLock(self.out_dir) if self._writes_files else contextlib.nullcontext():
            if self._writes_files and not self._wrote_run_folder:
                check_run_folder(self.out_dir, resume, self.settings)
            if resume:
                self.load_checkpoint(train_loader)
            elif self._writes_files and not self._wrote_run_folder:
                with self._saving_files():
                    self._save_checkpoint(train_loader)  # from the start: a run killed at any moment can be resumed
            if self.comm is not None:
                self.comm.broadcast(self.model)  # every rank starts from rank 0's weights
            self._wrote_run_folder = self.out_dir is not None
            history = self._fit(train_loader, val_loader, epochs)
            if self.comm is not None:
                self.comm.barrier()  # no rank goes on (to a resume, say) before rank 0's files are written
            return history

    @property
    def _writes_files(self):
        """This process writes the run folder: it has one, and it is rank 0 (or the only process)."""
        return self.out_dir is not None and (self.comm is None or self.comm.rank == 0)

    def _fit(self, train_loader, val_loader, epochs):
        self.interrupted = self._stop_requested = False
        with self._ctrl_c_at_step_boundaries():
            try:
                while self.epoch < epochs and not self._stop_agreed() and not self._stopped_early():
                    if self.train_epoch(train_loader, epochs) and self.end_epoch(train_loader, val_loader, epochs):
                        break
            except KeyboardInterrupt:
                if self.comm is not None:
                    raise  # this rank alone stops at once: comm.failing_together ends all of them
                self._stop_requested = True
                if self.partial.get("torn"):  # stopped inside a step: the arrays may be half-updated
                    tqdm.write("stopped in the middle of a step; no checkpoint written, the last one stays")
                    self.interrupted = True
                    return self.history
            if self._stop_requested:
                self.interrupted = True
                with self._saving_files():
                    self._save_checkpoint(train_loader)
                where = f" to {os.path.join(self.out_dir, 'checkpoint.npz')}; resume to continue" if self.out_dir else ""
                step = self.partial["step"]
                done = f"in epoch {self.epoch + 1} after step {step}" if step else f"after epoch {self.epoch}"
                if self.comm is None or self.comm.rank == 0:
                    tqdm.write(f"interrupted {done}; checkpoint saved{where}")
        return self.history

    def _stop_agreed(self):
        """Whether a stop was requested (Ctrl-C); with several ranks, on any of them (then all stop)."""
        if self.comm is not None:
            self._stop_requested = self.comm.any(self._stop_requested)
        return self._stop_requested

    def train_epoch(self, loader, epochs):
        """Run the rest of the current epoch's steps; True when the epoch's training is complete."""
        model, p, comm = self.model, self.partial, self.comm
        backend, xp = model.backend, model.backend.xp
        steps = len(loader)
        loader.load_state_dict({**loader.state_dict(), "epoch": self.epoch, "batch": p["step"]})
        model.train()
        start, last_flush, first_unflushed = time.perf_counter(), time.perf_counter(), p["step"]
        loss_sum = xp.zeros((), dtype=xp.float64)  # since the last flush, on the device
        correct = xp.zeros((), dtype=xp.int64)
        bar = tqdm(total=steps, initial=p["step"], unit="batch", desc=f"epoch {self.epoch + 1}/{epochs}",
                   disable=not self.progress, leave=False, dynamic_ncols=True, mininterval=self.refresh_seconds)

        def flush():
            nonlocal loss_sum, correct, last_flush, first_unflushed
            try:
                chunk_loss, chunk_correct = pending.flush(loss_sum, correct)
            except NonFiniteError as e:
                raise TrainingDiverged(f"epoch {self.epoch + 1}, {_steps(first_unflushed, p['step'])}: {e}"
                                       f"{_DIVERGED_HINT}") from None
            if comm is not None:
                chunk_loss, chunk_correct = comm.sum_numbers(chunk_loss, chunk_correct)
            if not math.isfinite(chunk_loss):
                raise TrainingDiverged(f"epoch {self.epoch + 1}, {_steps(first_unflushed, p['step'])}: "
                                       f"the loss became {chunk_loss}{_DIVERGED_HINT}")
            p["loss_sum"] += chunk_loss
            p["correct"] += int(chunk_correct)
            loss_sum, correct = xp.zeros((), dtype=xp.float64), xp.zeros((), dtype=xp.int64)
            last_flush, first_unflushed = time.perf_counter(), p["step"] + 1
            if p["seen"]:
                bar.set_postfix(loss=f"{p['loss_sum'] / p['seen']:.4f}", acc=f"{p['correct'] / p['seen']:.3f}", refresh=False)

        with bar, backend.deferred_checks() as pending:
            try:
                for x, y in loader:
                    if self.schedule is not None:
                        self.optimizer.lr = self.schedule(self.epoch + p["step"] / steps)
                    p["torn"] = True  # until the step's counters are updated too
                    rows = loader.rows if comm is not None else None  # (start, stop, total): our rows of the batch
                    with backend.fixed_rng((self.seed, self.epoch, p["step"]), rows=rows):  # dropout masks, per step
                        logits = model.forward(x)
                    loss = self.loss_fn.forward(logits, y)
                    dlogits = self.loss_fn.backward()
                    model.backward(dlogits if comm is None else dlogits * (len(y) / rows[2]), input_grad=False)
                    stop, refresh = self._stop_requested, time.perf_counter() - last_flush >= self.refresh_seconds
                    if comm is not None:  # our share of the global mean loss: the sum over ranks is its gradient
                        stop, refresh = comm.sum_gradients(model, stop, refresh)
                        self._stop_requested |= stop
                    self.optimizer.step()
                    loss_sum += loss * len(y)
                    correct += (predicted_classes(logits) == y).sum()
                    p["step"] += 1
                    p["seen"] += len(y) if comm is None else rows[2]
                    p["torn"] = False
                    bar.update(1)
                    if stop or p["step"] == steps:  # files may be written next
                        self._queue_weight_checks()
                        flush()
                    elif refresh:
                        flush()
                    if stop:
                        break
            except KeyboardInterrupt:
                if not p["torn"] and comm is None:  # between steps: the sums so far belong to the checkpoint
                    self._queue_weight_checks()
                    flush()
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
        if self.comm is not None:  # per-process batch norm statistics: every rank validates what rank 0 saves
            self.comm.average_buffers(self.model)
        if validating:
            try:
                val = evaluate(self.model, self.loss_fn, val_loader)
            except NonFiniteError as e:
                raise TrainingDiverged(f"epoch {self.epoch + 1}, validation: {e}{_DIVERGED_HINT}") from None
            if self.comm is not None:  # each rank validated its part of the images
                n = len(val["labels"])
                loss_sum, correct, n = self.comm.sum_numbers(val["loss"] * n, val["accuracy"] * n, n)
                val = dict(loss=loss_sum / n, accuracy=correct / n)
            row.update(val_loss=val["loss"], val_accuracy=val["accuracy"])
        self.history.append(row)
        self.epoch += 1
        self.partial = _fresh_epoch()
        judged = validating or val_loader is None  # an epoch that can be the best one
        improved = judged and self._is_improvement(row)
        if judged:
            self.stale = 0 if improved else self.stale + 1
        with self._saving_files():
            if self._writes_files:
                self.model.save(os.path.join(self.out_dir, "model.npz"))
            if improved:
                self.best = row.get(self.monitor)
                if self._writes_files:
                    self.model.save(os.path.join(self.out_dir, "best.npz"))
            self._save_checkpoint(train_loader)
            self._write_history()
        if self.verbose:
            tqdm.write(self._describe(row, epochs) + ("  *" if improved and validating else ""))
        if self._stopped_early() and (self.comm is None or self.comm.rank == 0):
            tqdm.write(f"early stopping: no better {self.monitor} in {self.patience} validation(s)"
                       + (f" (every {self.val_every} epochs)" if self.val_every > 1 else ""))
            return True
        return False

    def _stopped_early(self):
        return self.patience is not None and self.stale >= self.patience

    @contextlib.contextmanager
    def _ctrl_c_at_step_boundaries(self):
        """Turn the first Ctrl-C into a request that the loop honours after the current step."""
        if threading.current_thread() is not threading.main_thread():
            yield  # signal handlers can only be set from the main thread: Ctrl-C stays a KeyboardInterrupt
            return

        def request_stop(signum, frame):
            if self._stop_requested and self._saving:
                self._interrupt_after_saving = True  # a file half-written would be lost: stop right after it
                tqdm.write("Ctrl-C: stopping as soon as the file being written is complete")
                return
            if self._stop_requested:
                raise KeyboardInterrupt  # a second Ctrl-C: stop now
            self._stop_requested = True
            tqdm.write("Ctrl-C: finishing this step, then saving a checkpoint (press again to stop at once)")

        previous = signal.signal(signal.SIGINT, request_stop)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    @contextlib.contextmanager
    def _saving_files(self):
        """Inside the block, a second Ctrl-C waits until the files are written, then stops."""
        self._saving = True
        try:
            yield
        finally:
            self._saving = False
        if self._interrupt_after_saving:
            self._interrupt_after_saving = False
            raise KeyboardInterrupt

    def _queue_weight_checks(self):
        """Queue a check that every parameter and buffer is finite, judged with the loop's next flush:
        weights that are not are never saved."""
        backend = self.model.backend
        for name, value in {**self.model.params, **self.model.buffers}.items():
            backend.check(backend.xp.isfinite(value), lambda name=name: f"the weights are no longer finite: {name} "
                                                                        "holds NaN or infinity", NonFiniteError)

    # --- files ----------------------------------------------------------------
    def _is_improvement(self, row):
        value = row.get(self.monitor)
        if value is None or self.best is None:
            return True  # without validation, the latest model is the best we know
        return value < self.best if self.monitor == "val_loss" else value > self.best

    def _describe(self, row, epochs):
        text = (f"epoch {row['epoch']}/{epochs}  lr {row['lr']:.2e}  loss {row['train_loss']:.4f}  "
                f"acc {row['train_accuracy']:.3f}")
        if "val_loss" in row:
            text += f"  val_loss {row['val_loss']:.4f}  val_acc {row['val_accuracy']:.3f}"
        return text + f"  ({row['seconds']:.1f}s)"

    def _run_settings(self, loader):
        """What a resume must repeat besides ``settings``: the optimizer and its settings, the seed, the batches."""
        hyperparameters = getattr(self.optimizer, "hyperparameters", dict)()
        return json.loads(json.dumps({"optimizer": type(self.optimizer).__name__, **hyperparameters, "seed": self.seed,
                                      "batches per epoch": len(loader)}))

    def _save_checkpoint(self, loader):
        if not self._writes_files:
            return
        state = dict(epoch=self.epoch, partial=self.partial, best=self.best, stale=self.stale, history=self.history,
                     seed=self.seed, loader=loader.state_dict(), settings=self.settings, run=self._run_settings(loader))
        save_checkpoint(os.path.join(self.out_dir, "checkpoint.npz"), self.model, self.optimizer, state)

    def load_checkpoint(self, train_loader=None):
        """Restore model, optimizer, history and position from ``out_dir/checkpoint.npz``.

        Refuses (FileNotFoundError) when there is none, and (ValueError) a
        checkpoint of a run with other settings, before anything is changed.
        """
        if not self.out_dir:
            raise ValueError("Trainer.load_checkpoint: this Trainer has no out_dir")
        path = os.path.join(self.out_dir, "checkpoint.npz")
        saved = check_run_folder(self.out_dir, True, self.settings)
        if train_loader is not None and saved.get("run") is not None:
            _refuse_differences(path, saved["run"], self._run_settings(train_loader))
        state = load_checkpoint(path, self.model, self.optimizer)
        try:
            self.epoch, self.partial, self.best = int(state["epoch"]), dict(_fresh_epoch(), **state["partial"]), state["best"]
            self.stale, self.history, self.seed = int(state["stale"]), list(state["history"]), int(state["seed"])
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: a damaged checkpoint (its trainer state does not fit: {e})") from e
        if self.verbose:
            tqdm.write(f"resumed from {path} at epoch {self.epoch + 1}, step {self.partial['step']}")
        return True

    def _write_history(self):
        if not self._writes_files or not self.history:
            return
        columns = list(dict.fromkeys(k for row in self.history for k in row))
        text = io.StringIO()
        writer = csv.DictWriter(text, columns)
        writer.writeheader()
        writer.writerows(self.history)
        atomic_write(os.path.join(self.out_dir, "history.csv"), lambda f: f.write(text.getvalue()), mode="w")
        atomic_write(os.path.join(self.out_dir, "history.json"), lambda f: json.dump(self.history, f, indent=1), mode="w")


_DIVERGED_HINT = ("; the files in the run folder are those of the last sound epoch (lower the learning rate, "
                  "check the data for NaN, and start a new run)")


def check_run_folder(out_dir, resume, settings=None):
    """Check, before anything expensive, that the run folder ``out_dir`` can take this run.

    With ``resume`` it must hold a checkpoint (FileNotFoundError otherwise)
    saved with the same ``settings`` (ValueError listing the differences
    otherwise); its trainer state is returned. Without, it must hold no
    other run's files (FileExistsError): a new run never overwrites an old one.
    """
    checkpoint = os.path.join(out_dir, "checkpoint.npz")
    if resume:
        if not os.path.exists(checkpoint):
            raise FileNotFoundError(errno.ENOENT, "nothing to resume: the run folder holds no checkpoint.npz "
                                    "(start a new run there by leaving out resume)", checkpoint)
        state = read_trainer_state(checkpoint)
        if state.get("settings") is not None and settings is not None:
            _refuse_differences(checkpoint, state["settings"], settings)
        return state
    existing = [name for name in OUTPUT_FILES if os.path.exists(os.path.join(out_dir, name))]
    if existing:
        raise FileExistsError(errno.EEXIST, f"the run folder already holds a run ({', '.join(existing)}); resume it "
                              "(--resume, or fit(..., resume=True)), or choose another folder", out_dir)
    return None


def _refuse_differences(path, saved, current):
    keys = list(dict.fromkeys([*saved, *current]))
    missing = "(not set)"
    differences = [f"{key}: {saved.get(key, missing)!r} in the checkpoint, {current.get(key, missing)!r} now"
                   for key in keys if saved.get(key, missing) != current.get(key, missing)]
    if differences:
        raise ValueError(f"{path}: the run was started with other settings, and resuming would mix the two: "
                         f"{'; '.join(differences)} (resume with the same settings, or start a new run elsewhere)")


def run_folder(out_dir):
    """``out_dir`` as a folder that exists (made if need be), or a clear error naming it."""
    if not isinstance(out_dir, (str, os.PathLike)) or not os.fspath(out_dir):
        raise TypeError(f"Trainer: out_dir must be a folder path (str or os.PathLike) or None, got {out_dir!r}")
    out_dir = os.fspath(out_dir)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise NotADirectoryError(errno.ENOTDIR, "the run folder is a file, not a folder", out_dir)
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        raise OSError(e.errno, f"cannot make the run folder: {e.strerror}", out_dir) from e
    return out_dir


@contextlib.contextmanager
def new_run_folder(out_dir):
    """``run_folder(out_dir)`` for a run that checks can still refuse: if the block raises, the folders made here
    (``out_dir`` and any missing parents) are removed again while empty, so a refused run leaves no trace; a folder
    that existed before, or that holds a file, is kept."""
    made = []  # the folders run_folder is about to make, innermost first (run_folder refuses what is no path)
    if isinstance(out_dir, (str, os.PathLike)) and os.fspath(out_dir):
        folder = os.path.abspath(os.fspath(out_dir))
        while not os.path.lexists(folder):  # the root exists: this ends
            made.append(folder)
            folder = os.path.dirname(folder)
    out_dir = run_folder(out_dir)
    try:
        yield out_dir
    except BaseException:
        for folder in made:
            try:
                os.rmdir(folder)  # only ever an empty folder
            except OSError:
                break  # it holds something (a checkpoint, another run's lock): kept, and so are its parents
        raise


def _check_parts(model, loss_fn, optimizer):
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
    return dict(loss=loss_sum / len(labels), accuracy=float((probs.argmax(1) == labels).mean()),
                labels=labels, probabilities=probs)

