# %% [markdown]
# # The classic Keras MNIST convnet, written with minicnn layers, trained on the real MNIST
#
#     python examples/mnist_cnn.py [DATA_DIR] [--epochs 4] [--backend cupy]
#
# (or open this file as a notebook: `jupytext --to notebook examples/mnist_cnn.py`)
#
# Conv 32 (3x3, ReLU) -> MaxPool 2 -> Conv 64 (3x3, ReLU) -> MaxPool 2 -> Flatten -> Dense 64 (ReLU)
# -> Dense 10 (softmax), Adam. DATA_DIR holds the four IDX .gz files; it defaults to
# `$MINICNN_DATA/mnist`, else ../shared/data/mnist beside the checkout, from any working folder.

# %%
import argparse
import os
import shlex
import sys
import time

import minicnn
from minicnn import Adam, Conv2D, Dense, Flatten, MaxPool2D, ReLU, Sequential, SoftmaxCrossEntropy
from minicnn.data import DataLoader, Normalize, bundled_data, channel_stats, read_mnist
from minicnn.schedules import cosine_schedule
from minicnn.train import Trainer, evaluate

parser = argparse.ArgumentParser(description="The classic Keras MNIST convnet, trained with minicnn on the real MNIST.")
parser.add_argument("data_dir", nargs="?", metavar="DATA_DIR", help="the four MNIST IDX .gz files (default: "
                    "$MINICNN_DATA/mnist, else ../shared/data/mnist beside the checkout)")
parser.add_argument("--epochs", type=int, default=4)
parser.add_argument("--batch-size", type=int, default=128)
parser.add_argument("--backend", default="numpy", choices=["numpy", "cupy"])
parser.add_argument("--limit", type=int, default=None, help="use only this many images per split (a quick smoke run)")
# A notebook has no command line: there the arguments come from $MINICNN_EXAMPLE_ARGS (empty by default).
args = parser.parse_args(shlex.split(os.environ.get("MINICNN_EXAMPLE_ARGS", "")) if "ipykernel" in sys.modules else None)
data_dir = args.data_dir or bundled_data("mnist")

minicnn.use_backend(args.backend)
minicnn.seed(0)
start = time.perf_counter()

# %% [markdown]
# ## The data: 60,000 training and 10,000 test digits, (N, 1, 28, 28) uint8

# %%
train_images, train_labels = read_mnist(data_dir, "train")  # (60000, 1, 28, 28) uint8, (60000,)
test_images, test_labels = read_mnist(data_dir, "test")     # (10000, 1, 28, 28), (10000,)
if args.limit:
    train_images, train_labels = train_images[:args.limit], train_labels[:args.limit]
    test_images, test_labels = test_images[:args.limit], test_labels[:args.limit]
normalize = Normalize(*channel_stats(train_images))
train_loader = DataLoader(train_images, train_labels, args.batch_size, normalize, shuffle=True, seed=0)
test_loader = DataLoader(test_images, test_labels, 500, normalize)

# %% [markdown]
# ## The network and its training

# %%
model = Sequential([
    Conv2D(1, 32, 3), ReLU(), MaxPool2D(2),     # (N, 32, 13, 13)
    Conv2D(32, 64, 3), ReLU(), MaxPool2D(2),    # (N, 64, 5, 5)
    Flatten(), Dense(64 * 5 * 5, 64), ReLU(),   # (N, 64)
    Dense(64, 10, init="xavier"),               # (N, 10) logits; the softmax is inside the loss
])
model.summary((1, 28, 28))

loss_fn = SoftmaxCrossEntropy()
optimizer = Adam(model, lr=2e-3)
trainer = Trainer(model, loss_fn, optimizer, schedule=cosine_schedule(2e-3, args.epochs))
trainer.fit(train_loader, test_loader, epochs=args.epochs)

result = evaluate(model, loss_fn, test_loader)
print(f"test accuracy: {result['accuracy']:.4f} (loss {result['loss']:.4f}) after {args.epochs} epochs; "
      f"total time {time.perf_counter() - start:.0f}s")
