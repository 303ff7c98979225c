"""Checkpoints: a model file that also holds the optimizer's state and the training loop's position.

Everything needed to continue a run exactly where it stopped: the weights and
buffers (the model file), the optimizer's arrays (``extra/optimizer/...``) and
numbers, and the Trainer's JSON state (``extra/trainer``): epoch, step within
the epoch, the epoch's running sums, history, best value, the loader's state,
and the settings of the run (which a resume must repeat).
"""
import json

import numpy as np

from .modelfile import read_extra_arrays

_OPTIMIZER = "optimizer/"
_TRAINER_KEYS = ("epoch", "partial", "best", "stale", "history", "seed", "optimizer")


def optimizer_name(optimizer):
    """The optimizer's class name, e.g. ``"SGD"`` (a wrapper such as DistributedOptimizer gives the wrapped one's)."""
    return getattr(optimizer, "name", type(optimizer).__name__)


def run_settings(optimizer, seed, loader):
    """What a resume must repeat besides the run's own settings: the optimizer and its settings, the seed and the
    number of batches per epoch (JSON-friendly)."""
    hyperparameters = getattr(optimizer, "hyperparameters", dict)()
    return json.loads(json.dumps({"optimizer": optimizer_name(optimizer), **hyperparameters, "seed": seed,
                                  "batches per epoch": len(loader)}))


def save_checkpoint(path, model, optimizer, trainer_state):
    """Write ``model``, ``optimizer``'s state and ``trainer_state`` (JSON-friendly) to ``path``, atomically."""
    state = optimizer.state_dict()
    extra = {_OPTIMIZER + name: array for name, array in state.pop("arrays").items()}
    extra["trainer"] = np.array(json.dumps(dict(trainer_state, optimizer=state)))
    model.save(path, extra)


def read_trainer_state(path):
    """The trainer state saved in the checkpoint at ``path`` (without loading anything); a clear error if it is none."""
    extra = read_extra_arrays(path, ["trainer"])
    if "trainer" not in extra:
        raise ValueError(f"{path}: a model file, not a training checkpoint (no trainer state in it)")
    try:
        state = json.loads(str(extra["trainer"]))
    except ValueError as e:
        raise ValueError(f"{path}: a damaged checkpoint (its trainer state is not JSON: {e})") from e
    missing = [key for key in _TRAINER_KEYS if not isinstance(state, dict) or key not in state]
    if missing:
        raise ValueError(f"{path}: a damaged or foreign checkpoint (its trainer state lacks {missing})")
    return state


def load_checkpoint(path, model, optimizer):
    """Restore ``model`` and ``optimizer`` from ``path``; return the trainer state saved with them.

    The file is checked against both (architecture, optimizer type) before either changes.
    """
    state = read_trainer_state(path)
    saved = state.pop("optimizer")
    name = optimizer_name(optimizer)
    if saved.get("type", name) != name:
        raise ValueError(f"{path}: the checkpoint holds the state of a {saved['type']} optimizer, but this run uses {name}")
    model.load_weights(path)
    extra = read_extra_arrays(path)
    arrays = {k[len(_OPTIMIZER):]: v for k, v in extra.items() if k.startswith(_OPTIMIZER)}
    try:
        optimizer.load_state_dict(dict(saved, arrays=arrays))
    except (KeyError, TypeError) as e:
        raise ValueError(f"{path}: a damaged checkpoint (its optimizer state is incomplete: {e})") from e
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e
    return state
