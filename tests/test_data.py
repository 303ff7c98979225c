import gzip
import os
import struct

import numpy as np
import pytest
from PIL import Image

from minicnn.data import (Augment, DataLoader, ImageFolder, Normalize, bilinear_sample, channel_stats, load_image,
                          read_mnist, resize)

from conftest import host, make_image_folder

MNIST = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "mnist")


def test_image_folder(tmp_path):
    with pytest.warns(UserWarning):
        data = ImageFolder(make_image_folder(tmp_path, corrupt=True), 16)
    assert data.classes == ["blue", "red"]
    assert data.images.shape == (6, 3, 16, 16) and data.images.dtype == np.uint8
    assert data.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert data.skipped == [str(tmp_path / "red" / "broken.jpg")]
    assert data.images[data.labels == 1, 0].mean() > data.images[data.labels == 1, 2].mean()
    assert "blue: 3, red: 3" in repr(data)


def test_corrupt_images_are_skipped_with_one_warning(tmp_path):
    make_image_folder(tmp_path, corrupt=True)
    (tmp_path / "blue" / "empty.png").write_bytes(b"")
    with pytest.warns(UserWarning, match=r"skipped 2 unreadable image\(s\).*(broken.jpg|empty.png)") as record:
        ImageFolder(tmp_path, 8)
    assert len(record) == 1


def test_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        ImageFolder(tmp_path / "nowhere", 8)
    os.makedirs(tmp_path / "cat")
    Image.new("RGB", (10, 10)).save(tmp_path / "cat" / "a.png")
    with pytest.raises(ValueError, match="at least two classes"):
        ImageFolder(tmp_path, 8)
    os.makedirs(tmp_path / "dog")
    with pytest.raises(ValueError, match="dog.*holds no images"):
        ImageFolder(tmp_path, 8)
    with pytest.raises(ValueError, match=r"no folder for the classes \['fox'\]"):
        ImageFolder(tmp_path, 8, classes=["cat", "fox"])


def test_load_image_keeps_the_aspect_ratio_and_crops_the_centre(tmp_path):
    pixels = np.zeros((20, 60, 3), dtype=np.uint8)
    pixels[:, :20] = [255, 0, 0]
    pixels[:, 20:40] = [0, 255, 0]
    pixels[:, 40:] = [0, 0, 255]
    Image.fromarray(pixels).save(tmp_path / "wide.png")
    image = load_image(tmp_path / "wide.png", 10)
    assert image.shape == (3, 10, 10)
    assert (image[1] > 200).all() and (image[0] < 50).all()  # only the green middle third survives


def test_channel_stats():
    images = np.random.default_rng(0).integers(0, 256, (7, 3, 5, 4)).astype(np.uint8)
    mean, std = channel_stats(images)
    x = images / 255.0
    np.testing.assert_allclose(mean, x.mean(axis=(0, 2, 3)), rtol=1e-6)
    np.testing.assert_allclose(std, x.std(axis=(0, 2, 3)), rtol=1e-5)
    assert mean.dtype == std.dtype == np.float32


def test_data_loader_batches(backend):
    images = np.arange(10 * 2 * 3 * 3, dtype=np.uint8).reshape(10, 2, 3, 3)
    labels = np.arange(10)
    loader = DataLoader(images, labels, 4, Normalize([0.1, 0.2], [0.5, 0.25], backend=backend), backend=backend)
    batches = list(loader)
    assert len(loader) == len(batches) == 3
    assert [len(y) for _, y in batches] == [4, 4, 2]
    x, y = batches[0]
    assert x.dtype == np.float32 and x.shape == (4, 2, 3, 3) and backend.is_native(x)
    expected = (images[:4] / 255 - np.array([0.1, 0.2])[:, None, None]) / np.array([0.5, 0.25])[:, None, None]
    np.testing.assert_allclose(host(backend, x), expected, rtol=1e-5)
    np.testing.assert_array_equal(np.concatenate([host(backend, y) for _, y in batches]), labels)


@pytest.mark.parametrize("count, labels, batch_size, words", [
    (3, [0, 1], 2, "3 images but 2 labels"),
    (2, [0, 1], 0, "batch_size must be a positive int"),
    (0, [], 2, "no images"),
])
def test_data_loader_refuses_what_it_cannot_batch(count, labels, batch_size, words):
    with pytest.raises(ValueError, match=words):
        DataLoader(np.zeros((count, 1, 2, 2), np.uint8), np.array(labels, dtype=np.int64), batch_size)


def test_shuffling_is_seeded_and_changes_every_epoch(backend):
    images, labels = np.zeros((20, 1, 2, 2), np.uint8), np.arange(20)

    def orders(seed):
        loader = DataLoader(images, labels, 5, shuffle=True, seed=seed, backend=backend)
        return [np.concatenate([host(backend, y) for _, y in loader]).tolist() for _ in range(2)]

    first, second = orders(3)
    assert first == orders(3)[0] and first != second and sorted(first) == list(range(20))


def test_bilinear_sample(backend):
    x = backend.asarray(np.arange(2 * 1 * 3 * 4, dtype=np.float32).reshape(2, 1, 3, 4))
    ys, xs = np.meshgrid(np.arange(3.0), np.arange(4.0), indexing="ij")
    same = bilinear_sample(x, backend.asarray(np.stack([ys, ys])), backend.asarray(np.stack([xs, xs])))
    np.testing.assert_allclose(host(backend, same), host(backend, x), atol=1e-5)
    half = bilinear_sample(x, backend.asarray(np.full((2, 1, 1), 0.5)), backend.asarray(np.full((2, 1, 1), 2.5)))
    np.testing.assert_allclose(host(backend, half)[:, 0, 0, 0], [(2 + 3 + 6 + 7) / 4, 12 + (2 + 3 + 6 + 7) / 4])


def test_augment_shapes_determinism_and_identity(backend):
    x = backend.asarray(np.random.default_rng(0).uniform(0, 255, (6, 3, 12, 10)).astype(np.float32))
    augment = Augment()
    a = augment(x, np.random.default_rng(1))
    b = augment(x, np.random.default_rng(1))
    assert a.shape == x.shape and a.dtype == np.float32 and backend.is_native(a)
    np.testing.assert_array_equal(host(backend, a), host(backend, b))
    assert not np.allclose(host(backend, a), host(backend, x))
    identity = Augment(flip=False, zoom=0, shift=0, rotation=0, shear=0, brightness=0)
    np.testing.assert_allclose(host(backend, identity(x, np.random.default_rng(1))), host(backend, x), atol=1e-3)
    flips = Augment(zoom=0, shift=0, rotation=0, shear=0, brightness=0)(x, np.random.default_rng(2))
    for got, original in zip(host(backend, flips), host(backend, x)):
        assert np.allclose(got, original, atol=1e-3) or np.allclose(got, original[..., ::-1], atol=1e-3)


def test_resize_and_augment_to_another_size(backend):
    x = backend.asarray(np.random.default_rng(0).uniform(0, 255, (4, 3, 12, 8)).astype(np.float32))
    # Half the size with pixel centres aligned: each output pixel is the mean of a 2x2 block.
    half = host(backend, resize(x, (6, 4)))
    np.testing.assert_allclose(half, host(backend, x).reshape(4, 3, 6, 2, 4, 2).mean((3, 5)), rtol=1e-5)
    np.testing.assert_allclose(host(backend, resize(x, (12, 8))), host(backend, x), atol=1e-4)
    identity = Augment(flip=False, zoom=0, shift=0, rotation=0, shear=0, brightness=0)
    np.testing.assert_allclose(host(backend, identity(x, np.random.default_rng(1), size=(6, 4))), half, atol=1e-3)
    # The same field of view at fewer pixels: a mirrored image's small version is the small version mirrored.
    flips = Augment(zoom=0, shift=0, rotation=0, shear=0, brightness=0)(x, np.random.default_rng(2), size=(6, 4))
    for got, small in zip(host(backend, flips), half):
        assert np.allclose(got, small, atol=1e-3) or np.allclose(got, small[..., ::-1], atol=1e-3)
    rng = np.random.default_rng(3)
    small = Augment()(x, rng, size=5)
    assert small.shape == (4, 3, 5, 5) and small.dtype == x.dtype and backend.is_native(small)
    part = Augment()(x[1:3], np.random.default_rng(3), rows=(1, 3, 4), size=5)  # one process's rows, as in data parallel
    np.testing.assert_allclose(host(backend, part), host(backend, small)[1:3], rtol=1e-6)
    with pytest.raises(ValueError, match="resize: size must be a positive int or a pair of them, got 0"):
        resize(x, 0)
    with pytest.raises(TypeError, match="Augment: size must be"):
        Augment()(x, rng, size="5")


def test_data_loader_resizes_by_epoch(backend):
    images, labels = np.random.default_rng(0).integers(0, 256, (10, 3, 8, 8)).astype(np.uint8), np.arange(10)
    loader = DataLoader(images, labels, 4, shuffle=True, augment=Augment(), seed=0, backend=backend,
                        image_size=lambda epoch: 4 if epoch < 2 else None)
    assert [{x.shape for x, _ in loader} for _ in range(3)] == [{(4, 3, 4, 4), (2, 3, 4, 4)}] * 2 + [{(4, 3, 8, 8), (2, 3, 8, 8)}]
    loader.load_state_dict({"epoch": 1, "batch": 2, "seed": 0})  # a resumed loader takes its epoch's size
    assert [x.shape for x, _ in loader] == [(2, 3, 4, 4)]
    plain = DataLoader(images, labels, 4, backend=backend, image_size=4)  # without augmentation: a plain resize
    x, _ = next(iter(plain))
    np.testing.assert_allclose(host(backend, x), host(backend, resize(backend.asarray(images[:4] / 255), 4)), rtol=1e-5)
    with pytest.raises(TypeError, match="DataLoader: image_size .* must be a positive int"):
        DataLoader(images, labels, 4, image_size="4")
    with pytest.raises(ValueError, match="DataLoader: image_size .* must be a positive int, got 0"):
        DataLoader(images, labels, 4, image_size=0)
    with pytest.raises(TypeError, match=r"DataLoader: image_size\(0\) must be a positive int, got 2.5"):
        next(iter(DataLoader(images, labels, 4, image_size=lambda epoch: 2.5)))


def write_idx(path, array):
    with gzip.open(path, "wb") as f:
        f.write(struct.pack(">HBB", 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes())


def test_read_mnist_format(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28)).astype(np.uint8)
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels)
    x, y = read_mnist(tmp_path, "test")
    assert x.shape == (5, 1, 28, 28) and x.dtype == np.uint8
    np.testing.assert_array_equal(x[:, 0], images)
    assert y.tolist() == [3, 1, 4, 1, 5] and y.dtype == np.int64
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels[:4])
    with pytest.raises(ValueError, match="5 images but 4 labels"):
        read_mnist(tmp_path, "test")


@pytest.mark.skipif(not os.path.isdir(MNIST), reason="shared MNIST data not present")
def test_read_real_mnist_test_split():
    x, y = read_mnist(MNIST, "test")
    assert x.shape == (10000, 1, 28, 28) and len(y) == 10000
    assert np.bincount(y).tolist()[:2] == [980, 1135]  # the well-known class counts of the test split
