"""The run folder: one run's files, the rules that keep runs from mixing, and how they are written.

A run folder holds ``model.npz`` (the model after the latest epoch: the final model once the run ends),
``best.npz`` (the epoch that scored best on the validation set), ``checkpoint.npz`` (everything needed to
resume) and ``history.csv`` / ``history.json``, each written atomically after every epoch. A new run never
overwrites another run's files, and a resume must repeat the settings of the run it continues.
"""
import contextlib
import csv
import errno
import io
import json
import os

from .checkpoint import read_trainer_state, save_checkpoint
from .fileio import RunLock, atomic_write

OUTPUT_FILES = ("checkpoint.npz", "model.npz", "best.npz", "history.csv", "history.json")
"""The files a Trainer writes into its run folder."""


class RunFolder:
    """The files of one run in the folder ``path`` (made if need be), written atomically."""

    def __init__(self, path):
        self.path = run_folder(path)

    def __repr__(self):
        return f"RunFolder({self.path!r})"

    def file(self, name):
        return os.path.join(self.path, name)

    def lock(self):
        """The folder's lock (:class:`~minicnn.fileio.RunLock`), held while a run uses it."""
        return RunLock(self.path)

    def save_model(self, model, best=False):
        """``model.npz``, and ``best.npz`` too when ``best``."""
        model.save(self.file("model.npz"))
        if best:
            model.save(self.file("best.npz"))

    def save_checkpoint(self, model, optimizer, state):
        save_checkpoint(self.file("checkpoint.npz"), model, optimizer, state)

    def save_history(self, history):
        """``history`` (a list of dicts, one per epoch) as ``history.csv`` and ``history.json``."""
        columns = list(dict.fromkeys(k for row in history for k in row))
        text = io.StringIO()
        writer = csv.DictWriter(text, columns)
        writer.writeheader()
        writer.writerows(history)
        atomic_write(self.file("history.csv"), lambda f: f.write(text.getvalue()), mode="w")
        atomic_write(self.file("history.json"), lambda f: json.dump(history, f, indent=1), mode="w")


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
            refuse_differences(checkpoint, state["settings"], settings)
        return state
    existing = [name for name in OUTPUT_FILES if os.path.exists(os.path.join(out_dir, name))]
    if existing:
        raise FileExistsError(errno.EEXIST, f"the run folder already holds a run ({', '.join(existing)}); resume it "
                              "(--resume, or fit(..., resume=True)), or choose another folder", out_dir)
    return None


def refuse_differences(path, saved, current):
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
