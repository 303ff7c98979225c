"""Run by tests/test_distributed.py under ``mpiexec -n 2``: data-parallel runs checked against one process.

    mpiexec -n 2 python tests/mpi_worker.py SCENARIO TMP_DIR

Rank 0 also trains the one-process reference itself (without a communicator)
and prints one JSON line of results for the test to judge.
"""
import json
import os
import signal
import sys

import numpy as np

import minicnn
from minicnn import (SGD, Adam, BatchNorm2D, Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU, Residual,
                     Sequential, SoftmaxCrossEntropy, SyncBatchNorm2D)
from minicnn.data import Augment, DataLoader
from minicnn.distributed import data_parallel, world
from minicnn.train import Trainer

comm = world()
rank, size = comm.rank, comm.size


def data(n, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 3, 8, 8), dtype=np.uint8), rng.integers(0, 3, n)


def network(batchnorm, dtype, distributed):
    """With ``batchnorm``: batch norms in the stem and in both branches of a residual block, synchronized across
    the ranks by ``SyncBatchNorm2D.convert`` in a distributed run."""
    minicnn.seed(3)
    # BatchNorm after the ReLU: right after the convolution, the bias's true gradient would be 0, and Adam
    # would turn the rounding noise of that 0 (which differs with the order of the sums) into full steps
    layers = [Conv2D(3, 4, 3, padding=1), ReLU()]
    if batchnorm:
        layers += [BatchNorm2D(4), Residual(Conv2D(4, 4, 3, padding=1), ReLU(), BatchNorm2D(4),
                                            shortcut=[Conv2D(4, 4, 1), ReLU(), BatchNorm2D(4)])]
    model = Sequential(*layers, MaxPool2D(2), Flatten(), Dropout(0.3), Dense(64, 3)).astype(dtype)
    return SyncBatchNorm2D.convert(model, comm) if batchnorm and distributed else model


def train(optimizer, batchnorm, dtype, distributed, out_dir=None, epochs=2, resume=False, schedule=None):
    """The model and history after ``epochs`` epochs of 14 images in batches of 6 (3, 3, 2 images per rank... and
    1 + 1 in the last batch), augmented, with dropout."""
    images, labels = data(14, 0)
    val_images, val_labels = data(7, 1)
    shard = (rank, size) if distributed else None
    part = slice(rank * 7 // size, (rank + 1) * 7 // size) if distributed else slice(None)
    train_loader = DataLoader(images, labels, 6, shuffle=True, augment=Augment(), seed=5, dtype=dtype, shard=shard)
    val_loader = DataLoader(val_images[part], val_labels[part], 6, dtype=dtype)
    model = network(batchnorm, dtype, distributed)
    opt = SGD(model, lr=0.05, momentum=0.9, weight_decay=1e-3) if optimizer == "sgd" else Adam(model, lr=1e-2)
    opt, callbacks = data_parallel(opt, comm if distributed else None)
    trainer = Trainer(model, SoftmaxCrossEntropy(), opt, schedule=schedule, out_dir=out_dir, progress=False,
                      verbose=False, seed=7, callbacks=callbacks)
    history = trainer.fit(train_loader, val_loader, epochs, resume=resume)
    return model, history, trainer


def relative_difference(a, b):
    """The largest difference between the arrays (or numbers) ``a`` and ``b``, relative to ``b``'s magnitude
    where that is above 1: the measure that rounding errors scale with."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(1, np.abs(b)), initial=0))


def largest_difference(a, b, store="params"):
    return max([relative_difference(getattr(a, store)[k], getattr(b, store)[k]) for k in getattr(b, store)] or [0.0])


def history_difference(a, b):
    keys = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")
    return max(relative_difference(ra[k], rb[k]) for ra, rb in zip(a, b) for k in keys)


def equality(tmp):
    """2 ranks against 1 process for each optimizer, dtype, with and without SyncBatchNorm2D; only rank 0 writes."""
    writes = []
    if rank != 0 or os.environ.get("MINICNN_TEST_WATCH_RANK_0"):  # the latter proves the watch sees writes
        sys.addaudithook(lambda event, args: writes.append(args[0]) if event == "open" and isinstance(args[0], str)
                         and args[0].startswith(tmp) and _writes(*args[:3]) else None)
    results = {}
    for optimizer in ("sgd", "adam"):
        for dtype in (np.float64, np.float32):
            for batchnorm in (False, True):
                name = f"{optimizer}-{np.dtype(dtype).name}-{'syncbn' if batchnorm else 'plain'}"
                model, history, _ = train(optimizer, batchnorm, dtype, True, out_dir=os.path.join(tmp, name))
                if rank == 0:
                    ref, ref_history, _ = train(optimizer, batchnorm, dtype, False)
                    results[name] = dict(params=largest_difference(model, ref),
                                         history=history_difference(history, ref_history),
                                         buffers=largest_difference(model, ref, "buffers"),
                                         files=sorted(os.listdir(os.path.join(tmp, name))),
                                         synchronized=sum(isinstance(layer, SyncBatchNorm2D) for _, layer in model.named_layers()))
    writes, local_ranks = comm.comm.gather(writes), comm.comm.gather(comm.local_rank)
    if rank == 0:
        results["writes by rank"] = [len(ws) for ws in writes]
        results["local ranks"] = local_ranks
    return results


def _writes(path, mode, flags):
    """Whether an ``open`` audit event opens ``path`` for writing."""
    if isinstance(mode, str):
        return any(c in mode for c in "wax+")
    return isinstance(flags, int) and bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))


def syncbn_gradcheck(tmp):
    """SyncBatchNorm2D over 2 ranks in float64: finite differences of the global loss sum(y * w), and BatchNorm2D
    on the whole batch."""
    rng = np.random.default_rng(11)
    x_all, w_all = rng.normal(size=(5, 2, 3, 3)), rng.normal(size=(5, 2, 3, 3))
    start, stop = rank * 5 // size, (rank + 1) * 5 // size  # 2 and 3 images: unequal parts
    x, w = x_all[start:stop].copy(), w_all[start:stop]
    layer = SyncBatchNorm2D(2, comm=comm).astype(np.float64)
    layer.params["gamma"][:] = [1.5, -0.7]
    layer.params["beta"][:] = [0.2, 0.1]

    def loss():
        return comm.sum_numbers(float((layer.forward(x) * w).sum()))[0]

    layer.forward(x)
    dx = layer.backward(w)
    grads = {k: comm.sum(g.copy()) for k, g in layer.grads.items()}
    h, worst = 1e-6, 0.0
    scale = comm.comm.allreduce(float(np.abs(dx).max()), op=__import__("mpi4py.MPI").MPI.MAX)  # errors relative to the largest
    for owner in range(size):  # every element of the global batch, perturbed on the rank that holds it
        count = comm.comm.bcast(x.size if rank == owner else None, root=owner)
        for i in range(count):
            numeric = []
            for step in (h, -h):
                if rank == owner:
                    x.flat[i] += step
                numeric.append(loss())
                if rank == owner:
                    x.flat[i] -= step
            if rank == owner:
                estimate = (numeric[0] - numeric[1]) / (2 * h)
                worst = max(worst, abs(estimate - dx.flat[i]) / scale)
    for key in ("gamma", "beta"):
        for c in range(2):
            numeric = []
            for step in (h, -h):
                layer.params[key][c] += step
                numeric.append(loss())
                layer.params[key][c] -= step
            estimate = (numeric[0] - numeric[1]) / (2 * h)
            worst = max(worst, abs(estimate - grads[key][c]) / max(1e-8, abs(grads[key][c])))
    worst = max(comm.comm.gather(worst) or [0.0]) if rank == 0 else comm.comm.gather(worst)
    dx_all = comm.comm.gather(dx)
    if rank != 0:
        return None
    reference = BatchNorm2D(2).astype(np.float64)
    reference.params = {k: v.copy() for k, v in layer.params.items()}
    reference.forward(x_all)
    ref_dx = reference.backward(w_all)
    return dict(gradcheck=worst, against_batchnorm=float(np.max(np.abs(np.concatenate(dx_all) - ref_dx))),
                gamma=float(np.max(np.abs(grads["gamma"] - reference.grads["gamma"]))))


def resume(tmp):
    """Ctrl-C on rank 0 only in epoch 2: both ranks stop after the same step, then a resumed run under MPI ends
    where an uninterrupted one-process run does."""
    out = os.path.join(tmp, "resumed")

    def schedule(epoch):
        if rank == 0 and abs(epoch - (1 + 1 / 3)) < 1e-9:
            os.kill(os.getpid(), signal.SIGINT)  # this rank alone: the ranks must agree to stop
        return 0.05

    for dtype in (np.float64,):
        _, _, first = train("sgd", True, dtype, True, out_dir=out, epochs=3, schedule=schedule)
        stopped = (first.interrupted, first.epoch, first.partial["step"])
        model, history, _ = train("sgd", True, dtype, True, out_dir=out, epochs=3, resume=True, schedule=schedule)
        if rank == 0:
            ref, ref_history, _ = train("sgd", True, dtype, False, epochs=3, schedule=lambda e: 0.05)
            return dict(stopped=stopped, params=largest_difference(model, ref),
                        history=history_difference(history, ref_history), epochs=len(history))
    return None


def recipe(tmp):
    """The default network (catdog-resnet: batch norm, residual blocks, progressive resizing) on real photos
    stored class by class (TMP_DIR/train, TMP_DIR/val), in float64: with synchronized batch norm 2 ranks train
    the model of one; with each rank's own statistics the model validated in the loop is the model saved."""
    from minicnn.architectures import build
    from minicnn.data import ImageFolder
    from minicnn.train import evaluate

    train_set, val_set = (ImageFolder(os.path.join(tmp, split), 32) for split in ("train", "val"))

    def fit(distributed, synchronized):
        minicnn.seed(0)
        model, loss_fn = build("catdog-resnet", 32, 2)
        model = model.astype(np.float64)
        if distributed and synchronized:
            model = SyncBatchNorm2D.convert(model, comm)
        train_loader = DataLoader(train_set.images, train_set.labels, 16, shuffle=True, augment=Augment(), seed=1,
                                  dtype=np.float64, shard=(rank, size) if distributed else None,
                                  image_size=lambda epoch: 24 if epoch == 0 else None)  # progressive resizing
        part = slice(rank * len(val_set) // size, (rank + 1) * len(val_set) // size) if distributed else slice(None)
        val_loader = DataLoader(val_set.images[part], val_set.labels[part], 16, dtype=np.float64)
        optimizer, callbacks = data_parallel(SGD(model, lr=0.02, momentum=0.9, nesterov=True, weight_decay=5e-4),
                                             comm if distributed else None)
        history = Trainer(model, loss_fn, optimizer, progress=False, verbose=False,
                          callbacks=callbacks).fit(train_loader, val_loader, 2)
        return model, loss_fn, history

    results = {}
    local, loss_fn, local_history = fit(True, False)
    buffers = comm.comm.gather(local.buffers)
    if rank == 0:
        fresh = evaluate(local, loss_fn, DataLoader(val_set.images, val_set.labels, 16, dtype=np.float64))
        results["local"] = dict(buffers_across_ranks=max(relative_difference(buffers[1][k], buffers[0][k])
                                                         for k in buffers[0]),
                                in_loop=[local_history[-1]["val_accuracy"], local_history[-1]["val_loss"]],
                                saved=[fresh["accuracy"], fresh["loss"]])
    synchronized, _, history = fit(True, True)
    if rank == 0:
        one, _, one_history = fit(False, False)
        results["synchronized"] = dict(params=largest_difference(synchronized, one),
                                       buffers=largest_difference(synchronized, one, "buffers"),
                                       history=history_difference(history, one_history))
    return results


def failure(tmp):
    """Rank 1 fails in the middle of epoch 1 while rank 0 waits for its gradients."""
    def schedule(epoch):
        if rank == 1 and epoch > 0.5:
            raise ValueError("rank 1 found a bad file")
        return 0.05
    train("sgd", False, np.float32, True, epochs=1, schedule=schedule)
    return "not reached"


if __name__ == "__main__":
    scenario, tmp = sys.argv[1], sys.argv[2]
    with comm.failing_together():  # an error on one rank ends both, rather than leaving the other waiting
        results = {name: globals()[name](tmp) for name in scenario.split(",")}
    if rank == 0:
        print(json.dumps(results), flush=True)
