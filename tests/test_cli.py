"""The command line end to end on a tiny generated photo folder."""
import os

import pytest

from minicnn.cli import main

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
    assert {"best.npz", "checkpoint.npz", "history.csv", "history.json"} <= files
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
    assert err.startswith("minicnn export: error: ") and "pip install 'minicnn[onnx]'" in err
    assert not os.path.exists(tmp_path / "m.onnx")
