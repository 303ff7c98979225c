import json
import os

import numpy as np
import pytest

import minicnn
from minicnn import SGD, Adam, Conv2D, Dense, Flatten, MaxPool2D, ReLU, Sequential, SoftmaxCrossEntropy
from minicnn.data import DataLoader, Normalize
from minicnn.schedules import cosine_schedule, step_schedule
from minicnn.train import Trainer, TrainingDiverged, evaluate

from conftest import host


def toy_data(n=48, seed=0):
    """Images whose class is whether the top half is brighter than the bottom half."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 100, (n, 1, 8, 8)).astype(np.uint8)
    labels = rng.integers(0, 2, n)
    images[labels == 1, :, :4] += 120
    images[labels == 0, :, 4:] += 120
    return images, labels


def toy_setup(backend, out_dir=None, lr=0.05, dtype=np.float32, **trainer_kwargs):
    minicnn.seed(0)
    model = Sequential([Conv2D(1, 4, 3, padding=1), ReLU(), MaxPool2D(2), Flatten(), Dense(64, 2)]).astype(dtype)
    images, labels = toy_data()
    normalize = Normalize([0.4], [0.3], dtype=dtype, backend=backend)
    train = DataLoader(images, labels, 16, normalize, shuffle=True, seed=1, backend=backend, dtype=dtype)
    val = DataLoader(*toy_data(32, seed=1), 16, normalize, backend=backend, dtype=dtype)
    trainer = Trainer(model, SoftmaxCrossEntropy(), SGD(model, lr=lr, momentum=0.9),
                      out_dir=out_dir, progress=False, **trainer_kwargs)
    return trainer, train, val


def test_training_reduces_the_loss_and_writes_its_files(backend, tmp_path):
    trainer, train, val = toy_setup(backend, tmp_path)
    history = trainer.fit(train, val, epochs=4)
    assert [row["epoch"] for row in history] == [1, 2, 3, 4]
    assert history[-1]["train_loss"] < 0.6 * history[0]["train_loss"]
    assert history[-1]["val_accuracy"] > 0.8
    assert sorted(os.listdir(tmp_path)) == ["best.npz", "checkpoint.npz", "history.csv", "history.json", "model.npz"]
    final = Sequential.load(tmp_path / "model.npz")  # the model after the last epoch, not the best one
    assert all(np.array_equal(host(backend, final.params[k]), host(backend, v)) for k, v in trainer.model.params.items())
    assert json.load(open(tmp_path / "history.json")) == history
    assert open(tmp_path / "history.csv").readline().strip().split(",")[:3] == ["epoch", "lr", "train_loss"]
    best = Sequential.load(tmp_path / "best.npz")
    best_row = min(history, key=lambda row: row["val_loss"])
    assert evaluate(final, SoftmaxCrossEntropy(), val)["loss"] == pytest.approx(history[-1]["val_loss"], rel=1e-5)
    assert evaluate(best, SoftmaxCrossEntropy(), val)["loss"] == pytest.approx(best_row["val_loss"], rel=1e-5)


def test_float64_training_follows_float32(backend):
    histories = {}
    for dtype in (np.float32, np.float64):
        trainer, train, val = toy_setup(backend, dtype=dtype)
        train.augment = minicnn.data.Augment()
        assert next(iter(train))[0].dtype == dtype
        histories[dtype] = trainer.fit(train, val, epochs=2)
        assert trainer.model.dtype == dtype
    # float32's rounding, a few eps relative to the magnitudes in each sum, carried through 6 steps of SGD with
    # momentum, then a loss as small as 0.002: each image's log-sum-exp of 1 + (a small sum) is off by up to
    # eps/2 of 1, at most 250 eps of such a loss. Seen: up to 20 eps, on AVX-512 and AVX2. 1e-4 is 840 eps; a step
    # lost or taken twice, or augmentation in one dtype only, moves a loss by 1% or more.
    for single, double in zip(histories[np.float32], histories[np.float64]):
        assert single["train_loss"] == pytest.approx(double["train_loss"], rel=1e-4)
        assert single["val_loss"] == pytest.approx(double["val_loss"], rel=1e-4)


def test_resume_continues_where_it_stopped(backend, tmp_path):
    trainer, train, val = toy_setup(backend, tmp_path / "a")
    straight = trainer.fit(train, val, epochs=4)
    first, train, val = toy_setup(backend, tmp_path / "b")
    first.fit(train, val, epochs=2)
    second, train, val = toy_setup(backend, tmp_path / "b")
    resumed = second.fit(train, val, epochs=4, resume=True)
    assert [row["epoch"] for row in resumed] == [1, 2, 3, 4]
    for a, b in zip(straight, resumed):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)


def test_ctrl_c_saves_a_checkpoint_and_returns(backend, tmp_path):
    trainer, train, val = toy_setup(backend, tmp_path)
    real_iter = DataLoader.__iter__
    batches = []

    def interrupted_iter(self):
        for batch in real_iter(self):
            batches.append(1)
            if len(batches) == 7:  # epoch 1 is 3 training + 2 validation batches
                raise KeyboardInterrupt
            yield batch

    DataLoader.__iter__ = interrupted_iter
    try:
        history = trainer.fit(train, val, epochs=3)
    finally:
        DataLoader.__iter__ = real_iter
    assert trainer.interrupted and len(history) == 1
    assert os.path.exists(tmp_path / "checkpoint.npz")
    again, train, val = toy_setup(backend, tmp_path)
    assert len(again.fit(train, val, epochs=3, resume=True)) == 3


@pytest.mark.filterwarnings("ignore:overflow", "ignore:invalid value")
def test_nan_loss_stops_with_epoch_and_step(backend):
    trainer, train, val = toy_setup(backend, lr=1e30)
    with pytest.raises(TrainingDiverged, match=r"epoch 1, steps? \d+"):
        trainer.fit(train, val, epochs=2)


def test_early_stopping(backend, tmp_path):
    trainer, train, val = toy_setup(backend, tmp_path, patience=2)
    # A rate of 0 (as a schedule may set): the weights, so the validation loss, never change.
    # (A tiny rate could still move the loss by a rounding error, which counts as an improvement.)
    trainer.optimizer.lr = 0.0
    history = trainer.fit(train, val, epochs=10)
    assert len(history) == 3  # the first epoch sets the best, two more without improvement


def test_validating_every_few_epochs(backend, tmp_path):
    trainer, train, val = toy_setup(backend, tmp_path, val_every=2)
    history = trainer.fit(train, val, epochs=5)
    assert ["val_loss" in row for row in history] == [False, True, False, True, True]  # and always the last epoch
    assert trainer.best == min(row["val_loss"] for row in history if "val_loss" in row)
    with open(tmp_path / "history.csv") as f:
        assert f.read().splitlines()[1].endswith(",,")  # epoch 1: empty validation cells
    trainer, train, val = toy_setup(backend, tmp_path / "patience", val_every=2, patience=1)
    trainer.optimizer.lr = 0.0  # the validation loss never improves after the first validation
    assert len(trainer.fit(train, val, epochs=10)) == 4  # patience counts validations: epochs 2 and 4
    with pytest.raises(ValueError, match="Trainer: val_every must be a positive int, got 0"):
        toy_setup(backend, val_every=0)


def test_schedules():
    step = step_schedule(0.1, 10, gamma=0.5)
    assert step(0) == 0.1 and step(9.9) == 0.1 and step(10) == 0.05 and step(25) == 0.025
    cosine = cosine_schedule(0.1, 10, min_lr=0.01, warmup_epochs=2)
    assert cosine(0) < 0.001 and cosine(1) == pytest.approx(0.05, rel=1e-2)
    assert cosine(2) == pytest.approx(0.1) and cosine(6) == pytest.approx(0.055) and cosine(10) == pytest.approx(0.01)


def test_schedule_sets_the_optimizer_rate(backend):
    trainer, train, val = toy_setup(backend)
    trainer.schedule = step_schedule(0.05, 1, gamma=0.1)
    history = trainer.fit(train, None, epochs=2)
    assert history[0]["lr"] == pytest.approx(0.05) and history[1]["lr"] == pytest.approx(0.005)


def test_optimizer_state_survives_a_checkpoint(backend, tmp_path):
    model = Sequential([Dense(3, 2)])
    opt = Adam(model, lr=0.01)
    model.forward(backend.asarray(np.ones((2, 3), np.float32)))
    model.backward(backend.asarray(np.ones((2, 2), np.float32)))
    opt.step()
    state = opt.state_dict()
    other = Adam(model, lr=0.5)
    other.load_state_dict(state)
    assert other.lr == 0.01 and other.steps == 1
    for key, value in opt.state.items():
        np.testing.assert_array_equal(host(backend, other.state[key]), host(backend, value))


def test_a_head_trained_on_cached_features_is_saved_with_its_backbone(backend, tmp_path):
    """Transfer learning: the loop trains the head on the frozen backbone's features; model.npz and best.npz
    hold the whole network (``deployed``), which scores on the images what the head scored on the features."""
    from minicnn.data.features import features
    minicnn.seed(0)
    backbone = Sequential(Conv2D(1, 4, 3, padding=1), ReLU(), MaxPool2D(2), Flatten(), backend=backend)
    head = Sequential(Dense(64, 2), backend=backend)
    whole = Sequential(*backbone.layers, *head.layers, backend=backend)  # the same layer objects, shared
    normalize = Normalize([0.4], [0.3], backend=backend)
    (images, labels), (val_images, val_labels) = toy_data(), toy_data(32, seed=1)
    train = DataLoader(features(backbone, images, normalize), labels, 16, shuffle=True, seed=1, backend=backend)
    val = DataLoader(features(backbone, val_images, normalize), val_labels, 16, backend=backend)
    trainer = Trainer(head, SoftmaxCrossEntropy(), SGD(head, lr=0.05, momentum=0.9), out_dir=tmp_path,
                      progress=False, verbose=False, deployed=lambda model: whole)
    history = trainer.fit(train, val, epochs=3)
    saved = Sequential.load(tmp_path / "model.npz", backend)
    assert len(saved.layers) == len(whole.layers) and len(Sequential.load(tmp_path / "checkpoint.npz").layers) == 1
    on_images = evaluate(saved, SoftmaxCrossEntropy(backend=backend),
                         DataLoader(val_images, val_labels, 16, normalize, backend=backend))
    assert on_images["accuracy"] == history[-1]["val_accuracy"]
    assert on_images["loss"] == pytest.approx(history[-1]["val_loss"], rel=1e-5)


def test_a_stop_agreed_between_epochs_interrupts_the_run(backend, tmp_path):
    """A stop another process asked for (a callback's agree) ends the run as a Ctrl-C here would: interrupted,
    with a checkpoint at the epoch boundary."""
    from minicnn.callbacks import Callback

    class StopAfterFirstEpoch(Callback):
        def agree(self, *flags):
            return (True,) if len(flags) == 1 and trainer.epoch == 1 else flags

    trainer, train, val = toy_setup(backend, out_dir=tmp_path, verbose=False, callbacks=[StopAfterFirstEpoch()])
    history = trainer.fit(train, val, epochs=3)
    assert len(history) == 1 and trainer.interrupted
    from minicnn.checkpoint import read_trainer_state
    assert read_trainer_state(tmp_path / "checkpoint.npz")["epoch"] == 1
