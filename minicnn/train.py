"""The training loop: forward, loss, backward, optimizer step; then validation, checkpoints, early stopping."""
import contextlib
import csv
import io
import json
import math
import os
import signal
import sys
import threading
import time

from tqdm.auto import tqdm

from .checkpoint import load_checkpoint, save_checkpoint
from .fileio import atomic_write
from .functional import predicted_classes, probabilities
from .losses import NonFiniteError
from .schedules import cosine_schedule, step_schedule  # noqa: F401  (the schedules are part of this module's API)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names the epoch and steps."""


class Trainer:
    """Fits a model with a loss and an optimizer, epoch by epoch.

    Args:
        model: a :class:`~minicnn.Sequential`.
        loss_fn: e.g. :class:`~minicnn.SoftmaxCrossEntropy`.
        optimizer: e.g. :class:`~minicnn.Adam` over the model.
        schedule: optional ``epoch -> learning rate`` (fractional epochs), see
            :mod:`minicnn.schedules`.
        out_dir: where ``best.npz`` (the best model so far), ``checkpoint.npz``
            (everything needed to resume) and ``history.csv`` / ``history.json``
            are written, atomically, after every epoch. None writes nothing.
        monitor: ``"val_loss"`` (lower is better) or ``"val_accuracy"``: what
            "best" and early stopping look at.
        patience: stop after this many epochs without improvement (None: never).
        progress: show a live progress bar during each epoch.
        verbose: print one summary line per epoch.
        seed: decides the dropout masks: step ``s`` of epoch ``e`` draws from a
            generator seeded ``(seed, e, s)``, so a resumed run draws what an
            uninterrupted one would have.

    The training loader follows the protocol of :mod:`minicnn.data.loader`.
    The loop fetches numbers from the device only when it shows them
    (``refresh_seconds``, and at the end of each epoch): the loss, the
    correct-prediction count and every queued value check travel together.
    """

    def __init__(self, model, loss_fn, optimizer, schedule=None, out_dir=None, monitor="val_loss",
                 patience=None, progress=True, verbose=True, seed=0):
        if monitor not in ("val_loss", "val_accuracy"):
            raise ValueError(f"Trainer: monitor must be 'val_loss' or 'val_accuracy', got {monitor!r}")
        self.model, self.loss_fn, self.optimizer, self.schedule = model, loss_fn, optimizer, schedule
        self.out_dir, self.monitor, self.patience = out_dir, monitor, patience
        self.progress, self.verbose, self.seed = progress, verbose, seed
        self.refresh_seconds = 0.5 if sys.stderr.isatty() else 10.0  # a log file gets a line every 10 s
        self.history = []
        self.best = None
        self.stale = 0      # epochs since the last improvement
        self.epoch = 0      # epochs completed
        self.partial = _fresh_epoch()  # the current epoch's progress, saved by a mid-epoch checkpoint
        self.interrupted = False
        self._stop_requested = False
        if out_dir:
            os.makedirs(out_dir, exist_ok=True)

    # --- the loop -----------------------------------------------------------
    def fit(self, train_loader, val_loader=None, epochs=10, resume=False):
        """Train for ``epochs`` epochs in all (counting those before a resume) and return the history.

        The history is a list with one dict per epoch: epoch, lr, train_loss,
        train_accuracy, val_loss, val_accuracy, seconds. Ctrl-C finishes the
        current step, saves a checkpoint and returns with ``self.interrupted``
        set (a second Ctrl-C stops at once); with ``resume=True`` a later call
        continues from ``out_dir/checkpoint.npz`` exactly as if it had not stopped.
        """
        if resume:
            self.load_checkpoint()
        self.interrupted = self._stop_requested = False
        with self._ctrl_c_at_step_boundaries():
            try:
                while self.epoch < epochs and not self._stop_requested:
                    if self.train_epoch(train_loader, epochs) and self.end_epoch(train_loader, val_loader, epochs):
                        break
            except KeyboardInterrupt:
                self._stop_requested = True
                if self.partial.get("torn"):  # stopped inside a step: the arrays may be half-updated
                    tqdm.write("stopped in the middle of a step; no checkpoint written, the last one stays")
                    self.interrupted = True
                    return self.history
            if self._stop_requested:
                self.interrupted = True
                self._save_checkpoint(train_loader)
                where = f" to {os.path.join(self.out_dir, 'checkpoint.npz')}; resume to continue" if self.out_dir else ""
                step = self.partial["step"]
                done = f"in epoch {self.epoch + 1} after step {step}" if step else f"after epoch {self.epoch}"
                tqdm.write(f"interrupted {done}; checkpoint saved{where}")
        return self.history

    def train_epoch(self, loader, epochs):
        """Run the rest of the current epoch's steps; True when the epoch's training is complete."""
        model, p = self.model, self.partial
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
                raise TrainingDiverged(f"epoch {self.epoch + 1}, {_steps(first_unflushed, p['step'])}: {e}") from None
            if not math.isfinite(chunk_loss):
                raise TrainingDiverged(f"epoch {self.epoch + 1}, {_steps(first_unflushed, p['step'])}: "
                                       f"the loss became {chunk_loss}")
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
                    with backend.fixed_rng((self.seed, self.epoch, p["step"])):  # dropout masks, reproducible per step
                        logits = model.forward(x)
                    loss = self.loss_fn.forward(logits, y)
                    model.backward(self.loss_fn.backward(), input_grad=False)
                    self.optimizer.step()
                    loss_sum += loss * len(y)
                    correct += (predicted_classes(logits) == y).sum()
                    p["step"] += 1
                    p["seen"] += len(y)
                    p["torn"] = False
                    bar.update(1)
                    if self._stop_requested or p["step"] == steps or time.perf_counter() - last_flush >= self.refresh_seconds:
                        flush()
                    if self._stop_requested:
                        break
            except KeyboardInterrupt:
                if not p["torn"]:
                    flush()  # between steps: the sums so far belong to the checkpoint
                raise
            finally:
                p["seconds"] += time.perf_counter() - start
        return p["step"] == steps

    def end_epoch(self, train_loader, val_loader, epochs):
        """Validate, record the epoch, save files; True when early stopping ends the run."""
        p = self.partial
        row = dict(epoch=self.epoch + 1, lr=self.optimizer.lr, train_loss=p["loss_sum"] / p["seen"],
                   train_accuracy=p["correct"] / p["seen"], seconds=p["seconds"])
        if val_loader is not None:
            val = evaluate(self.model, self.loss_fn, val_loader)
            row.update(val_loss=val["loss"], val_accuracy=val["accuracy"])
        self.history.append(row)
        self.epoch += 1
        self.partial = _fresh_epoch()
        improved = self._is_improvement(row)
        if improved:
            self.best, self.stale = row.get(self.monitor), 0
            if self.out_dir:
                self.model.save(os.path.join(self.out_dir, "best.npz"))
        else:
            self.stale += 1
        self._save_checkpoint(train_loader)
        self._write_history()
        if self.verbose:
            tqdm.write(self._describe(row, epochs) + ("  *" if improved and val_loader is not None else ""))
        if self.patience is not None and self.stale >= self.patience:
            tqdm.write(f"early stopping: no better {self.monitor} for {self.patience} epochs")
            return True
        return False

    @contextlib.contextmanager
    def _ctrl_c_at_step_boundaries(self):
        """Turn the first Ctrl-C into a request that the loop honours after the current step."""
        if threading.current_thread() is not threading.main_thread():
            yield  # signal handlers can only be set from the main thread: Ctrl-C stays a KeyboardInterrupt
            return

        def request_stop(signum, frame):
            if self._stop_requested:
                raise KeyboardInterrupt  # a second Ctrl-C: stop now
            self._stop_requested = True
            tqdm.write("Ctrl-C: finishing this step, then saving a checkpoint (press again to stop at once)")

        previous = signal.signal(signal.SIGINT, request_stop)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

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

    def _save_checkpoint(self, loader):
        if not self.out_dir:
            return
        state = dict(epoch=self.epoch, partial=self.partial, best=self.best, stale=self.stale, history=self.history,
                     seed=self.seed, loader=loader.state_dict())
        save_checkpoint(os.path.join(self.out_dir, "checkpoint.npz"), self.model, self.optimizer, state)

    def load_checkpoint(self):
        """Restore model, optimizer, history and position from ``out_dir/checkpoint.npz``, if there is one."""
        path = os.path.join(self.out_dir or "", "checkpoint.npz")
        if not self.out_dir or not os.path.exists(path):
            return False
        state = load_checkpoint(path, self.model, self.optimizer)
        self.epoch, self.partial, self.best = state["epoch"], state["partial"], state["best"]
        self.stale, self.history, self.seed = state["stale"], state["history"], state["seed"]
        if self.verbose:
            tqdm.write(f"resumed from {path} at epoch {self.epoch + 1}, step {self.partial['step']}")
        return True

    def _write_history(self):
        if not self.out_dir or not self.history:
            return
        columns = list(dict.fromkeys(k for row in self.history for k in row))
        text = io.StringIO()
        writer = csv.DictWriter(text, columns)
        writer.writeheader()
        writer.writerows(self.history)
        atomic_write(os.path.join(self.out_dir, "history.csv"), lambda f: f.write(text.getvalue()), mode="w")
        atomic_write(os.path.join(self.out_dir, "history.json"), lambda f: json.dump(self.history, f, indent=1), mode="w")


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
        (loss_sum,) = pending.flush(loss_sum)
    labels, probs = backend.to_numpy(xp.concatenate(labels)), backend.to_numpy(xp.concatenate(probs))
    return dict(loss=loss_sum / len(labels), accuracy=float((probs.argmax(1) == labels).mean()),
                labels=labels, probabilities=probs)

