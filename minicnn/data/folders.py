"""Folders of images, one sub-folder per class, decoded once into memory as uint8 (N, 3, S, S)."""
import os
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def class_folders(root):
    """The sorted names of the sub-folders of ``root`` (one per class); empty if ``root`` is no folder."""
    if not os.path.isdir(root):
        return []
    return sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))


def load_image(path, size):
    """Decode ``path`` to RGB uint8 of shape (3, size, size).

    The shorter side is resized to ``size`` (bilinear, antialiased), then the
    centre ``size x size`` square is cropped, so the aspect ratio is kept
    and only the edges of the longer side are lost.
    """
    with Image.open(path) as im:
        im.draft("RGB", (size, size))  # lets the JPEG decoder skip detail we would throw away
        im = im.convert("RGB")
        w, h = im.size
        scale = size / min(w, h)
        new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
        im = im.resize((new_w, new_h), Image.BILINEAR, reducing_gap=2.0)
        left, top = (new_w - size) // 2, (new_h - size) // 2
        im = im.crop((left, top, left + size, top + size))
        return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)


class ImageFolder:
    """The images of ``root/<class name>/*.jpg`` (and png, bmp, ...), decoded once into memory.

    Args:
        root: the folder holding one sub-folder per class.
        image_size: S; every image becomes (3, S, S), see :func:`load_image`.
        classes: the class names in index order; by default the sorted
            sub-folder names. Pass the training set's classes for the
            validation set so that the indices agree.
        workers: decoding threads (Pillow releases the GIL while decoding).

    Attributes:
        images: uint8 (N, 3, S, S).   labels: int64 (N,).
        classes: list of names.       paths: list of N file paths.
        skipped: files that could not be decoded (each warned about once).
    """

    def __init__(self, root, image_size, classes=None, workers=None):
        root = os.fspath(root)
        if not os.path.isdir(root):
            raise FileNotFoundError(f"ImageFolder: no such folder {root!r}")
        found = class_folders(root)
        classes = list(classes) if classes is not None else found
        if len(classes) < 2:
            raise ValueError(f"ImageFolder: {root!r} needs a sub-folder per class and at least two classes, found {found}")
        missing = [c for c in classes if c not in found]
        if missing:
            raise ValueError(f"ImageFolder: {root!r} has no folder for the classes {missing} (it has {found})")
        paths, labels = [], []
        for index, name in enumerate(classes):
            folder = os.path.join(root, name)
            files = sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS))
            if not files:
                raise ValueError(f"ImageFolder: the class folder {folder!r} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
            paths += [os.path.join(folder, f) for f in files]
            labels += [index] * len(files)

        def decode(path):
            try:
                return load_image(path, image_size)
            except (OSError, ValueError, SyntaxError):  # what Pillow raises for truncated or corrupt files
                return None

        with ThreadPoolExecutor(workers or min(8, (os.cpu_count() or 1) * 2)) as pool:
            decoded = list(pool.map(decode, paths))
        self.skipped = [p for p, im in zip(paths, decoded) if im is None]
        if self.skipped:
            shown = ", ".join(self.skipped[:5]) + (" ..." if len(self.skipped) > 5 else "")
            warnings.warn(f"ImageFolder: skipped {len(self.skipped)} unreadable image(s) in {root!r}: {shown}", stacklevel=2)
        keep = [i for i, im in enumerate(decoded) if im is not None]
        if not keep:
            raise ValueError(f"ImageFolder: none of the {len(paths)} images in {root!r} could be decoded")
        self.root, self.classes, self.image_size = root, classes, image_size
        self.paths = [paths[i] for i in keep]
        self.images = np.stack([decoded[i] for i in keep])
        self.labels = np.array([labels[i] for i in keep], dtype=np.int64)

    def __len__(self):
        return len(self.labels)

    def __repr__(self):
        counts = ", ".join(f"{c}: {int((self.labels == i).sum())}" for i, c in enumerate(self.classes))
        return f"ImageFolder({self.root!r}, {len(self)} images of {self.image_size}x{self.image_size}; {counts})"
