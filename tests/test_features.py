"""A frozen network's features, computed once and cached (transfer learning), and loaders over them."""
import numpy as np
import pytest

import minicnn
from minicnn.data import DataLoader, Normalize
from minicnn.data.features import cached_features, features
from minicnn.layers import Conv2D, Flatten, GlobalAvgPool2D, ReLU


def backbone(backend, seed=0):
    minicnn.seed(seed)
    return minicnn.Sequential(Conv2D(3, 4, 3), ReLU(), GlobalAvgPool2D(), Flatten(), backend=backend)


def images(n=10, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, 3, 8, 8), dtype=np.uint8)


def test_features_are_the_backbones_outputs_in_evaluation_mode(backend):
    net, x = backbone(backend), images()
    normalize = Normalize([120, 110, 100], [60, 50, 40], backend=backend)
    got = features(net, x, normalize, batch_size=4)
    want = backend.to_numpy(net.predict(normalize(backend.asarray(x))))
    assert got.shape == (10, 4) and isinstance(got, np.ndarray)
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_cached_features_are_read_back_and_recomputed_when_anything_they_depend_on_changes(backend, tmp_path):
    net, x = backbone(backend), images()
    normalize = Normalize([120, 110, 100], [60, 50, 40], backend=backend)
    first = cached_features(net, x, normalize, tmp_path)
    assert len(list(tmp_path.glob("features-*.npy"))) == 1
    again = cached_features(net, x, normalize, tmp_path)
    assert isinstance(again, np.memmap) and np.array_equal(again, first)  # read back, not recomputed
    changes = [(backbone(backend, seed=1), x, normalize),  # other weights
               (net, images(seed=1), normalize),  # other images
               (net, x, Normalize([0, 0, 0], [1, 1, 1], backend=backend))]  # another normalization
    for other_net, other_x, other_normalize in changes:
        got = cached_features(other_net, other_x, other_normalize, tmp_path)
        np.testing.assert_allclose(got, features(other_net, other_x, other_normalize), rtol=1e-6)
    assert len(list(tmp_path.glob("features-*.npy"))) == 4
    next(tmp_path.glob("features-*.npy")).write_bytes(b"torn")  # a partial file is recomputed, not read
    for args in [(net, x, normalize), *changes]:
        assert cached_features(*args, tmp_path).shape == (10, 4)


def test_a_loader_batches_features_as_they_are(backend):
    feats = np.random.default_rng(0).normal(size=(10, 4)).astype(np.float32)
    labels = np.arange(10) % 2
    loader = DataLoader(feats, labels, 4, shuffle=True, seed=3, backend=backend)
    batches = list(loader)
    assert [len(y) for _, y in batches] == [4, 4, 2]
    seen = np.concatenate([backend.to_numpy(x) for x, _ in batches])
    assert sorted(map(tuple, seen)) == sorted(map(tuple, feats))  # every row once, unchanged
    with pytest.raises(ValueError, match="float features are batched as they are"):
        DataLoader(feats, labels, 4, normalize=lambda x: x)


def test_a_cache_folder_that_cannot_be_written_costs_a_warning_not_the_features(tmp_path):
    net, x = backbone("numpy"), images()
    normalize = Normalize([120, 110, 100], [60, 50, 40])
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    with pytest.warns(UserWarning, match="cannot write the features cache.*MINICNN_CACHE_DIR"):
        got = cached_features(net, x, normalize, blocked)
    np.testing.assert_allclose(got, features(net, x, normalize), rtol=1e-6)
