"""Pictures of training and of what a network learned, as PNG files (needs matplotlib: ``pip install ".[plot]"``
in the minicnn checkout)."""
import numpy as np

from .fileio import atomic_write


def _pyplot():
    try:
        import matplotlib
    except ImportError as e:
        raise ImportError('plotting needs matplotlib: pip install ".[plot]" in the minicnn checkout '
                          "(the PyPI package named minicnn is another project)") from e
    matplotlib.use("Agg")  # files only: works without a display
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path):
    plt = _pyplot()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100, bbox_inches="tight"))
    plt.close(fig)


def plot_history(history, path):
    """Loss and accuracy curves (train and validation) of a training history, as written by the Trainer;
    epochs without validation (``Trainer(val_every=...)``) are left out of the validation curve."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("loss", "accuracy")):
        for split in ("train", "val"):
            points = [(row["epoch"], row[f"{split}_{metric}"]) for row in history if f"{split}_{metric}" in row]
            if points:
                ax.plot(*zip(*points), marker=".", label=split)
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    _save(fig, path)


def plot_confusion_matrix(cm, class_names, path):
    """A heatmap of a (K, K) confusion matrix (rows: true class, columns: predicted), with counts."""
    plt = _pyplot()
    cm = np.asarray(cm)
    fig, ax = plt.subplots(figsize=(1.2 * len(class_names) + 2, 1.2 * len(class_names) + 1.5))
    image = ax.imshow(cm, cmap="Blues")
    fig.colorbar(image, ax=ax)
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, str(v), ha="center", va="center", color="white" if v > cm.max() / 2 else "black")
    _save(fig, path)


def _grid(images, columns):
    """Tile images (K, H, W[, 3]) into one picture, each scaled to [0, 1] on its own."""
    images = np.asarray(images, dtype=np.float64)
    low = images.reshape(len(images), -1).min(1)
    high = images.reshape(len(images), -1).max(1)
    shape = (-1,) + (1,) * (images.ndim - 1)
    images = (images - low.reshape(shape)) / np.maximum(high - low, 1e-12).reshape(shape)
    rows = -(-len(images) // columns)
    h, w = images.shape[1:3]
    grid = np.ones((rows * (h + 1) - 1, columns * (w + 1) - 1) + images.shape[3:])
    for k, im in enumerate(images):
        r, c = divmod(k, columns)
        grid[r * (h + 1):r * (h + 1) + h, c * (w + 1):c * (w + 1) + w] = im
    return grid


def plot_filters(weights, path, columns=8):
    """First-layer filters (F, 3, kh, kw) as colour tiles (or (F, 1, kh, kw) as grey ones)."""
    plt = _pyplot()
    w = np.asarray(weights)
    tiles = w.transpose(0, 2, 3, 1) if w.shape[1] == 3 else w[:, 0]
    fig, ax = plt.subplots(figsize=(columns, -(-len(w) // columns) + 0.5))
    ax.imshow(_grid(tiles, columns), cmap=None if w.shape[1] == 3 else "gray", interpolation="nearest")
    ax.set_title(f"{len(w)} filters of {w.shape[2]}x{w.shape[3]}")
    ax.axis("off")
    _save(fig, path)


def plot_feature_maps(maps, path, title="", columns=8, limit=32):
    """The first ``limit`` channels of one image's feature maps (C, H, W), each normalized to its own range."""
    plt = _pyplot()
    maps = np.asarray(maps)[:limit]
    fig, ax = plt.subplots(figsize=(columns * 1.2, (-(-len(maps) // columns)) * 1.2 + 0.5))
    ax.imshow(_grid(maps, columns), cmap="viridis", interpolation="nearest")
    ax.set_title(title)
    ax.axis("off")
    _save(fig, path)


def plot_heatmaps(images, rows, path, titles=None):
    """Photos and heatmaps over them: ``images`` uint8 (K, 3, H, W); ``rows`` {row label: (K, H, W) maps in
    [0, 1]} (e.g. :func:`minicnn.explain.grad_cam`'s, one row per network); ``titles``: K column titles."""
    plt = _pyplot()
    images = np.asarray(images).transpose(0, 2, 3, 1)
    fig, axes = plt.subplots(len(rows) + 1, len(images), figsize=(2 * len(images), 2 * (len(rows) + 1)),
                             squeeze=False)
    for k, image in enumerate(images):
        axes[0, k].imshow(image)
        axes[0, k].set_title(titles[k] if titles else "", fontsize=9)
        for r, (label, maps) in enumerate(rows.items(), start=1):
            axes[r, k].imshow(image)
            axes[r, k].imshow(np.asarray(maps)[k], cmap="jet", alpha=0.45, vmin=0, vmax=1)
            if k == 0:
                axes[r, k].set_ylabel(label, fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    _save(fig, path)
