"""The command line given every wrong thing once: one line 'minicnn ...: error: ...' on stderr, exit status 2,
never a traceback; and what it must not do silently."""
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from minicnn import Dense, Sequential
from minicnn.architectures import build, check_batch_size
from minicnn.checkpoint import read_trainer_state
from minicnn.cli import main

from conftest import make_image_folder

TRAIN = ["--image-size", "8", "--arch", "catdog-small", "--batch-size", "4", "--quiet"]


@pytest.fixture(scope="module")
def data_dir(photos):
    return photos


@pytest.fixture(scope="module")
def run_dir(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli-run") / "run"
    assert main(["train", str(data_dir), "--epochs", "1", "--lr", "0.01", "--out", str(out), *TRAIN]) == 0
    return out


def fails(argv, capsys, *words):
    """Run the command; it must exit with status 2 and end stderr with one error line holding ``words``."""
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own errors
        code = e.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"minicnn {argv[0]}: error: "), err
    assert "[Errno" not in last, last  # what went wrong and the file, not Python's repr of an OSError
    for word in words:
        assert word in last, last
    return last


@pytest.mark.parametrize("flags, words", [
    (["--epochs", "0"], ["--epochs", "0"]),
    (["--sync-bn", "--local-bn"], ["--local-bn", "not allowed with", "--sync-bn"]),
    (["--epochs", "two"], ["--epochs", "'two'"]),
    (["--batch-size", "0"], ["--batch-size"]),
    (["--image-size", "0"], ["--image-size"]),
    (["--image-size", "100000"], ["--image-size", "1024"]),
    (["--patience", "0"], ["--patience"]),
    (["--lr", "0"], ["--lr", "> 0"]),
    (["--lr", "-0.1"], ["--lr"]),
    (["--lr", "nan"], ["--lr", "'nan'"]),
    (["--lr", "inf"], ["--lr"]),
    (["--weight-decay", "-1"], ["--weight-decay"]),
    (["--seed", "-1"], ["--seed"]),
    (["--out", ""], ["--out"]),
    (["--arch", "resnet-9000"], ["unknown architecture 'resnet-9000'"]),
    (["--image-size", "4"], ["image size 4 is too small"]),
    # catdog-resnet at 16 px has BatchNorm2D on 1x1 maps: a batch of one image is refused before training,
    # not at the last step of the first epoch (12 training images: the last batch of 11 holds one)
    (["--arch", "catdog-resnet", "--image-size", "16", "--batch-size", "11"],
     ["batch size 11 (--batch-size) with 12 training images", "the last batch of each epoch holds one image"]),
    (["--arch", "catdog-resnet", "--image-size", "16", "--batch-size", "1"], ["every batch holds one image"]),
    (["--val-every", "0"], ["--val-every"]),
    (["--full-size-epochs", "0"], ["--full-size-epochs"]),
    (["--low-res-size", "-1"], ["--low-res-size"]),
    (["--low-res-size", "4"], ["--low-res-size 4 needs --full-size-epochs"]),
    (["--low-res-size", "8", "--full-size-epochs", "1"], ["--low-res-size 8 must be smaller than --image-size 8"]),
    # progressive resizing needs a network that takes any size: catdog-small ends in a Dense on the flattened maps
    (["--image-size", "16", "--low-res-size", "8", "--full-size-epochs", "1"],
     ["--low-res-size 8: catdog-small cannot train on images of that size", "such as catdog-resnet"]),
    (["--arch", "catdog-resnet", "--image-size", "16", "--low-res-size", "2", "--full-size-epochs", "1"],
     ["--low-res-size 2: catdog-resnet cannot", "smaller than the 2x2 window"]),
])
def test_bad_training_flags(data_dir, tmp_path, capsys, flags, words):
    fails(["train", str(data_dir), "--out", str(tmp_path / "run"), *TRAIN, *flags], capsys, *words)
    assert not os.path.exists(tmp_path / "run" / "checkpoint.npz")


def test_bad_folders_fail_before_any_data_is_loaded(data_dir, tmp_path, capsys):
    (tmp_path / "a-file").write_text("x")
    fails(["train", str(data_dir), "--out", str(tmp_path / "a-file"), *TRAIN], capsys, "a-file", "is a file, not a folder")
    fails(["train", str(data_dir), "--out", str(tmp_path / "a-file" / "run"), *TRAIN], capsys, "cannot make the run folder")
    fails(["train", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r1"), *TRAIN], capsys, "must hold train/ and val/")
    fails(["train", str(data_dir / "train"), "--out", str(tmp_path / "r2"), *TRAIN], capsys, "val")
    fails(["train", str(data_dir), "--out", str(tmp_path / "r3"), "--resume", *TRAIN], capsys,
          "nothing to resume", "checkpoint.npz")
    extra = tmp_path / "extra"
    make_image_folder(extra / "train", per_class=2)
    make_image_folder(extra / "val", per_class=1)
    os.makedirs(extra / "val" / "green")
    Image.new("RGB", (8, 8)).save(extra / "val" / "green" / "0.png")
    fails(["train", str(extra), "--out", str(tmp_path / "r4"), *TRAIN], capsys, "['green']")


def test_a_refused_run_leaves_no_folder_it_made_behind(data_dir, tmp_path, capsys):
    fails(["train", str(tmp_path / "nowhere"), "--out", str(tmp_path / "new" / "run"), *TRAIN], capsys,
          "train/ and val/")
    fails(["train", str(data_dir), "--out", str(tmp_path / "r"), "--resume", *TRAIN], capsys, "nothing to resume")
    # refused after the photos are loaded: catdog-resnet cannot take a last batch of one image at 16 px
    fails(["train", str(data_dir), "--out", str(tmp_path / "late"), *TRAIN, "--arch", "catdog-resnet",
           "--image-size", "16", "--batch-size", "11"], capsys, "--batch-size")
    (tmp_path / "mine").mkdir()  # a folder that was there before is never removed
    fails(["train", str(tmp_path / "nowhere"), "--out", str(tmp_path / "mine"), *TRAIN], capsys, "train/ and val/")
    assert sorted(os.listdir(tmp_path)) == ["mine"] and not os.listdir(tmp_path / "mine")


def test_a_file_error_is_what_went_wrong_and_the_file(tmp_path, capsys):
    (tmp_path / "a-file").write_text("x")
    line = fails(["train", str(tmp_path), "--out", str(tmp_path / "a-file"), *TRAIN], capsys)
    assert line == f"minicnn train: error: the run folder is a file, not a folder: {tmp_path / 'a-file'}"
    line = fails(["predict", str(tmp_path / "missing.npz"), str(tmp_path / "a-file")], capsys)
    assert line == f"minicnn predict: error: No such file or directory: {tmp_path / 'missing.npz'}"


def test_a_batch_of_one_image_is_refused_only_where_it_cannot_train():
    model, _ = build("catdog-resnet", 96, 2)
    check_batch_size(model, 96, 1, 12)  # its last BatchNorm2D sees 3x3 maps: nine values per channel
    assert model.training
    with pytest.raises(ValueError, match="with 9 training images: the last batch"):
        check_batch_size(model, 32, 4, 9)  # 1x1 maps at 32 px
    check_batch_size(model, 32, 4, 12, processes=2)  # two images per process
    with pytest.raises(ValueError, match="every batch holds one image for one of the 2 processes"):
        check_batch_size(model, 32, 3, 12, processes=2)  # data-parallel, plain BatchNorm2D: parts of 1 and 2


def test_float64_models_evaluate_and_predict_in_float64(data_dir, run_dir, tmp_path, capsys):
    model = Sequential.load(run_dir / "best.npz").astype(np.float64)
    model.save(tmp_path / "f64.npz")
    photo = str(data_dir / "val" / "red" / "0.jpg")
    assert main(["predict", str(run_dir / "best.npz"), photo]) == 0
    single = capsys.readouterr().out
    assert main(["predict", str(tmp_path / "f64.npz"), photo]) == 0
    double = capsys.readouterr().out
    assert single.split("(")[0] == double.split("(")[0]  # the same class
    assert main(["evaluate", str(tmp_path / "f64.npz"), str(data_dir), "--tta"]) == 0
    assert "accuracy" in capsys.readouterr().out


def test_a_bad_thread_count_is_named_before_any_work(data_dir, run_dir):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]),
           "MINICNN_NUM_THREADS": "0"}
    result = subprocess.run([sys.executable, "-c", "import sys; from minicnn.cli import main; sys.exit(main())", "predict",
                             str(run_dir / "best.npz"), str(data_dir / "val" / "red" / "0.jpg")],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2 and result.stderr.strip() == (
        "minicnn predict: error: MINICNN_NUM_THREADS must be a positive integer, got '0'")


def test_an_explicit_learning_rate_is_used_and_recorded(run_dir):
    settings = read_trainer_state(run_dir / "checkpoint.npz")["settings"]
    assert settings["lr"] == 0.01 and settings["image_size"] == 8  # not the default 0.05


def test_a_finished_run_is_never_overwritten_and_resumes_only_with_its_own_flags(data_dir, run_dir, capsys):
    before = (run_dir / "best.npz").read_bytes()
    fails(["train", str(data_dir), "--epochs", "1", "--out", str(run_dir), *TRAIN], capsys,
          "already holds a run", "checkpoint.npz", "--resume")
    line = fails(["train", str(data_dir), "--epochs", "1", "--lr", "0.02", "--image-size", "16", "--out", str(run_dir),
                  "--resume", "--quiet", "--arch", "catdog-small", "--batch-size", "4"], capsys, "other settings")
    assert "image_size: 8 in the checkpoint, 16 now" in line and "lr: 0.01 in the checkpoint, 0.02 now" in line
    assert (run_dir / "best.npz").read_bytes() == before
    assert main(["train", str(data_dir), "--epochs", "1", "--lr", "0.01", "--out", str(run_dir), "--resume", *TRAIN]) == 0


def test_a_diverging_run_is_one_line(data_dir, tmp_path, capsys):
    fails(["train", str(data_dir), "--epochs", "2", "--lr", "1e30", "--out", str(tmp_path / "run"), *TRAIN], capsys,
          "epoch 1", "NaN", "last sound epoch")
    assert sorted(os.listdir(tmp_path / "run")) == ["checkpoint.npz"]  # written at the start; nothing diverged saved


@pytest.fixture
def odd_models(tmp_path, run_dir):
    np.save(tmp_path / "weights.npy", np.zeros(3))
    (tmp_path / "empty.npz").write_bytes(b"")
    (tmp_path / "half.npz").write_bytes((run_dir / "best.npz").read_bytes()[:1000])
    Sequential([Dense(2, 2)]).save(tmp_path / "plain.npz")  # not saved by 'minicnn train'
    model = Sequential.load(run_dir / "best.npz")
    model.metadata["classes"] = ["cat", "dog", "fox"]  # three names for two outputs
    model.save(tmp_path / "three.npz")
    return tmp_path


@pytest.mark.parametrize("command", ["evaluate", "predict"])
@pytest.mark.parametrize("name, words", [
    ("weights.npy", [".npy array"]), ("empty.npz", ["an empty file"]), ("half.npz", ["damaged or truncated"]),
    ("plain.npz", ["not saved by 'minicnn train'"]), ("three.npz", ["3 classes"]), ("missing.npz", ["No such file"]),
    (".", ["a folder, not a minicnn model file"]),
])
def test_bad_model_files(data_dir, odd_models, capsys, command, name, words):
    fails([command, str(odd_models / name), str(data_dir) if command == "evaluate" else str(data_dir / "val" / "red" / "0.jpg")],
          capsys, *words)


def test_evaluate_on_the_wrong_folder(data_dir, run_dir, tmp_path, capsys):
    model = str(run_dir / "best.npz")
    fails(["evaluate", model, str(tmp_path / "nowhere")], capsys, "no such folder")
    fails(["evaluate", model, str(data_dir / "val" / "red")], capsys, "trained for the classes")
    fails(["evaluate", model, str(data_dir), "--batch-size", "0"], capsys, "--batch-size")


def test_predict_reports_each_unreadable_photo_and_predicts_the_others(data_dir, run_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    Image.new("RGB", (50, 50)).save(tmp_path / "bomb.png")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff broken")
    good = [str(data_dir / "val" / "red" / name) for name in sorted(os.listdir(data_dir / "val" / "red"))]
    photos = [good[0], str(tmp_path / "bomb.png"), str(tmp_path / "broken.jpg"), str(tmp_path / "absent.jpg"),
              str(tmp_path), good[1]]
    assert main(["predict", str(run_dir / "best.npz"), *photos]) == 1
    out, err = capsys.readouterr()
    assert [line.split(": ")[0] for line in out.splitlines()] == good[:2]
    assert "Traceback" not in err and len(err.splitlines()) == 4
    assert "bomb.png: cannot read image" in err and "decompression bomb" in err and "absent.jpg" in err


def test_the_real_command_prints_no_traceback(data_dir, run_dir, tmp_path):
    # The entry point itself, in a fresh process: flags, files and folders of every kind above end in one line.
    cases = [["train", str(data_dir), "--epochs", "0"], ["evaluate", str(tmp_path), str(data_dir)],
             ["train", str(data_dir), "--out", str(run_dir), *TRAIN]]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])}
    for argv in cases:
        result = subprocess.run([sys.executable, "-c", "import sys; from minicnn.cli import main; sys.exit(main())", *argv],
                                capture_output=True, text=True, env=env, timeout=120)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert result.stderr.strip().splitlines()[-1].startswith(f"minicnn {argv[0]}: error: ")


def test_warnings_are_one_line_each(run_dir, tmp_path):
    """A cache folder that cannot be made and an unreadable photo: each warning one line, like the errors
    (not Python's 'file:line: UserWarning: ...' followed by the source line)."""
    data = make_image_folder(tmp_path / "photos", corrupt=True)
    (tmp_path / "a-file").write_text("")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "MINICNN_CACHE_DIR": str(tmp_path / "a-file" / "cache"),
           "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-m", "minicnn", "evaluate", str(run_dir / "best.npz"), str(data)],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert result.returncode == 0 and "accuracy" in result.stdout, result.stderr
    cache, skipped = result.stderr.splitlines()
    assert cache.startswith("minicnn evaluate: warning: cannot write the decoded-image cache (") and "[Errno" not in cache
    assert str(tmp_path / "a-file") in cache and cache.endswith("or turn the cache off (--no-cache)")
    assert skipped.startswith("minicnn evaluate: warning: ImageFolder: skipped 1 unreadable image(s) in ")
