# %% [markdown]
# # A cat-vs-dog photo classifier with minicnn, from a folder of JPEGs to a prediction
#
#     python examples/cat_dog_classifier.py [DATA_DIR] [--epochs 60] [--image-size 64] [--backend cupy]
#
# (or open this file as a notebook: `jupytext --to notebook examples/cat_dog_classifier.py`)
#
# DATA_DIR holds train/{cat,dog}/*.jpg and val/{cat,dog}/*.jpg; it defaults to the bundled photos in
# ../shared/data/cats_vs_dogs (or `$MINICNN_CATDOG_DATA`). `minicnn train` does the same with more options.

# %%
import argparse
import os
import shlex
import sys
import time

import minicnn
from minicnn import SGD, AvgPool2D, BatchNorm2D, Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU, Sequential
from minicnn import SoftmaxCrossEntropy
from minicnn.data import Augment, DataLoader, ImageFolder, Normalize, channel_stats, load_image
from minicnn.functional import probabilities
from minicnn.schedules import cosine_schedule
from minicnn.train import Trainer, evaluate

HERE = os.path.dirname(os.path.abspath(__file__)) if "__file__" in globals() else os.getcwd()
DEFAULT_DATA = os.environ.get("MINICNN_CATDOG_DATA", os.path.join(HERE, "..", "..", "shared", "data", "cats_vs_dogs"))

parser = argparse.ArgumentParser(description="Train a cat-vs-dog photo classifier with minicnn.")
parser.add_argument("data_dir", nargs="?", default=DEFAULT_DATA)
parser.add_argument("--epochs", type=int, default=60)
parser.add_argument("--image-size", type=int, default=64)
parser.add_argument("--batch-size", type=int, default=64)
parser.add_argument("--backend", default="numpy", choices=["numpy", "cupy"])
parser.add_argument("--out", default=os.path.join("runs", "cat_dog_example"))
parser.add_argument("--limit", type=int, default=None, help="use only this many images per split (a quick smoke run)")
# A notebook has no command line: there the arguments come from $MINICNN_EXAMPLE_ARGS (empty by default).
args = parser.parse_args(shlex.split(os.environ.get("MINICNN_EXAMPLE_ARGS", "")) if "ipykernel" in sys.modules else None)

minicnn.use_backend(args.backend)
minicnn.seed(0)
start = time.perf_counter()

# %% [markdown]
# ## 1. Data
#
# Every photo is decoded once into (3, S, S) uint8; batches are normalized with the training set's
# channel statistics, and training batches are augmented (flips, zoom, shifts, small rotations).

# %%
# 1. Data: decode every photo once to (3, S, S) uint8; normalize with the training set's statistics.
train_set = ImageFolder(os.path.join(args.data_dir, "train"), args.image_size)
val_set = ImageFolder(os.path.join(args.data_dir, "val"), args.image_size, classes=train_set.classes)
train_images, train_labels = train_set.images, train_set.labels
val_images, val_labels = val_set.images, val_set.labels
if args.limit:
    train_images, train_labels = train_images[::len(train_images) // args.limit], train_labels[::len(train_labels) // args.limit]
    val_images, val_labels = val_images[::len(val_images) // args.limit], val_labels[::len(val_labels) // args.limit]
mean, std = channel_stats(train_images)
normalize = Normalize(mean, std)
train_loader = DataLoader(train_images, train_labels, args.batch_size, normalize, shuffle=True, augment=Augment(), seed=0)
val_loader = DataLoader(val_images, val_labels, args.batch_size, normalize)
print(f"{train_set}\n{val_set}")

# %% [markdown]
# ## 2. Model

# %%
# 2. Model: four conv blocks (S -> S/16), global average pooling, a dense layer for the two classes.
layers, channels = [], 3
for width in (32, 64, 128, 256):
    layers += [Conv2D(channels, width, kernel_size=3, padding=1), BatchNorm2D(width), ReLU(), MaxPool2D(2)]
    channels = width
model = Sequential(layers + [AvgPool2D(args.image_size // 16), Flatten(), Dropout(0.3), Dense(channels, 2, init="xavier")])
model.metadata = dict(classes=train_set.classes, image_size=args.image_size, mean=mean.tolist(), std=std.tolist())
model.summary((3, args.image_size, args.image_size))

# %% [markdown]
# ## 3. Training: forward, loss, backward, optimizer step, batch after batch

# %%
# 3. Train: SGD with Nesterov momentum, weight decay, a cosine learning-rate schedule.
loss_fn = SoftmaxCrossEntropy()
optimizer = SGD(model, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4)
trainer = Trainer(model, loss_fn, optimizer, schedule=cosine_schedule(0.05, args.epochs, warmup_epochs=1),
                  out_dir=args.out, monitor="val_accuracy")
# A run folder holds one run: run the script again and it continues this run (Ctrl-C saves a checkpoint),
# or returns at once if the run is complete; choose another --out for a new one.
trainer.fit(train_loader, val_loader, epochs=args.epochs, resume=os.path.exists(os.path.join(args.out, "checkpoint.npz")))

# %% [markdown]
# ## 4. Evaluation and one prediction

# %%
# 4. Evaluate the best model and label one photo with it.
best = Sequential.load(os.path.join(args.out, "best.npz"))
result = evaluate(best, loss_fn, val_loader)
print(f"validation accuracy: {result['accuracy']:.4f} (loss {result['loss']:.4f}); "
      f"total time {time.perf_counter() - start:.0f}s")

photo = val_set.paths[0]
x = normalize(best.backend.asarray(load_image(photo, args.image_size)[None]))  # (1, 3, S, S)
p = best.backend.to_numpy(probabilities(best.predict(x)))[0]
print(f"{photo}: {best.metadata['classes'][p.argmax()]} ({p.max():.3f})")
