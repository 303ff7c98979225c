"""``minicnn train``: the settings of a run (the flags, those left out from the ``--arch`` recipe) and the run."""
import contextlib
import dataclasses
import os
import time

from .. import backend as backends
from ..architectures import build, check_batch_size, recipe
from ..data import Augment, DataLoader, ImageFolder, Normalize, channel_stats
from ..data.features import cached_features
from ..data.loader import rows_of
from ..distributed import data_parallel
from ..fileio import RunLock
from ..layers import SyncBatchNorm2D
from ..losses import SoftmaxCrossEntropy
from ..model import Sequential
from ..optim import SGD, Adam
from .. import pretrained
from ..runfolder import check_run_folder, new_run_folder
from ..schedules import cosine_schedule, warmup_epochs_for
from ..train import Trainer
from .use import _cache, report


ADAM_LR = 1e-3
PRETRAINED = {"efficientnet-lite0": pretrained.efficientnet_lite0}
"""The architectures with published weights (``--pretrained``): their builders, which read the weights."""


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
    pretrained: bool

    @classmethod
    def from_args(cls, args):
        values = recipe(args.arch)
        if args.optimizer == "adam":
            values["lr"] = ADAM_LR
        if args.image_size is not None and args.low_res_size is None:  # the recipe's low resolution, in proportion
            values["low_res_size"] = round(values["low_res_size"] * args.image_size / values["image_size"])
        values.update({name: getattr(args, name) for name in values if getattr(args, name) is not None})
        settings = cls(data_dir=os.path.realpath(args.data_dir), arch=args.arch, optimizer=args.optimizer,
                       augment=not (args.no_augment or args.pretrained),  # features are computed once: no augmentation
                       seed=args.seed, patience=args.patience, sync_bn=args.sync_bn, local_bn=args.local_bn,
                       pretrained=args.pretrained, **values)
        if settings.low_res_size and settings.full_size_epochs is None:
            raise ValueError(f"--low-res-size {settings.low_res_size} needs --full-size-epochs: how many of the last "
                             "epochs train at --image-size")
        if settings.pretrained and settings.arch not in PRETRAINED:
            raise ValueError(f"--pretrained: there are published weights for {', '.join(PRETRAINED)}, not for "
                             f"{settings.arch}")
        if settings.pretrained and settings.low_res_size:
            raise ValueError(f"--low-res-size {settings.low_res_size}: with --pretrained the features are computed once, "
                             "at --image-size (no progressive resizing)")
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
        for name, default in (("val_every", 1), ("sync_bn", False), ("local_bn", False), ("pretrained", False)):
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
    if settings.pretrained:  # refused before anything slow: under mpiexec, or without the weights (the extra)
        if comm is not None:
            raise ValueError("--pretrained trains on one process (its training takes seconds): run it without mpiexec")
        pretrained.efficientnet_lite0_path()  # an ImportError naming the install command when the extra is missing
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
        loaders = _feature_loaders if settings.pretrained else _image_loaders
        trained, train_loader, val_loader = loaders(settings, model, train_set, val_set, comm, backend, args)
        if settings.optimizer == "adam":
            optimizer = Adam(trained, lr=settings.lr, weight_decay=settings.weight_decay)
        else:
            optimizer = SGD(trained, lr=settings.lr, momentum=0.9, nesterov=True, weight_decay=settings.weight_decay)
        optimizer, callbacks = data_parallel(optimizer, comm)  # with comm: gradients summed, numbers reduced
        schedule = cosine_schedule(settings.lr, settings.epochs, warmup_epochs=warmup_epochs_for(settings.epochs))
        trainer = Trainer(trained, loss_fn, optimizer, schedule, out_dir=args.out, monitor="val_accuracy",
                          patience=settings.patience, progress=not args.quiet, seed=settings.seed,
                          settings=settings.saved(), val_every=settings.val_every, callbacks=callbacks,
                          deployed=lambda trained: model)  # model.npz: the whole network, the trained part in it
        history = trainer.fit(train_loader, val_loader, settings.epochs, resume=args.resume)
        if trainer.interrupted:
            return 130
        if not first:
            return 0
        try:
            from ..plots import plot_history
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


def _image_loaders(settings, model, train_set, val_set, comm, backend, args):
    """``(the part trained, train loader, val loader)`` for training the whole network on the photos."""
    normalize = Normalize.from_metadata(model.metadata, backend=backend)
    shard = None if comm is None else (comm.rank, comm.size)
    train_loader = DataLoader(train_set.images, train_set.labels, settings.batch_size, normalize, shuffle=True,
                              augment=Augment() if settings.augment else None, seed=settings.seed, backend=backend,
                              shard=shard, image_size=settings.image_size_by_epoch())
    part = slice(None) if comm is None else slice(*rows_of(len(val_set), comm.rank, comm.size))  # ours to validate
    val_loader = DataLoader(val_set.images[part], val_set.labels[part], settings.batch_size, normalize, backend=backend)
    return model, train_loader, val_loader


def _feature_loaders(settings, model, train_set, val_set, comm, backend, args):
    """``(the part trained, train loader, val loader)`` for ``--pretrained``: the new head (dropout, dense)
    trained on the frozen backbone's features, computed once (and cached: minicnn.data.features)."""
    backbone, head = Sequential(model.layers[:-2], backend=backend), Sequential(model.layers[-2:], backend=backend)
    normalize = Normalize.from_metadata(model.metadata, backend=backend)
    start = time.perf_counter()
    train_x, val_x = (cached_features(backbone, images, normalize, _cache(args), progress=not args.quiet)
                      for images in (train_set.images, val_set.images))
    print(f"the backbone's features of {len(train_x) + len(val_x)} photos: {time.perf_counter() - start:.1f}s")
    train_loader = DataLoader(train_x, train_set.labels, settings.batch_size, shuffle=True, seed=settings.seed,
                              backend=backend)
    return head, train_loader, DataLoader(val_x, val_set.labels, settings.batch_size, backend=backend)


def _network(settings, train_set, comm, backend):
    """The ``--arch`` network and its loss for the training photos, checked against the batch size, with the
    metadata a saved model carries (classes, image size, normalization)."""
    if settings.pretrained:
        return _pretrained_network(settings, train_set, backend)
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


def _pretrained_network(settings, train_set, backend):
    """``--pretrained``: the network with its published weights and a new dense layer for the photos' classes."""
    model = PRETRAINED[settings.arch](len(train_set.classes), backend)
    model.metadata.update(classes=train_set.classes, image_size=settings.image_size)
    return model, SoftmaxCrossEntropy(backend=backend)
