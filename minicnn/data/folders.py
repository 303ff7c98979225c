"""Folders of images, one sub-folder per class, decoded once into memory as uint8 (N, 3, S, S)."""
import os
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image, ImageOps

from ..validate import integer
from .cache import cached_images

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def class_folders(root):
    """The sorted names of the sub-folders of ``root`` (one per class), hidden ones (``.ipynb_checkpoints``) left out;
    empty if ``root`` is no folder."""
    if not os.path.isdir(root):
        return []
    return sorted(d for d in os.listdir(root) if not d.startswith(".") and os.path.isdir(os.path.join(root, d)))


def image_files(folder):
    """The sorted names of the image files in ``folder``: known extensions, hidden files (``._photo.jpg``) left out."""
    return sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith(".")
                  and os.path.isfile(os.path.join(folder, f)))


def load_image(path, size):
    """Decode ``path`` to RGB uint8 of shape (3, size, size).

    The EXIF orientation of phone photos is applied; greyscale, palette,
    RGBA (alpha dropped), CMYK and 16-bit images become 8-bit RGB (16-bit
    values scaled by 255/65535, not clipped to white; a 32-bit "I" image
    whose values all fit in 8 bits is taken as 8-bit). The shorter side is
    resized to ``size`` (bilinear, antialiased), then the centre
    ``size x size`` square is cropped, so the aspect ratio is kept and only
    the edges of the longer side are lost.

    Raises OSError (Pillow's) for a file that is no readable image, and
    ValueError for one larger than Pillow's decompression-bomb limit
    (``PIL.Image.MAX_IMAGE_PIXELS``): such a file would take gigabytes to decode.
    """
    size = integer(size, "size", "load_image")
    try:
        im = Image.open(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ValueError(f"{path}: too many pixels to decode safely, a possible decompression bomb ({e})") from e
    with im:
        limit = Image.MAX_IMAGE_PIXELS
        if limit and im.width * im.height > limit:
            raise ValueError(f"{path}: {im.width}x{im.height} pixels, more than Pillow's decompression-bomb limit "
                             f"of {limit} (PIL.Image.MAX_IMAGE_PIXELS)")
        im.draft("RGB", (size, size))  # lets the JPEG decoder skip detail we would throw away
        im = _to_rgb(ImageOps.exif_transpose(im))
        w, h = im.size
        scale = size / min(w, h)
        new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
        im = im.resize((new_w, new_h), Image.BILINEAR, reducing_gap=2.0)
        left, top = (new_w - size) // 2, (new_h - size) // 2
        im = im.crop((left, top, left + size, top + size))
        return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)


def _to_rgb(im):
    """8-bit RGB from any mode Pillow decodes to; 16- and 32-bit greyscale are scaled, not clipped."""
    if im.mode.startswith("I;16") or im.mode in ("I", "F"):
        values = np.asarray(im, dtype=np.float64)
        brightest = values.max(initial=0)
        # The scale the values are on: 16 bits for I;16; for 32-bit ints 8 bits if they fit, else 16;
        # for floats [0, 1] or 0..255; beyond its scale, the brightest pixel is white.
        if im.mode == "F":
            top = 1.0 if brightest <= 1 else 255.0
        else:
            top = 255.0 if im.mode == "I" and brightest <= 255 else 65535.0
        top = max(top, brightest)
        return Image.fromarray(np.clip(np.round(values * (255 / top)), 0, 255).astype(np.uint8), "L").convert("RGB")
    if im.mode in ("P", "PA"):
        im = im.convert("RGBA")  # palette transparency, then dropped like any alpha channel
    return im.convert("RGB")


class ImageFolder:
    """The images of ``root/<class name>/*.jpg`` (and png, bmp, ...), decoded once into memory.

    Args:
        root: the folder holding one sub-folder per class (hidden folders
            and files, whose names start with ".", are left out).
        image_size: S, a positive int; every image becomes (3, S, S), see :func:`load_image`.
        classes: the class names in index order; by default the sorted
            sub-folder names. Pass the training set's classes for the
            validation set so that the indices agree: ``root`` must then
            hold a folder for each of them, and no other.
        workers: decoding threads (Pillow releases the GIL while decoding).
        cache: a folder for the decoded-image cache (:mod:`minicnn.data.cache`,
            e.g. ``default_cache_dir()``): a second load reads the images from
            there, memory-mapped, unless the files changed. None decodes every time.

    Attributes:
        images: uint8 (N, 3, S, S).   labels: int64 (N,).
        classes: list of names.       paths: list of N file paths.
        skipped: files that could not be decoded (named in one warning, with the reason).

    A class none of whose images can be decoded is an error.
    """

    def __init__(self, root, image_size, classes=None, workers=None, cache=None):
        root = os.fspath(root)
        image_size = integer(image_size, "image_size", "ImageFolder")
        if os.path.exists(root) and not os.path.isdir(root):
            raise NotADirectoryError(f"ImageFolder: {root!r} is a file, not a folder of class folders")
        if not os.path.isdir(root):
            raise FileNotFoundError(f"ImageFolder: no such folder {root!r}")
        workers = None if workers is None else integer(workers, "workers", "ImageFolder")
        found = class_folders(root)
        classes = list(classes) if classes is not None else found
        if not all(isinstance(c, str) for c in classes) or len(set(classes)) != len(classes):
            raise ValueError(f"ImageFolder: classes must be distinct folder names, got {classes}")
        if len(classes) < 2:
            raise ValueError(f"ImageFolder: {root!r} needs a sub-folder per class and at least two classes, found {found}")
        missing = [c for c in classes if c not in found]
        extra = [c for c in found if c not in classes]
        if missing or extra:
            what = "; ".join(part for part in (f"no folder for the classes {missing}" if missing else "",
                                               f"folders for classes the model does not know: {extra}" if extra else "")
                             if part)
            raise ValueError(f"ImageFolder: {root!r} does not match the classes {classes}: {what} (it has {found})")
        paths, labels = [], []
        for index, name in enumerate(classes):
            folder = os.path.join(root, name)
            files = image_files(folder)
            if not files:
                raise ValueError(f"ImageFolder: the class folder {folder!r} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
            paths += [os.path.join(folder, f) for f in files]
            labels += [index] * len(files)
        _check_memory(len(paths), image_size)

        def decode(paths):
            return decode_images(paths, image_size, workers)

        images, failures = decode(paths) if cache is None else cached_images(paths, image_size, decode, cache)
        self.skipped = [p for p in paths if p in failures]
        if failures:
            shown = "; ".join(f"{p} ({why})" for p, why in list(failures.items())[:5])
            more = f"; and {len(failures) - 5} more" if len(failures) > 5 else ""
            warnings.warn(f"ImageFolder: skipped {len(failures)} unreadable image(s) in {root!r}: {shown}{more}", stacklevel=2)
        keep = [i for i, p in enumerate(paths) if p not in failures]
        empty = [classes[c] for c in range(len(classes)) if not any(labels[i] == c for i in keep)]
        if empty:
            raise ValueError(f"ImageFolder: none of the images of the class(es) {empty} in {root!r} could be decoded")
        self.root, self.classes, self.image_size = root, classes, image_size
        self.paths = [paths[i] for i in keep]
        self.images = images
        self.labels = np.array([labels[i] for i in keep], dtype=np.int64)

    def __len__(self):
        return len(self.labels)

    def __repr__(self):
        counts = ", ".join(f"{c}: {int((self.labels == i).sum())}" for i, c in enumerate(self.classes))
        return f"ImageFolder({self.root!r}, {len(self)} images of {self.image_size}x{self.image_size}; {counts})"


def decode_images(paths, image_size, workers=None):
    """Decode ``paths`` in threads: uint8 (K, 3, S, S) of those that decode, in order, and
    ``{path: reason}`` for the others."""
    def decode(path):
        try:
            return load_image(path, image_size), None
        except Exception as e:  # Pillow raises many kinds for truncated or corrupt files: each means "unreadable"
            return None, f"{type(e).__name__}: {e}"

    with warnings.catch_warnings(), ThreadPoolExecutor(workers or min(8, (os.cpu_count() or 1) * 2)) as pool:
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # load_image refuses those files itself
        decoded = list(pool.map(decode, paths))
    images = [im for im, _ in decoded if im is not None]
    images = np.stack(images) if images else np.empty((0, 3, image_size, image_size), dtype=np.uint8)
    return images, {p: why for p, (im, why) in zip(paths, decoded) if im is None}


def _check_memory(count, image_size):
    """Refuse, before decoding, a data set that cannot fit in this machine's memory at ``image_size``."""
    needed = count * 3 * image_size * image_size
    try:
        available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not POSIX: no way to ask
        return
    if needed > available:
        raise ValueError(f"ImageFolder: {count} images of 3x{image_size}x{image_size} would need {needed / 2**30:.1f} GiB "
                         f"in memory, more than this machine's {available / 2**30:.1f} GiB; choose a smaller image size")
