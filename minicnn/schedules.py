"""Learning-rate schedules: functions ``epoch -> learning rate``, where the epoch may be fractional
(the Trainer sets the rate before every step)."""
import math

from .validate import real


def step_schedule(base_lr, step_epochs, gamma=0.1):
    """Learning rate ``base_lr * gamma ** floor(epoch / step_epochs)``; base_lr > 0, step_epochs > 0, gamma > 0."""
    base_lr = real(base_lr, "base_lr", "step_schedule", 0, low_open=True)
    step_epochs = real(step_epochs, "step_epochs", "step_schedule", 0, low_open=True)
    gamma = real(gamma, "gamma", "step_schedule", 0, low_open=True)
    return lambda epoch: base_lr * gamma ** math.floor(epoch / step_epochs)


def cosine_schedule(base_lr, epochs, min_lr=0.0, warmup_epochs=0.0):
    """Linear warm-up from 0 for ``warmup_epochs``, then half a cosine from ``base_lr`` down to ``min_lr`` at ``epochs``.

    base_lr > 0, epochs > 0, min_lr in [0, base_lr], warmup_epochs in [0, epochs].
    """
    base_lr = real(base_lr, "base_lr", "cosine_schedule", 0, low_open=True)
    epochs = real(epochs, "epochs", "cosine_schedule", 0, low_open=True)
    min_lr = real(min_lr, "min_lr", "cosine_schedule", 0, base_lr)
    warmup_epochs = real(warmup_epochs, "warmup_epochs", "cosine_schedule", 0, epochs)

    def lr(epoch):
        if epoch < warmup_epochs:
            return base_lr * (epoch + 1e-3) / warmup_epochs
        t = min(1.0, (epoch - warmup_epochs) / max(epochs - warmup_epochs, 1e-9))
        return min_lr + (base_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * t))
    return lr


def warmup_epochs_for(epochs):
    """The warm-up ``minicnn train`` gives a run of ``epochs``: one epoch, or a tenth of a shorter run.

    A whole epoch of warm-up would leave a one-epoch run ramping up for all of it (its first steps at a
    thousandth of the rate, the cosine never reached); a tenth keeps the warm-up a small part of any run.
    """
    epochs = real(epochs, "epochs", "warmup_epochs_for", 0, low_open=True)
    return min(1.0, epochs / 10)
