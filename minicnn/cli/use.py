"""``minicnn evaluate``, ``predict`` and ``export``: what a trained model is used for."""
import os
import sys
import warnings

import numpy as np
from PIL import Image

from .. import backend as backends
from ..data import DataLoader, ImageFolder, Normalize, class_folders, load_image
from ..data.cache import default_cache_dir
from ..functional import probabilities
from ..losses import loss_for
from ..metrics import classification_report, confusion_matrix, format_confusion_matrix, roc_auc
from ..model import Sequential
from ..train import evaluate


MAX_IMAGE_SIZE = 1024


def report(model, loss_fn, dataset, batch_size, tta=False):
    """The classification report and confusion matrix of ``model`` on an ImageFolder, as text, and the accuracy;
    ``tta``: each image's logits averaged with its mirror image's."""
    classes = model.metadata["classes"]
    normalize = Normalize.from_metadata(model.metadata, model.dtype, backend=model.backend)
    loader = DataLoader(dataset.images, dataset.labels, batch_size, normalize, backend=model.backend)
    result = evaluate(model, loss_fn, loader, tta=tta)
    probs = result["probabilities"]
    predicted = probs.argmax(axis=1)
    text = [classification_report(dataset.labels, predicted, classes), "",
            format_confusion_matrix(confusion_matrix(dataset.labels, predicted, len(classes)), classes)]
    if len(classes) == 2:
        text.append(f"\nROC AUC {roc_auc(dataset.labels, probs[:, 1]):.4f}")
    text.append(f"loss {result['loss']:.4f}, accuracy {result['accuracy']:.4f}")
    return "\n".join(text), result["accuracy"]


def load_trained(path, backend):
    """The model saved by ``minicnn train`` at ``path``, on ``backend``; a clear error for any other file, or one
    whose metadata does not fit the network (image size, number of classes)."""
    model = Sequential.load(path, backend)
    meta = model.metadata
    missing = [k for k in ("classes", "image_size", "mean", "std") if k not in meta]
    if missing:
        raise ValueError(f"{path}: this model was not saved by 'minicnn train' (its metadata lacks {missing})")
    classes, size = meta["classes"], meta["image_size"]
    if not (isinstance(classes, list) and len(classes) >= 2 and all(isinstance(c, str) for c in classes)):
        raise ValueError(f"{path}: its metadata's classes must be a list of at least two names, got {classes!r}")
    if not (isinstance(size, int) and not isinstance(size, bool) and 1 <= size <= MAX_IMAGE_SIZE):
        raise ValueError(f"{path}: its metadata's image_size must be an int from 1 to {MAX_IMAGE_SIZE}, got {size!r}")
    normalize = Normalize.from_metadata(meta, model.dtype, backend=backend)  # float64 models too
    try:
        outputs = model.predict(normalize(model.backend.xp.zeros((1, 3, size, size), dtype=np.uint8))).shape[1:]
    except (ValueError, TypeError) as e:
        raise ValueError(f"{path}: the network does not take the {size}x{size} RGB images its metadata names ({e})") from e
    units = outputs[0] if outputs else 1  # (N,) logits: one unit
    if units != len(classes) and not (units == 1 and len(classes) == 2):
        raise ValueError(f"{path}: the network gives {units} output(s) per image, which does not fit the "
                         f"{len(classes)} classes of its metadata")
    return model


def run_evaluate(args):
    model = load_trained(args.model, backends.get_backend(args.backend))
    classes = model.metadata["classes"]
    folder = args.data_dir
    present = class_folders(folder)
    if not set(classes) <= set(present) and "val" in present:
        folder = os.path.join(folder, "val")  # a train/val data folder: evaluate on val
        present = class_folders(folder)
    if os.path.isdir(folder) and set(present) != set(classes):
        raise ValueError(f"{args.model} was trained for the classes {classes}, but {folder!r} holds {present}")
    dataset = ImageFolder(folder, model.metadata["image_size"], classes=classes, cache=_cache(args))
    print(f"{dataset}\n{report(model, loss_for(model), dataset, args.batch_size, args.tta)[0]}")
    return 0


def _cache(args):
    """Where decoded images are cached (:mod:`minicnn.data.cache`), or None with --no-cache."""
    return None if args.no_cache else default_cache_dir()


def run_predict(args):
    model = load_trained(args.model, backends.get_backend(args.backend))
    classes, size = model.metadata["classes"], model.metadata["image_size"]
    normalize = Normalize.from_metadata(model.metadata, model.dtype, backend=model.backend)
    failed = 0
    for path in args.images:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # load_image refuses those files itself
                image = load_image(path, size)[None]
        except Exception as e:  # Pillow raises many kinds for unreadable files; one photo's must not stop the others
            why = e.strerror if isinstance(e, OSError) and e.strerror else f"{type(e).__name__}: {e}"
            print(f"{path}: cannot read image ({why})", file=sys.stderr)
            failed += 1
            continue
        x = normalize(model.backend.asarray(image))
        probs = model.backend.to_numpy(probabilities(model.predict(x, tta=args.tta)))[0]
        best = int(probs.argmax())
        print(f"{path}: {classes[best]} ({probs[best]:.3f})")
    return 1 if failed else 0


def run_export(args):
    from ..onnx import export  # without the extra: an ImportError naming the install command (a user error)
    model = Sequential.load(args.model)
    export(model, args.out, input=args.input, output="logits" if args.logits else "probabilities",
           input_shape=args.input_shape)
    print(f"wrote {args.out} (input: {args.input}, output: {'logits' if args.logits else 'probabilities'})")
    return 0
