"""Interrupted runs: Ctrl-C between steps, inside a step or while a file is written, SIGKILL at any moment,
and two runs into one folder. A resumed run ends exactly as the same run left alone (bitwise, NumPy backend)."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import minicnn
import minicnn.modelfile
from minicnn import (Adam, BatchNorm2D, Conv2D, Dense, Dropout, Flatten, GlobalAvgPool2D, MaxPool2D, ReLU, Sequential,
                     SoftmaxCrossEntropy)
from minicnn.checkpoint import read_trainer_state
from minicnn.data import Augment, DataLoader, Normalize
from minicnn.fileio import RunLock
from minicnn.train import Trainer

from conftest import host
from test_seam import toy_images

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX signals and processes")


def exact_run(backend, out_dir, epochs, interrupt=None, image_size=None):
    """A small run with batch norm, dropout and augmentation (``image_size``: the loader's, e.g. a function of the
    epoch; the network then ends in global average pooling to take any size); ``interrupt`` is None or one of
    ("between", epoch, step): Ctrl-C just before that step;  ("inside", epoch, step): an interruption in the
    middle of that step (half-updated arrays: no checkpoint);  ("saving", epoch): two real Ctrl-C (SIGINT)
    while the checkpoint at the end of that epoch is being written."""
    minicnn.seed(0)
    head = [Flatten(), Dropout(0.3), Dense(27, 2)] if image_size is None else [GlobalAvgPool2D(), Dropout(0.3), Dense(3, 2)]
    model = Sequential([Conv2D(1, 3, 3, padding=1), BatchNorm2D(3), ReLU(), MaxPool2D(2), *head])
    images, labels = toy_images(40)
    normalize = Normalize([0.3], [0.3], backend=backend)
    train = DataLoader(images, labels, 16, normalize, shuffle=True, augment=Augment(), seed=3, backend=backend,
                       image_size=image_size)
    val = DataLoader(*toy_images(16, seed=1), 8, normalize, backend=backend)
    trainer = Trainer(model, SoftmaxCrossEntropy(), Adam(model, lr=0.01), out_dir=out_dir, progress=False,
                      verbose=False, seed=5)
    kind, *where = interrupt or (None,)
    real_iter, real_write = DataLoader.__iter__, minicnn.modelfile.atomic_write
    pressed = []

    def iter_with_ctrl_c(self):
        for batch in real_iter(self):
            if self is train and [self.epoch, self.batch - 1] == where:
                raise KeyboardInterrupt
            yield batch

    def in_the_middle_of_a_step(phase, name, layer, x, y):
        if phase == "forward" and name == "3" and model.training and [trainer.epoch, trainer.partial["step"]] == where:
            raise KeyboardInterrupt

    def write_with_ctrl_c(path, write, mode="wb"):
        def pressing_ctrl_c_twice(f):
            if path.endswith("checkpoint.npz") and [trainer.epoch] == where and not pressed:
                for _ in range(2):
                    os.kill(os.getpid(), signal.SIGINT)
                    pressed.append(trainer.ctrl_c.requested)  # a few bytecodes: the handler has run by now
            write(f)
        real_write(path, pressing_ctrl_c_twice, mode)

    if kind == "between":
        DataLoader.__iter__ = iter_with_ctrl_c
    if kind == "inside":
        model.hooks.append(in_the_middle_of_a_step)
    if kind == "saving":
        minicnn.modelfile.atomic_write = write_with_ctrl_c
    try:
        history = trainer.fit(train, val, epochs, resume=os.path.exists(os.path.join(out_dir, "checkpoint.npz")))
    finally:
        DataLoader.__iter__, minicnn.modelfile.atomic_write = real_iter, real_write
    if kind == "saving":  # the first press asked for a stop, the second waited for the file, then stopped
        assert pressed == [True, True] and trainer.interrupted
    return trainer, history


def without_time(rows):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


@pytest.mark.parametrize("interrupt", [("between", 0, 0), ("between", 1, 1), ("between", 1, 2), ("between", 2, 0),
                                       ("inside", 1, 1), ("saving", 1)],
                         ids=["first-step", "mid-epoch", "last-step", "between-epochs", "inside-a-step", "during-a-save"])
def test_an_interrupted_run_resumes_exactly(backend, tmp_path, interrupt):
    straight, history = exact_run(backend, tmp_path / "a", 3)
    stopped, _ = exact_run(backend, tmp_path / "b", 3, interrupt)
    assert stopped.interrupted
    Sequential.load(tmp_path / "b" / "checkpoint.npz")  # complete, whatever the moment
    # saved where the run stopped: between steps, at that step; inside a step or a save, at the last epoch's end
    kind, epoch, *step = interrupt
    state = read_trainer_state(tmp_path / "b" / "checkpoint.npz")
    assert (state["epoch"], state["partial"]["step"]) == (epoch, step[0] if kind == "between" else 0)
    resumed, resumed_history = exact_run(backend, tmp_path / "b", 3)
    assert not resumed.interrupted
    for store in ("params", "buffers"):
        for name, value in getattr(straight.model, store).items():
            np.testing.assert_array_equal(host(backend, getattr(resumed.model, store)[name]), host(backend, value), name)
    for (name, slot), value in straight.optimizer.state.items():
        np.testing.assert_array_equal(host(backend, resumed.optimizer.state[name, slot]), host(backend, value))
    assert without_time(resumed_history) == without_time(history)


def low_res_first(epoch):
    return 4 if epoch < 2 else None  # the 6x6 images resampled to 4x4 in epochs 0 and 1


@pytest.mark.parametrize("interrupt", [("between", 1, 1), ("between", 2, 0), ("between", 2, 1)],
                         ids=["low-res-epoch", "at-the-switch", "full-size-epoch"])
def test_progressive_resizing_resumes_exactly(backend, tmp_path, interrupt):
    straight, history = exact_run(backend, tmp_path / "a", 3, image_size=low_res_first)
    stopped, _ = exact_run(backend, tmp_path / "b", 3, interrupt, image_size=low_res_first)
    assert stopped.interrupted
    resumed, resumed_history = exact_run(backend, tmp_path / "b", 3, image_size=low_res_first)
    for name, value in {**straight.model.params, **straight.model.buffers}.items():
        np.testing.assert_array_equal(host(backend, {**resumed.model.params, **resumed.model.buffers}[name]),
                                      host(backend, value), name)
    assert without_time(resumed_history) == without_time(history)
    full_size, _ = exact_run(backend, tmp_path / "c", 3, image_size=lambda epoch: None)
    assert without_time(full_size.history) != without_time(history)  # the low-res epochs made a difference


def test_resume_refuses_another_optimizer_seed_or_batching(backend, tmp_path):
    exact_run(backend, tmp_path, 1)
    model = Sequential([Conv2D(1, 3, 3, padding=1), BatchNorm2D(3), ReLU(), MaxPool2D(2), Flatten(), Dropout(0.3),
                        Dense(27, 2)])
    images, labels = toy_images(40)
    loader = DataLoader(images, labels, 8, Normalize([0.3], [0.3]), shuffle=True, seed=3)
    trainer = Trainer(model, SoftmaxCrossEntropy(), Adam(model, lr=0.01, eps=1e-6), out_dir=tmp_path, progress=False,
                      verbose=False, seed=6)
    with pytest.raises(ValueError, match="other settings.*eps: 1e-08 in the checkpoint, 1e-06 now.*seed: 5 .*6 now"
                                         ".*batches per epoch: 3 in the checkpoint, 5 now"):
        trainer.fit(loader, epochs=2, resume=True)
    assert not os.path.exists(tmp_path / RunLock.NAME)  # released after the refusal


def cli_command(*args):
    return [sys.executable, "-c", "import sys; from minicnn.cli import main; sys.exit(main())", *map(str, args)]


ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]),
       "MINICNN_BACKEND": "numpy"}
RUN = ["--image-size", "8", "--arch", "catdog-small", "--batch-size", "4", "--quiet", "--seed", "3", "--lr", "0.01"]


def checkpoint_time(folder):
    """When ``folder/checkpoint.npz`` was last written (None: not yet)."""
    try:
        return os.stat(folder / "checkpoint.npz").st_mtime_ns
    except FileNotFoundError:
        return None


def checkpoint_contents(path):
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files if k != "extra/trainer"}
    state = read_trainer_state(path)
    state["history"], state["partial"] = without_time(state["history"]), dict(state["partial"], seconds=0)
    return arrays, state


@posix_only
def test_sigkill_at_random_moments_then_resume_ends_exactly_as_a_run_left_alone(photos, tmp_path):
    flags = ["--epochs", "40", *RUN]
    alone = subprocess.run(cli_command("train", photos, "--out", tmp_path / "alone", *flags), env=ENV,
                           capture_output=True, text=True, timeout=300)
    assert alone.returncode == 0, alone.stderr
    out, rng = tmp_path / "killed", np.random.default_rng(0)
    for _ in range(6):
        resume = ["--resume"] if (out / "checkpoint.npz").exists() else []
        run = subprocess.Popen(cli_command("train", photos, "--out", out, *flags, *resume), env=ENV,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        saved = checkpoint_time(out)
        deadline = time.monotonic() + 120
        while checkpoint_time(out) == saved and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)  # every run gets somewhere: killed after its first save, however slow the machine
        time.sleep(rng.uniform(0, 0.3))  # then at a random moment: inside a step, a save, ...
        run.kill()
        run.wait()
        for model_file in out.glob("*.npz"):  # whatever the moment, every file left behind is complete
            Sequential.load(model_file)
    assert read_trainer_state(out / "checkpoint.npz")["epoch"] >= 5  # each of the six runs got further
    finished = subprocess.run(cli_command("train", photos, "--out", out, *flags,
                                          *(["--resume"] if (out / "checkpoint.npz").exists() else [])),
                              env=ENV, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    assert not [name for name in os.listdir(out) if name.startswith(".")]  # no temporary file, no lock
    (alone_arrays, alone_state), (arrays, state) = checkpoint_contents(tmp_path / "alone" / "checkpoint.npz"), \
        checkpoint_contents(out / "checkpoint.npz")
    assert state == alone_state and arrays.keys() == alone_arrays.keys()
    for name, value in alone_arrays.items():
        np.testing.assert_array_equal(arrays[name], value, err_msg=name)


@posix_only
def test_two_runs_into_one_folder(photos, tmp_path):
    out = tmp_path / "run"
    first = subprocess.Popen(cli_command("train", photos, "--out", out, "--epochs", "500", *RUN), env=ENV,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while not (out / "checkpoint.npz").exists() and first.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert first.poll() is None, first.stderr.read()
        second = subprocess.run(cli_command("train", photos, "--out", out, "--epochs", "2", *RUN), env=ENV,
                                capture_output=True, text=True, timeout=120)
        assert second.returncode == 2 and "Traceback" not in second.stderr
        assert f"in use by another run (process {first.pid}" in second.stderr
        assert first.poll() is None  # the first run goes on
    finally:
        first.kill()
        first.wait()
    third = subprocess.run(cli_command("train", photos, "--out", out, "--epochs", "2", *RUN), env=ENV,
                           capture_output=True, text=True, timeout=120)
    assert third.returncode == 2 and "already holds a run" in third.stderr  # past the dead run's lock
    assert read_trainer_state(out / "checkpoint.npz")["settings"]["epochs"] == 500
