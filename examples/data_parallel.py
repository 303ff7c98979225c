# %% [markdown]
# # Data-parallel training: two processes with half a batch each, one allreduce, the step of one process
#
#     mpiexec -n 2 python examples/data_parallel.py     # two processes (pip install ".[mpi]" in the checkout)
#     python examples/data_parallel.py                  # one process playing both ranks
#
# (or open this file as a notebook: `jupytext --to notebook examples/data_parallel.py`; the
# notebook is one process playing both ranks.)
#
# Data parallelism: every process (rank) holds the same model and takes its part of each
# batch. After backward, the gradients of all ranks are summed with one allreduce, so every
# rank takes the same optimizer step, the step one process would take with the whole batch.
# The one subtlety is the mean in the loss: each rank backpropagates its *share* of the
# batch's mean loss, `n_rank / n` times its own mean, so that the sum is the whole batch's
# gradient. `minicnn train` does exactly this under `mpiexec` (see `minicnn/distributed.py`).

# %%
import numpy as np

import minicnn
from minicnn import SGD, Conv2D, Dense, Flatten, MaxPool2D, ReLU, Sequential, SoftmaxCrossEntropy
from minicnn.distributed import world

comm = world()  # under mpiexec: this process's place among the ranks; otherwise None
ranks = [comm.rank] if comm else [0, 1]  # the ranks this process plays
print(f"{comm.size} processes, this is rank {comm.rank}" if comm else "one process playing ranks 0 and 1")


def network():
    minicnn.seed(0)  # every rank builds the same weights (minicnn train broadcasts rank 0's to be sure)
    return Sequential(Conv2D(3, 4, 3, padding=1), ReLU(), MaxPool2D(2), Flatten(), Dense(4 * 4 * 4, 3)).astype(np.float64)


rng = np.random.default_rng(1)
x, y = rng.standard_normal((6, 3, 8, 8)), rng.integers(0, 3, 6)  # the global batch: 6 images (N, C, H, W)
halves = {rank: slice(3 * rank, 3 * rank + 3) for rank in (0, 1)}  # each rank's rows

# %% [markdown]
# Each rank: forward and backward on its half, with the loss gradient scaled by its share,
# then its gradients in one flat buffer (one message instead of one per parameter).

# %%
models, buffers = {}, {}
for rank in ranks:
    model, loss_fn = network(), SoftmaxCrossEntropy()
    part = halves[rank]
    loss_fn.forward(model.forward(x[part]), y[part])
    model.backward(loss_fn.backward() * (len(y[part]) / len(y)), input_grad=False)
    models[rank] = model
    buffers[rank] = np.concatenate([g.ravel() for _, g in sorted(model.grads.items())])
    print(f"rank {rank}: rows {part.start}..{part.stop - 1}, a gradient buffer of {buffers[rank].size} numbers")

# %% [markdown]
# The allreduce: every rank ends with the sum of all the buffers. With MPI that is one call,
# `MPI_Allreduce` (here through `Communicator.sum`); a process playing both ranks adds them itself.

# %%
if comm:
    total = comm.sum(buffers[comm.rank])
else:
    total = buffers[0] + buffers[1]
for rank, model in models.items():  # the summed gradients back into the layers, then the same step everywhere
    offset = 0
    for _, grad in sorted(model.grads.items()):
        grad[...] = total[offset:offset + grad.size].reshape(grad.shape)
        offset += grad.size
    SGD(model, lr=0.1).step()

# %% [markdown]
# The proof: one process with the whole batch takes the same step.

# %%
whole, loss_fn = network(), SoftmaxCrossEntropy()
loss_fn.forward(whole.forward(x), y)
whole.backward(loss_fn.backward(), input_grad=False)
SGD(whole, lr=0.1).step()
for rank, model in models.items():
    difference = max(float(np.abs(model.params[k] - whole.params[k]).max()) for k in whole.params)
    print(f"rank {rank}: largest difference from one process with the whole batch: {difference:.1e} "
          f"-> the same model: {difference < 1e-12}")
