"""The decoded-image cache: a second load reads a memory map; any change to the files, or a damaged cache, decodes again."""
import os
import warnings

import numpy as np
import pytest

import minicnn.data.folders as folders
from minicnn.data import ImageFolder
from minicnn.data.cache import default_cache_dir

from conftest import make_image_folder


@pytest.fixture
def decodes(monkeypatch):
    """How many times images were decoded (rather than read from the cache)."""
    calls = []
    real = folders.decode_images
    monkeypatch.setattr(folders, "decode_images", lambda *args: calls.append(1) or real(*args))
    return calls


def load(root, cache, size=8):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the broken file's warning (asserted in its own test)
        return ImageFolder(root, size, cache=cache)


def test_the_second_load_reads_the_cache(tmp_path, decodes):
    root, cache = make_image_folder(tmp_path / "data", corrupt=True), tmp_path / "cache"
    first = load(root, cache)
    second = load(root, cache)
    assert len(decodes) == 1
    assert isinstance(second.images, np.memmap) and not second.images.flags.writeable
    np.testing.assert_array_equal(second.images, first.images)
    assert second.labels.tolist() == first.labels.tolist() and second.paths == first.paths
    assert second.skipped == first.skipped == [str(root / "red" / "broken.jpg")]
    np.testing.assert_array_equal(load(root, None).images, first.images)  # the same as without a cache
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):  # reported from the cache too
        ImageFolder(root, 8, cache=cache)


@pytest.mark.parametrize("change", ["touch", "add", "remove", "size"])
def test_any_change_decodes_again(tmp_path, decodes, change):
    root, cache = make_image_folder(tmp_path / "data"), tmp_path / "cache"
    before = load(root, cache)
    size = 8
    if change == "touch":
        stat = os.stat(root / "red" / "1.png")
        os.utime(root / "red" / "1.png", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    elif change == "add":
        (root / "red" / "3.png").write_bytes((root / "red" / "1.png").read_bytes())
    elif change == "remove":
        os.remove(root / "red" / "1.png")
    else:
        size = 6
    after = load(root, cache, size)
    assert len(decodes) == 2
    expected = {"touch": 6, "add": 7, "remove": 5, "size": 6}[change]
    assert len(after) == expected and after.images.shape[2] == size
    load(root, cache, size)
    assert len(decodes) == 2  # the rebuilt cache serves the next load
    if change == "touch":
        np.testing.assert_array_equal(after.images, before.images)


@pytest.mark.parametrize("damage", ["truncated images", "garbage json", "missing images", "images of another shape"])
def test_a_damaged_cache_is_rebuilt(tmp_path, decodes, damage):
    root, cache = make_image_folder(tmp_path / "data"), tmp_path / "cache"
    first = load(root, cache)
    (npy,) = [cache / f for f in os.listdir(cache) if f.endswith(".npy")]
    if damage == "truncated images":
        npy.write_bytes(npy.read_bytes()[:-50])
    elif damage == "garbage json":
        npy.with_suffix(".json").write_text("{not json")
    elif damage == "missing images":
        os.remove(npy)
    else:
        np.save(npy, np.zeros((6, 3, 4, 4), dtype=np.uint8))
    again = load(root, cache)
    assert len(decodes) == 2
    np.testing.assert_array_equal(again.images, first.images)


def test_an_unwritable_cache_warns_and_decodes(tmp_path, decodes):
    root = make_image_folder(tmp_path / "data")
    (tmp_path / "file").write_text("a file where the cache folder should be")
    with pytest.warns(UserWarning, match="cannot write the decoded-image cache.*MINICNN_CACHE_DIR"):
        data = ImageFolder(root, 8, cache=tmp_path / "file" / "cache")
    assert len(data) == 6 and len(decodes) == 1


def test_the_cache_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("MINICNN_CACHE_DIR", str(tmp_path / "mine"))
    assert default_cache_dir() == str(tmp_path / "mine")
    monkeypatch.delenv("MINICNN_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == str(tmp_path / "xdg" / "minicnn")
