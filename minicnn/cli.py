"""The ``minicnn`` command: train, evaluate and predict on folders of images.

    minicnn train DATA_DIR --out RUN_DIR [--arch NAME] [--epochs N] [--image-size S] [--batch-size B] [--seed K] [--backend cupy]
    mpiexec -n P minicnn train ...     (data-parallel on P processes: the same model, see minicnn.distributed)
    minicnn evaluate MODEL DATA_DIR [--tta]
    minicnn predict MODEL IMAGE... [--tta]
    minicnn export MODEL OUT.onnx [--input uint8|float|raw] [--logits] [--input-shape C,H,W]
    minicnn recipes                    (each architecture's recipe: the values train's flags left out take)
"""
import argparse
import contextlib
import dataclasses
import os
import sys
import textwrap
import time
import warnings

import numpy as np
from PIL import Image

from . import backend as backends
from .architectures import ARCHITECTURES, DEFAULT_ARCHITECTURE, build, check_batch_size, recipe
from .data import Augment, DataLoader, ImageFolder, Normalize, channel_stats, class_folders, load_image
from .data.cache import default_cache_dir
from .data.loader import rows_of
from .distributed import data_parallel, only_rank_0_prints, world
from .fileio import RunLock
from .functional import probabilities
from .layers import SyncBatchNorm2D
from .losses import loss_for
from .metrics import classification_report, confusion_matrix, format_confusion_matrix, roc_auc
from .model import Sequential
from .optim import SGD, Adam
from .schedules import cosine_schedule, warmup_epochs_for
from .runfolder import check_run_folder, new_run_folder
from .train import Trainer, TrainingDiverged, evaluate
from .validate import integer, real

MAX_IMAGE_SIZE = 1024
ADAM_LR = 1e-3


def split_folders(data_dir):
    """``DATA_DIR/train`` and ``DATA_DIR/val``, or a clear error."""
    folders = [os.path.join(data_dir, name) for name in ("train", "val")]
    for folder in folders:
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"{data_dir!r} must hold train/ and val/ folders (each with one folder per class); "
                                    f"{folder!r} is missing")
    return folders


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """The flags that decide a run's result, those left out taken from the ``--arch`` recipe
    (:func:`~minicnn.architectures.recipe`): saved in the run's checkpoints, and a resume must repeat them."""
    data_dir: str
    arch: str
    image_size: int
    batch_size: int
    epochs: int
    lr: float
    weight_decay: float
    low_res_size: int  # progressive resizing: all epochs but the last full_size_epochs at this size; 0: none
    full_size_epochs: "int | None"
    val_every: int
    optimizer: str
    augment: bool
    seed: int
    patience: "int | None"
    sync_bn: bool
    local_bn: bool

    @classmethod
    def from_args(cls, args):
        values = recipe(args.arch)
        if args.optimizer == "adam":
            values["lr"] = ADAM_LR
        if args.image_size is not None and args.low_res_size is None:  # the recipe's low resolution, in proportion
            values["low_res_size"] = round(values["low_res_size"] * args.image_size / values["image_size"])
        values.update({name: getattr(args, name) for name in values if getattr(args, name) is not None})
        settings = cls(data_dir=os.path.realpath(args.data_dir), arch=args.arch, optimizer=args.optimizer,
                       augment=not args.no_augment, seed=args.seed, patience=args.patience, sync_bn=args.sync_bn,
                       local_bn=args.local_bn, **values)
        if settings.low_res_size and settings.full_size_epochs is None:
            raise ValueError(f"--low-res-size {settings.low_res_size} needs --full-size-epochs: how many of the last "
                             "epochs train at --image-size")
        if settings.low_res_size >= settings.image_size:
            raise ValueError(f"--low-res-size {settings.low_res_size} must be smaller than --image-size "
                             f"{settings.image_size} (0: no progressive resizing)")
        return settings

    def saved(self):
        """The settings as checkpoints record them: those at a default that older checkpoints lack are left out,
        so that those still resume."""
        saved = dataclasses.asdict(self)
        if not self.low_res_size:
            del saved["low_res_size"], saved["full_size_epochs"]
        for name, default in (("val_every", 1), ("sync_bn", False), ("local_bn", False)):
            if saved[name] == default:
                del saved[name]
        return saved

    def image_size_by_epoch(self):
        """For progressive resizing, ``epoch -> side`` of the training images (None: the decoded ``image_size``);
        None without."""
        if not self.low_res_size:
            return None
        low_epochs = self.epochs - self.full_size_epochs
        return lambda epoch: self.low_res_size if epoch < low_epochs else None


def run_train(args):
    comm = args.comm
    backend = backends.get_backend(args.backend)
    if comm is not None:
        backend.use_device(comm.local_rank)  # one GPU per process of a machine, before any array is made there
    settings = TrainSettings.from_args(args)
    first = comm is None or comm.rank == 0  # the process that writes files and prints
    # before anything slow: a bad or busy --out fails at once; a refused run leaves no folder it made behind
    with new_run_folder(args.out) if first else contextlib.nullcontext(), \
            RunLock(args.out) if first else contextlib.nullcontext():
        if first:
            check_run_folder(args.out, args.resume, settings.saved())
        train_dir, val_dir = split_folders(args.data_dir)
        backends.seed(args.seed)
        start = time.perf_counter()
        with comm.machine_by_machine() if comm else contextlib.nullcontext():  # one decodes, the others read its cache
            train_set = ImageFolder(train_dir, settings.image_size, cache=_cache(args))
            val_set = ImageFolder(val_dir, settings.image_size, classes=train_set.classes, cache=_cache(args))
        if first:
            print(f"{train_set}\n{val_set}\nloaded in {time.perf_counter() - start:.1f}s")
        model, loss_fn = _network(settings, train_set, comm, backend)
        normalize = Normalize.from_metadata(model.metadata, backend=backend)
        shard = None if comm is None else (comm.rank, comm.size)
        train_loader = DataLoader(train_set.images, train_set.labels, settings.batch_size, normalize, shuffle=True,
                                  augment=Augment() if settings.augment else None, seed=settings.seed, backend=backend,
                                  shard=shard, image_size=settings.image_size_by_epoch())
        part = slice(None) if comm is None else slice(*rows_of(len(val_set), comm.rank, comm.size))  # ours to validate
        val_loader = DataLoader(val_set.images[part], val_set.labels[part], settings.batch_size, normalize,
                                backend=backend)
        if settings.optimizer == "adam":
            optimizer = Adam(model, lr=settings.lr, weight_decay=settings.weight_decay)
        else:
            optimizer = SGD(model, lr=settings.lr, momentum=0.9, nesterov=True, weight_decay=settings.weight_decay)
        optimizer, callbacks = data_parallel(optimizer, comm)  # with comm: gradients summed, numbers reduced
        schedule = cosine_schedule(settings.lr, settings.epochs, warmup_epochs=warmup_epochs_for(settings.epochs))
        trainer = Trainer(model, loss_fn, optimizer, schedule, out_dir=args.out, monitor="val_accuracy",
                          patience=settings.patience, progress=not args.quiet, seed=settings.seed,
                          settings=settings.saved(), val_every=settings.val_every, callbacks=callbacks)
        history = trainer.fit(train_loader, val_loader, settings.epochs, resume=args.resume)
        if trainer.interrupted:
            return 130
        if not first:
            return 0
        try:
            from .plots import plot_history
            plot_history(history, os.path.join(args.out, "curves.png"))
        except ImportError as e:
            print(f"(no curves.png: {e})")
    final_path = os.path.join(args.out, "model.npz")
    text, accuracy = report(Sequential.load(final_path, backend), loss_fn, val_set, settings.batch_size)
    best_epoch = max((row for row in history if "val_accuracy" in row), key=lambda row: row["val_accuracy"])
    print(f"\n{text}\n\nfinal model: {final_path}")
    print(f"validation accuracy: {accuracy:.4f}  (the final model; total time {time.perf_counter() - start:.0f}s)")
    print(f"best epoch: {best_epoch['epoch']}, validation accuracy {best_epoch['val_accuracy']:.4f} "
          f"({os.path.join(args.out, 'best.npz')}; picked on this validation set, so an optimistic figure)")
    return 0


def _network(settings, train_set, comm, backend):
    """The ``--arch`` network and its loss for the training photos, checked against the batch size, with the
    metadata a saved model carries (classes, image size, normalization)."""
    model, loss_fn = build(settings.arch, settings.image_size, len(train_set.classes), backend)
    if comm is not None and not settings.local_bn:  # the statistics of the whole batch: the model of one process
        model = SyncBatchNorm2D.convert(model, comm)
    processes = comm.size if comm is not None and settings.local_bn else 1  # local: each process normalizes its part
    check_batch_size(model, settings.image_size, settings.batch_size, len(train_set.labels), processes)
    if settings.low_res_size:
        try:
            check_batch_size(model, settings.low_res_size, settings.batch_size, len(train_set.labels), processes)
        except ValueError as e:
            raise ValueError(f"--low-res-size {settings.low_res_size}: {settings.arch} cannot train on images of that "
                             f"size ({e}); progressive resizing needs a network that takes any image size, such as "
                             "catdog-resnet, and a size it can pool") from e
    mean, std = channel_stats(train_set.images)
    model.metadata = dict(classes=train_set.classes, image_size=settings.image_size, architecture=settings.arch,
                          mean=mean.tolist(), std=std.tolist())
    return model, loss_fn


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


def _checked(convert, check, **bounds):
    """An argparse type: the flag's text as ``convert`` reads it, then checked by :mod:`minicnn.validate`'s ``check``
    (which words the refusal as everywhere else)."""
    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            value = text  # refused by check as what it is: a string
        try:
            return check(value, None, None, **bounds)
        except (TypeError, ValueError) as e:  # "must be ..., got <value>": shown as typed
            raise argparse.ArgumentTypeError(f"{str(e).rsplit(', got ', 1)[0]}, got {text!r}") from None
    return parse


def _folder_flag(text):
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a folder, got an empty name")
    return text


def run_export(args):
    try:
        from .onnx import export
    except ImportError as e:  # the optional extra is missing: a user error, with the command that fixes it
        print(f"minicnn export: error: {e}", file=sys.stderr)
        return 2
    model = Sequential.load(args.model)
    export(model, args.out, input=args.input, output="logits" if args.logits else "probabilities",
           input_shape=args.input_shape)
    print(f"wrote {args.out} (input: {args.input}, output: {'logits' if args.logits else 'probabilities'})")
    return 0


def shape_argument(text):
    """``"3,32,32"`` -> (3, 32, 32)."""
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, like 3,32,32; got {text!r}") from None


RECIPE_FLAGS = (("--image-size", "image_size"), ("--batch-size", "batch_size"), ("--epochs", "epochs"),
                ("--lr (sgd)", "lr"), ("--weight-decay", "weight_decay"), ("--low-res-size", "low_res_size"),
                ("--full-size-epochs", "full_size_epochs"), ("--val-every", "val_every"))


def recipes_table():
    """Each architecture's recipe (:func:`minicnn.architectures.recipe`) as text: a row per flag of ``minicnn train``
    that takes it when left out, a column per ``--arch``."""
    names = sorted(ARCHITECTURES, key=lambda name: name != DEFAULT_ARCHITECTURE)  # the default first
    rows = [["flag left out", *(f"{name} (default)" if name == DEFAULT_ARCHITECTURE else name for name in names)]]
    for flag, key in RECIPE_FLAGS:
        values = [recipe(name)[key] for name in names]
        rows.append([flag, *("-" if v is None else f"{v:g}" if isinstance(v, float) else str(v) for v in values)])
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    notes = (f"--lr with --optimizer adam: {ADAM_LR:g}. --low-res-size 0: no progressive resizing; with --image-size\n"
             "set, the recipe's --low-res-size is scaled in proportion. --val-every N: validate after every\n"
             "N-th epoch and the last.")
    return "\n".join([*lines, "", notes])


def run_recipes(args):
    """``minicnn recipes``: the table of :func:`recipes_table`."""
    print(recipes_table())
    return 0


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """argparse's help, each flag's default appended where it has one its help does not already name; epilogs
    (the recipes table) printed as written."""

    def _get_help_string(self, action):
        text = action.help or ""
        unset = action.default is None or action.default is False or action.default is argparse.SUPPRESS
        if action.option_strings and not unset and "default" not in text:
            text += " (default: %(default)s)"
        return text


def _shared_flags():
    """The flags several commands take, each declared once (argparse parents)."""
    backend = argparse.ArgumentParser(add_help=False)
    backend.add_argument("--backend", default=argparse.SUPPRESS, choices=["numpy", "cupy"],
                         help="the same as minicnn --backend, given after the command")
    cache = argparse.ArgumentParser(add_help=False)
    cache.add_argument("--no-cache", action="store_true", help="decode every image afresh instead of reading the "
                       "decoded-image cache ($MINICNN_CACHE_DIR, else ~/.cache/minicnn)")
    trained = argparse.ArgumentParser(add_help=False)
    trained.add_argument("model", metavar="MODEL", help="a model file written by 'minicnn train' (model.npz, best.npz)")
    tta = argparse.ArgumentParser(add_help=False)
    tta.add_argument("--tta", action="store_true", help="test-time augmentation: average each image's logits with "
                                                         "its mirror image's (twice the work)")
    return backend, cache, trained, tta


def parser():
    p = argparse.ArgumentParser(prog="minicnn", description="Train and use CNNs on folders of images.",
                                formatter_class=_HelpFormatter)
    p.add_argument("--backend", default=os.environ.get("MINICNN_BACKEND", "numpy"), choices=["numpy", "cupy"],
                   help="array backend: numpy (CPU) or cupy (NVIDIA GPU) (default: $MINICNN_BACKEND, else numpy)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND",
                           help="what to do; 'minicnn COMMAND --help' lists its own arguments")
    backend, cache, trained, tta = _shared_flags()
    positive = _checked(int, integer)
    size = _checked(int, integer, minimum=1, maximum=MAX_IMAGE_SIZE)

    def command(name, help, description=None, parents=(), **kwargs):
        return sub.add_parser(name, help=help, description=textwrap.fill(description or help, 100),
                              formatter_class=_HelpFormatter, parents=[*parents, backend], **kwargs)

    t = command("train", "train a classifier on DATA_DIR/train, validating on DATA_DIR/val",
                "train a classifier on DATA_DIR/train, validating on DATA_DIR/val; the flags left out take the "
                "--arch recipe's values, listed below (also: minicnn recipes)", parents=[cache],
                epilog="recipes:\n" + recipes_table())
    t.add_argument("data_dir", metavar="DATA_DIR", help="the photos: DATA_DIR/train/<class>/*.jpg and "
                   "DATA_DIR/val/<class>/*.jpg")
    from_recipe = "(default: the --arch recipe's, listed below)"
    t.add_argument("--arch", default=DEFAULT_ARCHITECTURE, metavar="NAME",
                   help=f"the network: one of {', '.join(sorted(ARCHITECTURES))}")
    t.add_argument("--epochs", type=positive, help="passes over the training photos " + from_recipe)
    t.add_argument("--image-size", type=size, help="the side in pixels every photo is decoded to, in memory (shorter "
                   "side resized, centre crop) " + from_recipe)
    t.add_argument("--batch-size", type=positive, help="images per training step " + from_recipe)
    t.add_argument("--low-res-size", type=_checked(int, integer, minimum=0, maximum=MAX_IMAGE_SIZE),
                   help="progressive resizing: train all epochs but the last --full-size-epochs on images resampled "
                        "to this size; 0: none (default: the --arch recipe's, in proportion to --image-size)")
    t.add_argument("--full-size-epochs", type=positive, help="with --low-res-size: how many of the last epochs train "
                   "at --image-size " + from_recipe)
    t.add_argument("--val-every", type=positive, help="validate after every N-th epoch and the last " + from_recipe)
    t.add_argument("--out", type=_folder_flag, default=os.path.join("runs", "catdog"), metavar="RUN_DIR",
                   help="the run folder RUN_DIR, made if need be, for model.npz, best.npz, checkpoint.npz, "
                        "history.csv/.json and curves.png (one run per folder)")
    t.add_argument("--seed", type=_checked(int, integer, minimum=0), default=0, help="seed of the initial weights, "
                   "the shuffling, the augmentation and dropout")
    t.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd",
                   help="sgd: SGD with Nesterov momentum 0.9; adam: Adam")
    t.add_argument("--lr", type=_checked(float, real, low=0, low_open=True), help="peak learning rate of the cosine "
                   f"schedule (default: the --arch recipe's for sgd, {ADAM_LR:g} for adam)")
    t.add_argument("--weight-decay", type=_checked(float, real, low=0), help="L2 weight decay " + from_recipe)
    t.add_argument("--patience", type=positive, help="stop early after this many validations without improvement "
                   "(see --val-every) (default: none, all --epochs)")
    t.add_argument("--no-augment", action="store_true", help="train on the photos as they are: no flips, zooms, "
                   "shifts, rotations, shears or brightness changes")
    t.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR from its checkpoint.npz, "
                                                          "with the same flags")
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    bn = t.add_mutually_exclusive_group()
    bn.add_argument("--sync-bn", action="store_true", help="under mpiexec: batch norm with the statistics of the "
                    "whole batch (SyncBatchNorm2D), the model one process trains; the default")
    bn.add_argument("--local-bn", action="store_true", help="under mpiexec: batch norm with each process's own rows' "
                    "statistics, as PyTorch's DDP (a little faster; another model than one process's); the running "
                    "statistics are averaged over the processes after each epoch")
    t.set_defaults(run=run_train)

    e = command("evaluate", "metrics and confusion matrix of MODEL on the photos of DATA_DIR: a folder of class "
                "folders, or a data folder holding train/ and val/, whose val/ is then used", parents=[trained, tta, cache])
    e.add_argument("data_dir", metavar="DATA_DIR", help="DATA_DIR/<class>/*.jpg, or DATA_DIR/val/<class>/*.jpg "
                   "where DATA_DIR holds train/ and val/ (as 'minicnn train' takes)")
    e.add_argument("--batch-size", type=positive, default=64, help="images per forward pass (memory, not results)")
    e.set_defaults(run=run_evaluate)

    r = command("predict", "the predicted class and its probability for each image", parents=[trained, tta])
    r.add_argument("images", metavar="IMAGE", nargs="+", help="photo files (JPEG, PNG, ...)")
    r.set_defaults(run=run_predict)

    x = command("export", "write MODEL as an ONNX file for ONNX Runtime and other runtimes")
    x.add_argument("model", metavar="MODEL", help="a model file written by 'minicnn train' (or by Sequential.save: "
                   "then --input raw and --input-shape)")
    x.add_argument("out", metavar="OUT.onnx", help="the ONNX file to write")
    x.add_argument("--input", choices=["uint8", "float", "raw"], default="uint8",
                   help="uint8 pixels 0..255 (default) or float pixels in [0, 1], both normalized in the graph; "
                        "raw: what the first layer takes")
    x.add_argument("--logits", action="store_true", help="output logits instead of class probabilities")
    x.add_argument("--input-shape", type=shape_argument, metavar="C,H,W",
                   help="one input's shape (default: 3,S,S with the model's image size)")
    x.set_defaults(run=run_export)

    c = command("recipes", "each --arch's recipe: the values 'minicnn train' takes for the flags left out")
    c.set_defaults(run=run_recipes)
    return p


USER_ERRORS = (OSError, ValueError, backends.BackendError, TrainingDiverged)
"""What a user's input or machine causes (bad flags, files, folders, data, a diverging learning rate, a full disk):
reported in one line. Anything else is a bug in minicnn and keeps its traceback."""


def main(argv=None):
    with only_rank_0_prints():  # under mpiexec every rank reads the same flags: help and refusals are told once
        args = parser().parse_args(argv)
        prefix = f"minicnn {args.command}"
        try:
            args.comm = world()  # under mpiexec: the processes of a data-parallel run; else None, and no mpi4py
        except ImportError as e:
            print(f"{prefix}: error: {e}", file=sys.stderr)
            return 2
    if args.comm is None:
        return _run(args, prefix)
    with args.comm.failing_together():  # a bug's traceback on one rank ends all of them
        return _run(args, prefix)


def _run(args, prefix):
    def refuse(text, status):
        """Report ``text`` on stderr, once under mpiexec (where every rank then ends: Communicator.fail)."""
        if args.comm is None:
            print(f"{prefix}: {text}", file=sys.stderr)
            return status
        return args.comm.fail(f"{prefix}: {text}", status)

    def show_warning(message, *where, **_):
        """A warning (minicnn's, or a library's) as one line, like every message of the command."""
        if args.comm is None or args.comm.rank == 0:  # every rank reads the same data: told once
            print(f"{prefix}: warning: {' '.join(str(message).split())}", file=sys.stderr)

    if args.comm is not None and args.command != "train":
        return refuse(f"error: only 'minicnn train' runs on several processes; run {args.command} without mpiexec", 2)
    try:
        with warnings.catch_warnings():
            # NumPy's overflow/invalid-value warnings: a diverging run is reported by its checks, in one line
            warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"minicnn\.")
            warnings.showwarning = show_warning  # restored on leaving catch_warnings
            return args.run(args)
    except KeyboardInterrupt:  # under mpiexec: a Ctrl-C reaches every rank; one stopped alone ends the others too
        return refuse("interrupted", 130)
    except MemoryError:
        return refuse("error: out of memory (try a smaller --batch-size or --image-size)", 2)
    except USER_ERRORS as e:
        return refuse(f"error: {error_text(e)}", 2)


def error_text(e):
    """An exception as one line for the user; an OSError as ``what: file``, without Python's ``[Errno N]`` prefix."""
    if isinstance(e, OSError) and e.strerror:
        files = " -> ".join(str(name) for name in (e.filename, e.filename2) if name is not None)
        text = f"{e.strerror}: {files}" if files else e.strerror
    else:
        text = str(e)
    return " ".join(text.split())
