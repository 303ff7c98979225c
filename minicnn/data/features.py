"""A frozen network's features of a set of images, computed once and cached on disk (transfer learning).

Training only a new head on a pretrained backbone, every epoch would run the same images through the same
frozen layers: the features are computed once instead, and kept beside the decoded-image cache
(:mod:`minicnn.data.cache`) as ``features-<key>.npy``. The key covers the backbone (its architecture, every
weight and statistic), the normalization, the images themselves and this format: any change and the features
are computed afresh. The file is written atomically; a missing, partial or foreign one is ignored.
"""
import hashlib
import json
import os

import numpy as np
from tqdm.auto import tqdm

from ..layers.base import layer_spec
from .cache import write_cache

FORMAT = 1
"""Raise when what these features are changes: every cached file is then recomputed."""


def features(backbone, images, normalize, batch_size=32, progress=False):
    """``backbone``'s outputs (N, ...) for the uint8 ``images`` (N, C, H, W), in evaluation mode, on the host,
    ``batch_size`` images at a time (every layer holds its input until the next batch: memory grows with it).

    ``normalize``: e.g. :class:`~minicnn.data.Normalize`, applied to each float batch (0..255 scale).
    """
    backend, out = backbone.backend, []
    with backbone.evaluating(), tqdm(total=len(images), unit="image", desc="features", disable=not progress,
                                     leave=False) as bar:
        for start in range(0, len(images), batch_size):
            x = normalize(backend.asarray(images[start:start + batch_size]).astype(backbone.dtype))
            out.append(backend.to_numpy(backbone.forward(x)))
            bar.update(len(x))
    return np.concatenate(out)


def cached_features(backbone, images, normalize, cache_dir, batch_size=32, progress=False):
    """:func:`features`, from the cache in ``cache_dir`` when it holds them (a read-only memory map), else
    computed and stored there. ``cache_dir`` None, or a ``normalize`` that is no
    :class:`~minicnn.data.Normalize` (whose numbers the key covers): no cache."""
    if cache_dir is None or not (hasattr(normalize, "mean") and hasattr(normalize, "std")):
        return features(backbone, images, normalize, batch_size, progress)
    path = os.path.join(cache_dir, f"features-{_key(backbone, images, normalize)[:32]}.npy")
    try:
        cached = np.load(path, mmap_mode="r")
        if cached.shape[0] == len(images) and cached.dtype == backbone.dtype:
            return cached
    except (OSError, ValueError):  # missing, partial, foreign: computed afresh
        pass
    result = features(backbone, images, normalize, batch_size, progress)
    write_cache("features", cache_dir, (path, lambda f: np.save(f, result), "wb"))
    return result


def _key(backbone, images, normalize):
    """What decides the features: the backbone's layers and arrays, the normalization, the images, this format."""
    digest = hashlib.sha256(json.dumps([FORMAT, layer_spec(backbone), str(backbone.dtype),
                                        normalize.mean.tolist(), normalize.std.tolist(), images.shape]).encode())
    for _, array in sorted({**backbone.params, **backbone.buffers}.items()):
        digest.update(np.ascontiguousarray(backbone.backend.to_numpy(array)).tobytes())
    digest.update(np.ascontiguousarray(images).data)
    return digest.hexdigest()
