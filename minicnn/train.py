"""The training loop: forward, loss, backward, optimizer step; then validation, checkpoints, early stopping."""
import csv
import io
import json
import math
import os
import sys
import time

import numpy as np
from tqdm.auto import tqdm

from .fileio import atomic_write
from .losses import NonFiniteError, probabilities
from .model import read_extra_arrays


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names the epoch and step."""


def step_schedule(base_lr, step_epochs, gamma=0.1):
    """Learning rate ``base_lr * gamma ** floor(epoch / step_epochs)``."""
    return lambda epoch: base_lr * gamma ** math.floor(epoch / step_epochs)


def cosine_schedule(base_lr, epochs, min_lr=0.0, warmup_epochs=0.0):
    """Linear warm-up from 0 for ``warmup_epochs``, then half a cosine from ``base_lr`` down to ``min_lr`` at ``epochs``.

    The epoch may be fractional: the trainer updates the rate every step.
    """
    def lr(epoch):
        if epoch < warmup_epochs:
            return base_lr * (epoch + 1e-3) / warmup_epochs
        t = min(1.0, (epoch - warmup_epochs) / max(epochs - warmup_epochs, 1e-9))
        return min_lr + (base_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * t))
    return lr


class Trainer:
    """Fits a model with a loss and an optimizer, epoch by epoch.

    Args:
        model: a :class:`~minicnn.Sequential`.
        loss_fn: e.g. :class:`~minicnn.SoftmaxCrossEntropy`.
        optimizer: e.g. :class:`~minicnn.Adam` over ``model.parameters()``.
        schedule: optional ``epoch -> learning rate`` (fractional epochs), see
            :func:`cosine_schedule` and :func:`step_schedule`.
        out_dir: where ``best.npz`` (the best model so far), ``checkpoint.npz``
            (everything needed to resume) and ``history.csv`` / ``history.json``
            are written, atomically, after every epoch. None writes nothing.
        monitor: ``"val_loss"`` (lower is better) or ``"val_accuracy"``: what
            "best" and early stopping look at.
        patience: stop after this many epochs without improvement (None: never).
        progress: show a live progress bar during each epoch.
        verbose: print one summary line per epoch.
    """

    def __init__(self, model, loss_fn, optimizer, schedule=None, out_dir=None, monitor="val_loss",
                 patience=None, progress=True, verbose=True):
        if monitor not in ("val_loss", "val_accuracy"):
            raise ValueError(f"Trainer: monitor must be 'val_loss' or 'val_accuracy', got {monitor!r}")
        self.model, self.loss_fn, self.optimizer, self.schedule = model, loss_fn, optimizer, schedule
        self.out_dir, self.monitor, self.patience = out_dir, monitor, patience
        self.progress, self.verbose = progress, verbose
        self.history = []
        self.best = None
        self.epoch = 0
        self.interrupted = False
        if out_dir:
            os.makedirs(out_dir, exist_ok=True)

    # --- the loop -----------------------------------------------------------
    def fit(self, train_loader, val_loader=None, epochs=10, resume=False):
        """Train for ``epochs`` epochs in all (counting those before a resume) and return the history.

        The history is a list with one dict per epoch: epoch, lr, train_loss,
        train_accuracy, val_loss, val_accuracy, seconds. Ctrl-C saves a
        checkpoint and returns early with ``self.interrupted`` set; with
        ``resume=True`` a later call picks up from ``out_dir/checkpoint.npz``.
        """
        if resume:
            self.load_checkpoint(train_loader)
        stale = 0
        try:
            while self.epoch < epochs:
                row = self.train_epoch(train_loader, epochs)
                if val_loader is not None:
                    val = self.evaluate(val_loader)
                    row.update(val_loss=val["loss"], val_accuracy=val["accuracy"])
                self.history.append(row)
                self.epoch += 1
                improved = self._is_improvement(row)
                if improved:
                    self.best, stale = row.get(self.monitor), 0
                    self._save_model("best.npz")
                else:
                    stale += 1
                self._save_checkpoint(train_loader)
                self._write_history()
                if self.verbose:
                    tqdm.write(self._describe(row, epochs) + ("  *" if improved and val_loader is not None else ""))
                if self.patience is not None and stale >= self.patience:
                    tqdm.write(f"early stopping: no better {self.monitor} for {self.patience} epochs")
                    break
        except KeyboardInterrupt:
            self.interrupted = True
            self._save_checkpoint(train_loader)
            tqdm.write(f"interrupted in epoch {self.epoch + 1}; checkpoint saved"
                       + (f" to {os.path.join(self.out_dir, 'checkpoint.npz')}; resume to continue" if self.out_dir else ""))
        return self.history

    def train_epoch(self, loader, epochs):
        """One pass over ``loader``: forward, loss, backward, step for every batch."""
        self.model.train()
        total_loss = correct = seen = 0
        start = time.perf_counter()
        bar = tqdm(total=len(loader.labels), unit="img", desc=f"epoch {self.epoch + 1}/{epochs}",
                   disable=not self.progress, leave=False, dynamic_ncols=True,
                   mininterval=0.1 if sys.stderr.isatty() else 10)  # a log file gets a line every 10 s, not 10 a second
        with bar:
            for step, (x, y) in enumerate(loader):
                if self.schedule is not None:
                    self.optimizer.lr = self.schedule(self.epoch + step / len(loader))
                logits = self.model.forward(x)
                try:
                    loss = self.loss_fn.forward(logits, y)
                except NonFiniteError as e:
                    raise TrainingDiverged(f"epoch {self.epoch + 1}, step {step + 1}: {e}") from None
                if not math.isfinite(loss):
                    raise TrainingDiverged(f"epoch {self.epoch + 1}, step {step + 1}: the loss is {loss}")
                self.model.backward(self.loss_fn.backward(), input_grad=False)
                self.optimizer.step()
                n = len(y)
                total_loss += loss * n
                correct += int((probabilities(logits).argmax(axis=1) == y).sum())
                seen += n
                bar.update(n)
                bar.set_postfix(loss=f"{total_loss / seen:.4f}", acc=f"{correct / seen:.3f}", refresh=False)
        return dict(epoch=self.epoch + 1, lr=self.optimizer.lr, train_loss=total_loss / seen,
                    train_accuracy=correct / seen, seconds=time.perf_counter() - start)

    def evaluate(self, loader):
        """:func:`evaluate` of this trainer's model and loss."""
        return evaluate(self.model, self.loss_fn, loader)

    # --- files ----------------------------------------------------------------
    def _is_improvement(self, row):
        value = row.get(self.monitor)
        if value is None:
            return True  # without validation, the latest model is the best we know
        if self.best is None:
            return True
        return value < self.best if self.monitor == "val_loss" else value > self.best

    def _describe(self, row, epochs):
        text = (f"epoch {row['epoch']}/{epochs}  lr {row['lr']:.2e}  loss {row['train_loss']:.4f}  "
                f"acc {row['train_accuracy']:.3f}")
        if "val_loss" in row:
            text += f"  val_loss {row['val_loss']:.4f}  val_acc {row['val_accuracy']:.3f}"
        return text + f"  ({row['seconds']:.1f}s)"

    def _save_model(self, name, extra_arrays=None):
        if self.out_dir:
            self.model.save(os.path.join(self.out_dir, name), extra_arrays)

    def _save_checkpoint(self, loader):
        if not self.out_dir:
            return
        state = self.optimizer.state_dict()
        extra = {f"optimizer/{k}": v for k, v in state.pop("arrays").items()}
        trainer = dict(epoch=self.epoch, best=self.best, history=self.history, optimizer=state,
                       loader_rng=loader.rng.bit_generator.state)
        extra["trainer"] = np.array(json.dumps(trainer))
        self._save_model("checkpoint.npz", extra)

    def load_checkpoint(self, loader):
        """Restore model, optimizer, history and data order from ``out_dir/checkpoint.npz``, if there is one."""
        path = os.path.join(self.out_dir or "", "checkpoint.npz")
        if not self.out_dir or not os.path.exists(path):
            return False
        self.model.load_weights(path)
        extra = read_extra_arrays(path)
        trainer = json.loads(str(extra.pop("trainer")))
        arrays = {k[len("optimizer/"):]: v for k, v in extra.items() if k.startswith("optimizer/")}
        self.optimizer.load_state_dict(dict(trainer["optimizer"], arrays=arrays))
        self.epoch, self.best, self.history = trainer["epoch"], trainer["best"], trainer["history"]
        loader.rng.bit_generator.state = trainer["loader_rng"]
        if self.verbose:
            tqdm.write(f"resumed from {path} after epoch {self.epoch}")
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


def evaluate(model, loss_fn, loader):
    """Loss and accuracy of ``model`` over ``loader`` in evaluation mode (the mode is restored afterwards).

    Returns:
        dict with ``loss``, ``accuracy``, ``labels`` (N,) and ``probabilities`` (N, K), host arrays.
    """
    total_loss, labels, probs = 0.0, [], []
    with model.evaluating():
        for x, y in loader:
            logits = model.forward(x)
            total_loss += loss_fn.forward(logits, y) * len(y)
            labels.append(model.backend.to_numpy(y))
            probs.append(model.backend.to_numpy(probabilities(logits)))
    labels, probs = np.concatenate(labels), np.concatenate(probs)
    return dict(loss=total_loss / len(labels), accuracy=float((probs.argmax(1) == labels).mean()),
                labels=labels, probabilities=probs)

