"""Grad-CAM: against the closed form it has for a network ending in global average pooling and a dense layer."""
import numpy as np
import pytest

import minicnn
from minicnn.data.augment import resize
from minicnn.explain import grad_cam
from minicnn.layers import Conv2D, Dense, GlobalAvgPool2D, MaxPool2D, ReLU


def host(backend, a):
    return backend.to_numpy(a)


def network(backend, classes):
    minicnn.seed(0)
    return minicnn.Sequential(Conv2D(3, 4, 3, padding=1), ReLU(), MaxPool2D(2), Conv2D(4, 5, 3, padding=1), ReLU(),
                              GlobalAvgPool2D(), Dense(5, classes), backend=backend).astype(np.float64)


@pytest.mark.parametrize("classes", [3, 1])
def test_grad_cam_is_the_class_activation_map_of_a_pooled_network(backend, classes):
    """With global average pooling then a dense layer, d score_k / dA_c = W[k, c] / (h w) everywhere, so Grad-CAM
    is ReLU(sum_c W[k, c] A_c), scaled to [0, 1]: the class activation map (Zhou et al., 2016)."""
    model = network(backend, classes)
    x = backend.asarray(np.random.default_rng(1).normal(size=(4, 3, 8, 8)))
    wanted = np.array([0, 2, 1, 2]) if classes == 3 else np.array([0, 1, 1, 0])
    heatmaps, used = grad_cam(model, x, classes=wanted)
    maps = host(backend, minicnn.Sequential(*model.layers[:5]).forward(x))  # (N, 5, 4, 4): the last 4-D output
    w = host(backend, model.layers[-1].params["W"])
    w = w.T if w.shape[0] == 5 else w  # (classes, 5) whatever Dense's storage
    scores = w[wanted] if classes == 3 else (2 * wanted - 1)[:, None] * w[[0] * 4]
    cam = np.maximum(np.einsum("nc,nchw->nhw", scores, maps), 0)
    cam /= cam.max(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(heatmaps, resize(cam[:, None], (8, 8))[:, 0], atol=1e-6)
    np.testing.assert_array_equal(used, wanted)
    assert heatmaps.shape == (4, 8, 8) and heatmaps.min() >= 0 and heatmaps.max() <= 1


def test_grad_cam_defaults_to_the_predicted_class_and_names_its_layers(backend):
    model = network(backend, 3)
    x = backend.asarray(np.random.default_rng(2).normal(size=(2, 3, 8, 8)))
    _, used = grad_cam(model, x)
    np.testing.assert_array_equal(used, host(backend, model.predict(x)).argmax(1))
    early, _ = grad_cam(model, x, layer="1")
    assert early.shape == (2, 8, 8)
    with pytest.raises(ValueError, match="no layer named '6'.*'0', '1', '2', '3', '4'"):
        grad_cam(model, x, layer="6")
    with pytest.raises(ValueError, match="one class per image"):
        grad_cam(model, x, classes=[0])


def test_heatmaps_are_resized_between_pixel_centres_as_pytorch_does():
    maps = np.array([[[[0.0, 1.0]]]], dtype=np.float32)  # (1, 1, 1, 2)
    np.testing.assert_allclose(resize(maps, (2, 4))[:, 0], [[[0, 0.25, 0.75, 1]] * 2])
    np.testing.assert_allclose(resize(np.full((1, 1, 3, 5), 0.5), (7, 2)), 0.5)


def test_grad_cam_uses_maps_of_more_than_one_pixel_and_checks_the_classes(backend):
    """A network that pools to 1x1 before its dense layer: the default maps are those before that pooling
    (a 1x1 map would make every heatmap constant)."""
    from minicnn.layers import AvgPool2D, Flatten
    minicnn.seed(0)
    model = minicnn.Sequential(Conv2D(3, 4, 3, padding=1), ReLU(), AvgPool2D(8), Flatten(), Dense(4, 1),
                               backend=backend).astype(np.float64)
    x = backend.asarray(np.random.default_rng(3).normal(size=(3, 3, 8, 8)))
    heatmaps, used = grad_cam(model, x, classes=[1, 0, 1])
    assert all(len(np.unique(h)) > 1 for h in heatmaps)
    for wrong in ([1, 0, 2], [1, 0, -1], [0.5, 0, 1]):  # one logit: classes 0 and 1 only
        with pytest.raises(ValueError, match="ints from 0 to 1"):
            grad_cam(model, x, classes=wrong)
