"""Learning-rate schedules: functions ``epoch -> learning rate``, where the epoch may be fractional
(the Trainer sets the rate before every step)."""
import math


def step_schedule(base_lr, step_epochs, gamma=0.1):
    """Learning rate ``base_lr * gamma ** floor(epoch / step_epochs)``."""
    return lambda epoch: base_lr * gamma ** math.floor(epoch / step_epochs)


def cosine_schedule(base_lr, epochs, min_lr=0.0, warmup_epochs=0.0):
    """Linear warm-up from 0 for ``warmup_epochs``, then half a cosine from ``base_lr`` down to ``min_lr`` at ``epochs``."""
    def lr(epoch):
        if epoch < warmup_epochs:
            return base_lr * (epoch + 1e-3) / warmup_epochs
        t = min(1.0, (epoch - warmup_epochs) / max(epochs - warmup_epochs, 1e-9))
        return min_lr + (base_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * t))
    return lr
