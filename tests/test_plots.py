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


def test_the_validation_curve_holds_the_validated_epochs_only(tmp_path, monkeypatch):
    import matplotlib.axes
    drawn, plot = [], matplotlib.axes.Axes.plot

    def recording_plot(self, x, y, **kwargs):
        drawn.append((kwargs["label"], list(x), list(y)))
        return plot(self, x, y, **kwargs)
    monkeypatch.setattr(matplotlib.axes.Axes, "plot", recording_plot)
    history = [dict(epoch=e, train_loss=1 / e, train_accuracy=e / 10, **(dict(val_loss=2 / e, val_accuracy=e / 20)
                                                                          if e % 2 == 0 else {})) for e in range(1, 6)]
    plot_history(history, tmp_path / "curves.png")  # as Trainer(val_every=2) writes it
    assert drawn == [("train", [1, 2, 3, 4, 5], [1, 1 / 2, 1 / 3, 1 / 4, 1 / 5]), ("val", [2, 4], [1, 1 / 2]),
                     ("train", [1, 2, 3, 4, 5], [0.1, 0.2, 0.3, 0.4, 0.5]), ("val", [2, 4], [0.1, 0.2])]
