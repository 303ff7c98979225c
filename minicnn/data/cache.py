"""Decoded images cached on disk, so that a second start (and every process of a data-parallel run) skips decoding.

Decoding thousands of JPEGs takes minutes; reading them back as one uint8
array takes a memory map. The cache of a folder at one image size is two
files in the cache folder: ``images-<id>.npy`` (uint8 (N, 3, S, S), the
images that decoded) and ``images-<id>.json`` (which files failed, and the
key). The key covers the file list, each file's size and modification time,
the image size and the decoder (Pillow's version, this format's version): any
change and the cache is rebuilt. Both files are written atomically, the
``.json`` last; a missing, partial or foreign file is ignored and rebuilt.

The cache folder is ``$MINICNN_CACHE_DIR``, else ``$XDG_CACHE_HOME/minicnn``,
else ``~/.cache/minicnn`` (a data folder may be read-only or shared). A cache
that cannot be written costs a warning, never the run.
"""
import hashlib
import json
import os
import warnings

import numpy as np
import PIL

from ..fileio import atomic_write

FORMAT = 1
"""Raise when what ``load_image`` makes of a file changes: every cache is then rebuilt."""


def default_cache_dir():
    """``$MINICNN_CACHE_DIR``, else ``$XDG_CACHE_HOME/minicnn``, else ``~/.cache/minicnn``."""
    return (os.environ.get("MINICNN_CACHE_DIR")
            or os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "minicnn"))


def cached_images(paths, image_size, decode, cache_dir):
    """The decoded images of ``paths``, from the cache in ``cache_dir`` when it holds them, else decoded and stored.

    Args:
        paths: the image files, in order.   image_size: S.
        decode: ``paths -> (images, failures)``: uint8 (K, 3, S, S) of the files
            that decoded, in order, and ``{path: reason}`` for those that did not.
        cache_dir: the cache folder (made if need be).

    Returns:
        ``(images, failures)`` as ``decode`` gives them; from the cache, images
        is a read-only memory map (processes on one machine share its pages).
    """
    absolute = [os.path.abspath(p) for p in paths]
    key = _key(absolute, image_size)
    slot = hashlib.sha256(json.dumps([sorted({os.path.dirname(p) for p in absolute}), image_size]).encode()).hexdigest()
    stem = os.path.join(cache_dir, f"images-{slot[:24]}")
    found = _read(stem, key, image_size, len(paths))
    if found is not None:
        images, failed = found
        return images, {paths[int(i)]: why for i, why in failed.items()}
    images, failures = decode(paths)
    failed = {i: failures[p] for i, p in enumerate(paths) if p in failures}  # by position: paths may be relative
    write_cache("decoded-image", cache_dir,
                (stem + ".npy", lambda f: np.save(f, np.ascontiguousarray(images)), "wb"),
                (stem + ".json", lambda f: json.dump({"key": key, "count": len(images), "failures": failed}, f), "w"))
    return images, failures


def write_cache(what, cache_dir, *files):
    """Write ``files`` (``(path, write, mode)`` each, atomically, in order) into ``cache_dir``, made if need be.
    A cache that cannot be written costs a warning naming the ``what`` cache and why, never the run."""
    try:
        os.makedirs(cache_dir, exist_ok=True)
        for path, write, mode in files:
            atomic_write(path, write, mode=mode)
    except OSError as e:
        why = f"{e.strerror}: {e.filename}" if e.strerror and e.filename else e  # what, and where: no "[Errno N]"
        warnings.warn(f"cannot write the {what} cache ({why}); set MINICNN_CACHE_DIR to a writable folder, "
                      "or turn the cache off (--no-cache)", stacklevel=4)


def _key(paths, image_size):
    """What decides the decoded images: every file's name, size and modification time, the size S, the decoder."""
    files = []
    for path in paths:
        st = os.stat(path)
        files.append([path, st.st_size, st.st_mtime_ns])
    text = json.dumps([FORMAT, PIL.__version__, image_size, files])
    return hashlib.sha256(text.encode()).hexdigest()


def _read(stem, key, image_size, count):
    """The cached images and ``{position: reason}`` of the failed files at ``stem``, if complete and of this key; else None."""
    try:
        with open(stem + ".json") as f:
            meta = json.load(f)
        if meta.get("key") != key:
            return None
        failures = meta["failures"]
        images = np.load(stem + ".npy", mmap_mode="r")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # missing, partial, foreign: rebuild
        return None
    expected = (meta["count"], 3, image_size, image_size)
    if images.dtype != np.uint8 or images.shape != expected or not isinstance(failures, dict) \
            or meta["count"] + len(failures) != count or not all(k.isdigit() and int(k) < count for k in failures):
        return None
    return images, failures
