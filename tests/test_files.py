"""Files: model and checkpoint files of every wrong kind, atomic writes and interruptions, the run folder's
lock, leftover temporary files, and the image files a photo folder really holds."""
import json
import os
import shutil
import stat
import subprocess
import sys
import time
import warnings
import zipfile

import numpy as np
import pytest
from PIL import Image

import minicnn.fileio as fileio
from minicnn import SGD, Conv2D, Dense, Flatten, ReLU, Sequential
from minicnn.checkpoint import load_checkpoint
from minicnn.data import ImageFolder, load_image
from minicnn.fileio import RunLock, atomic_write

from conftest import make_image_folder

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX permissions and processes")


def tiny_model():
    return Sequential([Conv2D(3, 2, 3), ReLU(), Flatten(), Dense(2 * 2 * 2, 2)])


def write_npz(path, **arrays):
    np.savez(path, **arrays)


HOSTILE_FILES = {
    "empty.npz": (lambda p: p.write_bytes(b""), ValueError, "an empty file"),
    "array.npy": (lambda p: np.save(p, np.zeros(3)), ValueError, r"a NumPy \.npy array, not a minicnn model"),
    "text.npz": (lambda p: p.write_text("weights: 1, 2, 3"), ValueError, r"not a minicnn model file \(it is not a \.npz"),
    "other.zip": (lambda p: zipfile.ZipFile(p, "w").writestr("readme.txt", "hi"), ValueError, "no architecture header"),
    "plain.npz": (lambda p: write_npz(p, a=np.zeros(2)), ValueError, "no architecture header"),
    "truncated.npz": (lambda p: p.write_bytes(p.with_name("good.npz").read_bytes()[:300]), ValueError, "damaged or truncated"),
    "tail-cut.npz": (lambda p: p.write_bytes(p.with_name("good.npz").read_bytes()[:-20]), ValueError, "damaged or truncated"),
    "bad-header.npz": (lambda p: write_npz(p, __header__=np.array("{not json")), ValueError, "header is not JSON"),
    "old-format.npz": (lambda p: write_npz(p, __header__=np.array('{"format": 99, "layers": []}')), ValueError, "format 99"),
    "folder.npz": (lambda p: p.mkdir(), IsADirectoryError, "a folder, not a minicnn model file"),
    "missing.npz": (lambda p: None, FileNotFoundError, "No such file"),
}


@pytest.mark.parametrize("name", HOSTILE_FILES)
def test_every_wrong_model_file_gets_one_clear_error_naming_it(tmp_path, name):
    tiny_model().save(tmp_path / "good.npz")
    make, error, words = HOSTILE_FILES[name]
    path = tmp_path / name
    make(path)
    model = tiny_model()
    before = {k: v.copy() for k, v in model.params.items()}
    for load in (Sequential.load, model.load_weights, lambda p: load_checkpoint(p, model, SGD(model, lr=0.1))):
        with pytest.raises(error, match=words) as info:
            load(path)
        assert name in str(info.value)
    for key, value in model.params.items():  # nothing was half-loaded
        np.testing.assert_array_equal(value, before[key])


def test_mismatched_and_corrupt_contents_are_refused_before_anything_changes(tmp_path):
    model = tiny_model()
    model.save(tmp_path / "good.npz")
    with np.load(tmp_path / "good.npz") as f:
        arrays = {k: f[k] for k in f.files}
    for name, change, words in [("nan", lambda a: a["3.W"].__setitem__((0, 0), np.nan), "3.W .* NaN or infinite"),
                                ("ints", lambda a: a.__setitem__("3.b", np.zeros(2, np.int64)), "3.b .* dtype int64"),
                                ("shape", lambda a: a.__setitem__("3.b", np.zeros(3, np.float32)), r"3.b .* shape \(3,\)")]:
        broken = {k: v.copy() for k, v in arrays.items()}
        change(broken)
        np.savez(tmp_path / f"{name}.npz", **broken)
        target = tiny_model()
        first = target.params["0.W"].copy()
        with pytest.raises(ValueError, match=words):
            target.load_weights(tmp_path / f"{name}.npz")
        np.testing.assert_array_equal(target.params["0.W"], first)  # layer 0 came before the bad array: untouched
    with pytest.raises(ValueError, match="a model file, not a training checkpoint"):
        load_checkpoint(tmp_path / "good.npz", model, SGD(model, lr=0.1))
    loaded = Sequential([Conv2D(3, 2, 3), ReLU(), Flatten(), Dense(8, 2)]).astype(np.float64).load_weights(tmp_path / "good.npz")
    assert loaded.dtype == np.float64  # cast into the model's dtype, as PyTorch's load_state_dict copies


def test_saving_names_the_target_and_refuses_what_cannot_be_stored(tmp_path):
    model = tiny_model()
    with pytest.raises(FileNotFoundError, match=r"cannot write the file.*'.*no-folder/m.npz'"):
        model.save(tmp_path / "no-folder" / "m.npz")
    (tmp_path / "taken").mkdir()
    with pytest.raises(IsADirectoryError, match="is a folder"):
        model.save(tmp_path / "taken")
    model.metadata = {"classes": np.array(["cat", "dog"])}
    with pytest.raises(TypeError, match="m.npz: cannot save the model: its metadata .* not JSON-friendly"):
        model.save(tmp_path / "m.npz")
    with pytest.raises(TypeError, match="path must be a str or os.PathLike, got None"):
        Sequential.load(None)
    with pytest.raises(TypeError, match="cannot write a file: the path must be a str or os.PathLike, got None"):
        atomic_write(None, lambda f: f.write(b"x"))  # as minicnn.onnx.export(model, None) calls it
    assert os.listdir(tmp_path) == ["taken"]  # no file and no temporary file left anywhere


# --- atomic writes and interruptions --------------------------------------------

def test_an_interruption_while_writing_keeps_the_old_file_and_stays_an_interruption(tmp_path):
    target = tmp_path / "checkpoint.npz"
    target.write_text("the good old checkpoint")

    def interrupted(f):
        f.write(b"half of the new one")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, interrupted)
    assert target.read_text() == "the good old checkpoint" and os.listdir(tmp_path) == ["checkpoint.npz"]


def test_an_interruption_right_after_the_rename_loses_nothing(tmp_path, monkeypatch):
    # The lost checkpoint: clean-up deleted the (already renamed) temporary file and the
    # FileNotFoundError replaced the KeyboardInterrupt.
    real_replace = os.replace

    def replace_then_ctrl_c(src, dst):
        real_replace(src, dst)
        raise KeyboardInterrupt

    monkeypatch.setattr(fileio.os, "replace", replace_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "checkpoint.npz", lambda f: f.write(b"complete"))
    assert (tmp_path / "checkpoint.npz").read_bytes() == b"complete" and os.listdir(tmp_path) == ["checkpoint.npz"]


@posix_only
def test_atomic_write_leaves_the_permissions_of_a_plain_write(tmp_path):
    permissions = lambda path: stat.S_IMODE(os.stat(path).st_mode)  # noqa: E731
    previous = os.umask(0o027)
    try:
        atomic_write(tmp_path / "new.txt", lambda f: f.write("x"), mode="w")
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
    finally:
        os.umask(previous)
    assert permissions(tmp_path / "new.txt") == permissions(plain) == 0o640
    existing = tmp_path / "existing.txt"
    existing.write_text("old")
    existing.chmod(0o604)
    atomic_write(existing, lambda f: f.write("new"), mode="w")
    assert existing.read_text() == "new" and permissions(existing) == 0o604


def dead_pid():
    """The PID of a process that has ended (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@posix_only
def test_temporary_files_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    dead = tmp_path / f".best.npz.abc123.{fileio.HOST}.{dead_pid()}.tmp"
    live = tmp_path / f".best.npz.def456.{fileio.HOST}.{os.getpid()}.tmp"
    elsewhere = tmp_path / f".best.npz.ghi789.other-host.{dead_pid()}.tmp"
    unrelated = tmp_path / ".notes.tmp"
    for path in (dead, live, elsewhere, unrelated):
        path.write_bytes(b"x")
    atomic_write(tmp_path / "best.npz", lambda f: f.write(b"model"))
    assert sorted(os.listdir(tmp_path)) == sorted(["best.npz", live.name, elsewhere.name, unrelated.name])


@posix_only
def test_the_run_lock_refuses_a_live_holder_and_takes_over_a_dead_ones(tmp_path):
    lock_file = tmp_path / RunLock.NAME
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock_file.write_text(json.dumps({"host": fileio.HOST, "pid": holder.pid, "started": "then"}))
        with pytest.raises(FileExistsError, match=rf"in use by another run \(process {holder.pid}"):
            RunLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()
    (tmp_path / f".history.csv.x.{fileio.HOST}.{holder.pid}.tmp").write_text("left by the killed run")
    with RunLock(tmp_path):  # the holder is dead: its lock is taken over, its temporary file removed
        assert json.loads(lock_file.read_text())["pid"] == os.getpid()
        with RunLock(tmp_path):  # re-entrant
            pass
        assert lock_file.exists()
    assert os.listdir(tmp_path) == []
    lock_file.write_text(json.dumps({"host": "another-machine", "pid": 1}))
    with pytest.raises(FileExistsError, match="on another-machine"):
        RunLock(tmp_path).acquire()


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="Linux's /proc tells a zombie process")
def test_the_run_lock_of_a_zombie_is_taken_over_and_an_odd_program_name_is_no_zombie(tmp_path):
    """A holder that has exited but is not reaped yet (no init process in a container, an MPI abort) holds nothing.
    A live holder whose program name reads like a zombie's state ("a) Z (b") still holds its lock."""
    lock_file = tmp_path / RunLock.NAME
    odd_name = tmp_path / "a) Z (b"
    odd_name.symlink_to(shutil.which("sleep"))
    live = subprocess.Popen([str(odd_name), "60"])
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        for _ in range(500):  # until it has exited; no wait() or poll(): those would reap it
            if open(f"/proc/{zombie.pid}/stat", "rb").read().rsplit(b")", 1)[1].split()[0] == b"Z":
                break
            time.sleep(0.01)
        else:
            pytest.fail("the child did not exit")
        assert open(f"/proc/{live.pid}/stat").read().startswith(f"{live.pid} (a) Z (b) ")
        lock_file.write_text(json.dumps({"host": fileio.HOST, "pid": live.pid, "started": "then"}))
        with pytest.raises(FileExistsError, match=rf"in use by another run \(process {live.pid}"):
            RunLock(tmp_path).acquire()
        lock_file.write_text(json.dumps({"host": fileio.HOST, "pid": zombie.pid, "started": "then"}))
        with RunLock(tmp_path):
            assert json.loads(lock_file.read_text())["pid"] == os.getpid()
        assert not lock_file.exists()
    finally:
        live.kill()
        live.wait()
        zombie.wait()


# --- image files ------------------------------------------------------------------

def test_exif_orientation_16_bit_and_odd_modes(tmp_path):
    photo = Image.new("RGB", (40, 20), (255, 0, 0))
    photo.paste((0, 0, 255), (0, 0, 20, 20))  # left half blue
    exif = photo.getexif()
    exif[0x0112] = 6  # the camera was turned: display rotated 90 degrees clockwise, the left half on top
    photo.save(tmp_path / "phone.jpg", exif=exif)
    image = load_image(tmp_path / "phone.jpg", 8)
    assert image[2, 0].mean() > 200 and image[0, 0].mean() < 60 and image[0, -1].mean() > 200
    grey16 = (np.arange(32 * 32).reshape(32, 32) * 64).astype(np.uint16)  # 0..65472
    Image.fromarray(grey16).save(tmp_path / "grey16.png")
    assert Image.open(tmp_path / "grey16.png").mode.startswith("I")
    image = load_image(tmp_path / "grey16.png", 32)
    np.testing.assert_allclose(image[0].astype(float), grey16 / 257, atol=1.5)  # scaled, not clipped to white
    colour = (200, 100, 50)
    for mode in ("L", "P", "RGBA", "CMYK", "LA", "I"):
        suffix = "tif" if mode in ("CMYK", "I") else "png"
        Image.new("RGB", (6, 6), colour).convert(mode).save(tmp_path / f"{mode}.{suffix}")
        image = load_image(tmp_path / f"{mode}.{suffix}", 4)
        expected = colour if mode in ("P", "RGBA", "CMYK") else (124,) * 3  # greyscale keeps the luminance
        np.testing.assert_allclose(image[:, 0, 0], expected, atol=6, err_msg=mode)


def test_decompression_bombs_are_unreadable_files_not_crashes(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # the photos of make_image_folder have at most 900 pixels
    Image.new("RGB", (45, 25)).save(tmp_path / "warned.png")    # above the limit: Pillow warns
    Image.new("RGB", (50, 50)).save(tmp_path / "refused.png")   # above twice the limit: Pillow raises
    for name in ("warned.png", "refused.png"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with pytest.raises(ValueError, match=f"{name}: .*decompression bomb"):
                load_image(tmp_path / name, 8)
    make_image_folder(tmp_path / "data", per_class=2)
    os.replace(tmp_path / "refused.png", tmp_path / "data" / "red" / "huge.png")
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable image\(s\).*huge.png \(ValueError: .*decompression bomb"):
        data = ImageFolder(tmp_path / "data", 8)
    assert len(data) == 4


def test_hidden_folders_and_files_are_never_classes_or_images(tmp_path):
    make_image_folder(tmp_path, per_class=2)
    (tmp_path / ".ipynb_checkpoints").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / ".ipynb_checkpoints" / "x.png")
    (tmp_path / "red" / "._0.jpg").write_bytes(b"macOS resource fork")
    (tmp_path / "red" / ".DS_Store").write_bytes(b"\0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing skipped: the hidden files are not even tried
        data = ImageFolder(tmp_path, 8)
    assert data.classes == ["blue", "red"] and len(data) == 4


def test_class_folders_must_match_and_a_class_must_have_readable_images(tmp_path):
    make_image_folder(tmp_path / "val", per_class=2)
    (tmp_path / "val" / "green").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "val" / "green" / "0.png")
    with pytest.raises(ValueError, match=r"folders for classes the model does not know: \['green'\]"):
        ImageFolder(tmp_path / "val", 8, classes=["blue", "red"])
    with pytest.raises(ValueError, match=r"no folder for the classes \['yellow'\]"):
        ImageFolder(tmp_path / "val", 8, classes=["blue", "green", "red", "yellow"])
    for name in os.listdir(tmp_path / "val" / "green"):
        (tmp_path / "val" / "green" / name).write_bytes(b"broken")
    with pytest.warns(UserWarning), pytest.raises(ValueError, match=r"none of the images of the class\(es\) \['green'\]"):
        ImageFolder(tmp_path / "val", 8)
    with pytest.raises(ValueError, match="ImageFolder: image_size must be a positive int, got 0"):
        ImageFolder(tmp_path / "val", 0)
