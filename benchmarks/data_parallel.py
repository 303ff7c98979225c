"""Training throughput on one process or several (under mpiexec), and the time the gradient allreduce takes.

    python benchmarks/data_parallel.py DATA_DIR
    MINICNN_NUM_THREADS=1 mpiexec -n 2 python benchmarks/data_parallel.py DATA_DIR

Trains ``--arch`` (default: the command line's default network) at ``--image-size``
(default 64; the README's figures: ``--image-size 112``) in batches of 64 (SGD with
Nesterov momentum, augmentation) for an epoch of ``--steps`` + 1 steps after a warm-up
epoch, and prints images per second, the step time and the gradient allreduce's time per
step (rank 0). Under mpiexec the batch norms are SyncBatchNorm2D, as in ``minicnn train``;
``--local-bn`` keeps each process's own statistics. The images come
from the decoded-image cache.
"""
import argparse
import os
import time

from minicnn import SGD, SyncBatchNorm2D, num_threads, seed
from minicnn.architectures import DEFAULT_ARCHITECTURE, build
from minicnn.data import Augment, DataLoader, ImageFolder, Normalize, channel_stats
from minicnn.data.cache import default_cache_dir
from minicnn.distributed import data_parallel, world
from minicnn.train import Trainer

parser = argparse.ArgumentParser()
parser.add_argument("data_dir")
parser.add_argument("--arch", default=DEFAULT_ARCHITECTURE)
parser.add_argument("--image-size", type=int, default=64)
parser.add_argument("--batch-size", type=int, default=64)
parser.add_argument("--steps", type=int, default=20)
parser.add_argument("--local-bn", action="store_true", help="each process's own batch statistics: no SyncBatchNorm2D "
                    "(whose small allreduces, one per batch norm forward and backward, it saves)")
args = parser.parse_args()

comm = world()
seed(0)
data = ImageFolder(os.path.join(args.data_dir, "train"), args.image_size, cache=default_cache_dir())
count = args.batch_size * (args.steps + 1)  # one warm-up step, then the timed ones
images, labels = data.images[:count], data.labels[:count]
model, loss_fn = build(args.arch, args.image_size, len(data.classes))
if comm is not None and not args.local_bn:
    model = SyncBatchNorm2D.convert(model, comm)
loader = DataLoader(images, labels, args.batch_size, Normalize(*channel_stats(images)), shuffle=True, augment=Augment(),
                    shard=None if comm is None else (comm.rank, comm.size))
optimizer, callbacks = data_parallel(SGD(model, lr=0.01, momentum=0.9, nesterov=True), comm)
trainer = Trainer(model, loss_fn, optimizer, progress=False, verbose=False, callbacks=callbacks)
trainer.fit(loader, epochs=1)  # includes the warm-up step; the timed steps follow in a second epoch
reduce_before = comm.seconds if comm else 0.0
start = time.perf_counter()
trainer.fit(loader, epochs=2)
seconds = time.perf_counter() - start
steps = len(loader)
if comm is None or comm.rank == 0:
    processes = 1 if comm is None else comm.size
    threads = num_threads()
    reduce = (comm.seconds - reduce_before) / steps if comm else 0.0
    print(f"{args.arch}: {processes} process(es) x {threads} thread(s): {len(labels) / seconds:.1f} images/s, "
          f"{seconds / steps * 1000:.0f} ms/step, allreduce {reduce * 1000:.1f} ms/step "
          f"({sum(p.size for p in model.params.values())} parameters)")
