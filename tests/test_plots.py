import numpy as np
import pytest
from PIL import Image

pytest.importorskip("matplotlib")
from minicnn.plots import plot_confusion_matrix, plot_feature_maps, plot_filters, plot_history  # noqa: E402


def png_size(path):
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


def test_plots_are_pngs_of_sensible_size(tmp_path):
    history = [dict(epoch=e, train_loss=1 / e, val_loss=1.2 / e, train_accuracy=0.5 + e / 20, val_accuracy=0.5 + e / 25)
               for e in range(1, 6)]
    plot_history(history, tmp_path / "curves.png")
    plot_confusion_matrix(np.array([[5, 1], [2, 7]]), ["cat", "dog"], tmp_path / "cm.png")
    plot_filters(np.random.default_rng(0).standard_normal((16, 3, 3, 3)), tmp_path / "filters.png")
    plot_feature_maps(np.random.default_rng(0).standard_normal((12, 8, 8)), tmp_path / "maps.png", title="maps")
    width, height = png_size(tmp_path / "curves.png")
    assert width > 600 and height > 250
    for name in ("cm.png", "filters.png", "maps.png"):
        width, height = png_size(tmp_path / name)
        assert width > 100 and height > 50
