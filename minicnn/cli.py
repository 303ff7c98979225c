"""The ``minicnn`` command: train, evaluate and predict on folders of images.

    minicnn train DATA_DIR --epochs N --image-size S --batch-size B --out RUN_DIR [--backend cupy] [--arch NAME] [--seed K]
    minicnn evaluate MODEL DATA_DIR
    minicnn predict MODEL IMAGE...
    minicnn export MODEL OUT.onnx [--input uint8|float|raw] [--logits] [--input-shape C,H,W]
"""
import argparse
import os
import sys
import time

from . import backend as backends
from .architectures import ARCHITECTURES, DEFAULT_ARCHITECTURE, build
from .data import Augment, DataLoader, ImageFolder, Normalize, channel_stats, class_folders, load_image
from .functional import probabilities
from .losses import loss_for
from .metrics import classification_report, confusion_matrix, format_confusion_matrix, roc_auc
from .model import Sequential
from .optim import SGD, Adam
from .schedules import cosine_schedule
from .train import Trainer, evaluate


def split_folders(data_dir):
    """``DATA_DIR/train`` and ``DATA_DIR/val``, or a clear error."""
    folders = [os.path.join(data_dir, name) for name in ("train", "val")]
    for folder in folders:
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"{data_dir!r} must hold train/ and val/ folders (each with one folder per class); "
                                    f"{folder!r} is missing")
    return folders


def run_train(args):
    backends.use_backend(args.backend)
    backends.seed(args.seed)
    train_dir, val_dir = split_folders(args.data_dir)
    start = time.perf_counter()
    train_set = ImageFolder(train_dir, args.image_size)
    val_set = ImageFolder(val_dir, args.image_size, classes=train_set.classes)
    print(f"{train_set}\n{val_set}\nloaded in {time.perf_counter() - start:.1f}s")

    model, loss_fn = build(args.arch, args.image_size, len(train_set.classes))
    mean, std = channel_stats(train_set.images)
    model.metadata = dict(classes=train_set.classes, image_size=args.image_size, architecture=args.arch,
                          mean=mean.tolist(), std=std.tolist())
    normalize = Normalize(mean, std)
    train_loader = DataLoader(train_set.images, train_set.labels, args.batch_size, normalize, shuffle=True,
                              augment=None if args.no_augment else Augment(), seed=args.seed)
    val_loader = DataLoader(val_set.images, val_set.labels, args.batch_size, normalize)
    if args.optimizer == "adam":
        optimizer = Adam(model, lr=args.lr or 1e-3, weight_decay=args.weight_decay)
    else:
        optimizer = SGD(model, lr=args.lr or 0.05, momentum=0.9, nesterov=True, weight_decay=args.weight_decay)
    trainer = Trainer(model, loss_fn, optimizer, cosine_schedule(optimizer.lr, args.epochs, warmup_epochs=1),
                      out_dir=args.out, monitor="val_accuracy", patience=args.patience, progress=not args.quiet,
                      seed=args.seed)
    history = trainer.fit(train_loader, val_loader, args.epochs, resume=args.resume)
    if trainer.interrupted:
        return 130
    try:
        from .plots import plot_history
        plot_history(history, os.path.join(args.out, "curves.png"))
    except ImportError as e:
        print(f"(no curves.png: {e})")
    best = Sequential.load(os.path.join(args.out, "best.npz"))
    text, accuracy = report(best, loss_fn, val_set, args.batch_size)
    print(f"\n{text}\n\nbest model: {os.path.join(args.out, 'best.npz')}")
    print(f"validation accuracy: {accuracy:.4f}  (total time {time.perf_counter() - start:.0f}s)")
    return 0


def report(model, loss_fn, dataset, batch_size):
    """The classification report and confusion matrix of ``model`` on an ImageFolder, as text, and the accuracy."""
    classes = model.metadata["classes"]
    loader = DataLoader(dataset.images, dataset.labels, batch_size, Normalize.from_metadata(model.metadata))
    result = evaluate(model, loss_fn, loader)
    probs = result["probabilities"]
    predicted = probs.argmax(axis=1)
    text = [classification_report(dataset.labels, predicted, classes), "",
            format_confusion_matrix(confusion_matrix(dataset.labels, predicted, len(classes)), classes)]
    if len(classes) == 2:
        text.append(f"\nROC AUC {roc_auc(dataset.labels, probs[:, 1]):.4f}")
    text.append(f"loss {result['loss']:.4f}, accuracy {result['accuracy']:.4f}")
    return "\n".join(text), result["accuracy"]


def load_trained(path):
    model = Sequential.load(path)
    missing = [k for k in ("classes", "image_size", "mean", "std") if k not in model.metadata]
    if missing:
        raise ValueError(f"{path}: this model was not saved by 'minicnn train' (its metadata lacks {missing})")
    return model


def run_evaluate(args):
    backends.use_backend(args.backend)
    model = load_trained(args.model)
    classes = model.metadata["classes"]
    folder = args.data_dir
    present = class_folders(folder)
    if not set(classes) <= set(present) and "val" in present:
        folder = os.path.join(folder, "val")  # a train/val data folder: evaluate on val
        present = class_folders(folder)
    if os.path.isdir(folder) and set(present) != set(classes):
        raise ValueError(f"{args.model} was trained for the classes {classes}, but {folder!r} holds {present}")
    dataset = ImageFolder(folder, model.metadata["image_size"], classes=classes)
    print(f"{dataset}\n{report(model, loss_for(model), dataset, args.batch_size)[0]}")
    return 0


def run_predict(args):
    backends.use_backend(args.backend)
    model = load_trained(args.model)
    classes, size = model.metadata["classes"], model.metadata["image_size"]
    normalize = Normalize.from_metadata(model.metadata)
    failed = 0
    for path in args.images:
        try:
            image = load_image(path, size)[None]
        except (OSError, ValueError, SyntaxError) as e:
            print(f"{path}: cannot read image ({e})", file=sys.stderr)
            failed += 1
            continue
        x = normalize(model.backend.asarray(image))
        probs = model.backend.to_numpy(probabilities(model.predict(x)))[0]
        best = int(probs.argmax())
        print(f"{path}: {classes[best]} ({probs[best]:.3f})")
    return 1 if failed else 0


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


def parser():
    p = argparse.ArgumentParser(prog="minicnn", description="Train and use CNNs on folders of images.")
    p.add_argument("--backend", default=os.environ.get("MINICNN_BACKEND", "numpy"), choices=["numpy", "cupy"],
                   help="array backend (default: $MINICNN_BACKEND or numpy)")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a classifier on DATA_DIR/train, validating on DATA_DIR/val")
    t.add_argument("data_dir", metavar="DATA_DIR")
    t.add_argument("--epochs", type=int, default=60)
    t.add_argument("--image-size", type=int, default=64)
    t.add_argument("--batch-size", type=int, default=64)
    t.add_argument("--out", default="runs/catdog", help="run folder for best.npz, checkpoint.npz, history, curves.png")
    t.add_argument("--arch", default=DEFAULT_ARCHITECTURE, help=f"one of {', '.join(sorted(ARCHITECTURES))}")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd")
    t.add_argument("--lr", type=float, default=None, help="peak learning rate (default 0.05 for sgd, 1e-3 for adam)")
    t.add_argument("--weight-decay", type=float, default=1e-4)
    t.add_argument("--patience", type=int, default=None, help="early stopping after this many epochs without improvement")
    t.add_argument("--no-augment", action="store_true")
    t.add_argument("--resume", action="store_true", help="continue from RUN_DIR/checkpoint.npz")
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    t.add_argument("--backend", default=argparse.SUPPRESS, choices=["numpy", "cupy"])
    t.set_defaults(run=run_train)

    e = sub.add_parser("evaluate", help="metrics and confusion matrix of MODEL on a folder of class folders")
    e.add_argument("model", metavar="MODEL")
    e.add_argument("data_dir", metavar="DATA_DIR")
    e.add_argument("--batch-size", type=int, default=64)
    e.add_argument("--backend", default=argparse.SUPPRESS, choices=["numpy", "cupy"])
    e.set_defaults(run=run_evaluate)

    r = sub.add_parser("predict", help="the predicted class and its probability for each image")
    r.add_argument("model", metavar="MODEL")
    r.add_argument("images", metavar="IMAGE", nargs="+")
    r.add_argument("--backend", default=argparse.SUPPRESS, choices=["numpy", "cupy"])
    r.set_defaults(run=run_predict)

    x = sub.add_parser("export", help="write MODEL as an ONNX file for ONNX Runtime and other runtimes")
    x.add_argument("model", metavar="MODEL")
    x.add_argument("out", metavar="OUT.onnx")
    x.add_argument("--input", choices=["uint8", "float", "raw"], default="uint8",
                   help="uint8 pixels 0..255 (default) or float pixels in [0, 1], both normalized in the graph; "
                        "raw: what the first layer takes")
    x.add_argument("--logits", action="store_true", help="output logits instead of class probabilities")
    x.add_argument("--input-shape", type=shape_argument, metavar="C,H,W",
                   help="one input's shape (default: 3,S,S with the model's image size)")
    x.set_defaults(run=run_export)
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except (FileNotFoundError, ValueError, backends.BackendError) as e:
        print(f"minicnn {args.command}: error: {e}", file=sys.stderr)
        return 2
