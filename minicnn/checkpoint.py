"""Checkpoints: a model file that also holds the optimizer's state and the training loop's position.

Everything needed to continue a run exactly where it stopped: the weights and
buffers (the model file), the optimizer's arrays (``extra/optimizer/...``) and
numbers, and the Trainer's JSON state (``extra/trainer``): epoch, step within
the epoch, the epoch's running sums, history, best value, the loader's state.
"""
import json

import numpy as np

from .modelfile import read_extra_arrays

_OPTIMIZER = "optimizer/"


def save_checkpoint(path, model, optimizer, trainer_state):
    """Write ``model``, ``optimizer``'s state and ``trainer_state`` (JSON-friendly) to ``path``, atomically."""
    state = optimizer.state_dict()
    extra = {_OPTIMIZER + name: array for name, array in state.pop("arrays").items()}
    extra["trainer"] = np.array(json.dumps(dict(trainer_state, optimizer=state)))
    model.save(path, extra)


def load_checkpoint(path, model, optimizer):
    """Restore ``model`` and ``optimizer`` from ``path``; return the trainer state saved with them."""
    model.load_weights(path)
    extra = read_extra_arrays(path)
    if "trainer" not in extra:
        raise ValueError(f"{path}: a model file, not a training checkpoint (no trainer state in it)")
    state = json.loads(str(extra.pop("trainer")))
    arrays = {k[len(_OPTIMIZER):]: v for k, v in extra.items() if k.startswith(_OPTIMIZER)}
    optimizer.load_state_dict(dict(state.pop("optimizer"), arrays=arrays))
    return state
