# %% [markdown]
# # A cat-vs-dog photo classifier with minicnn, from a folder of JPEGs to a prediction
#
#     python examples/cat_dog_classifier.py [DATA_DIR] [--epochs 80] [--image-size 112] [--low-res-size 64]
#                                           [--full-size-epochs 20] [--backend cupy]
#
# (or open this file as a notebook: `jupytext --to notebook examples/cat_dog_classifier.py`)
#
# DATA_DIR holds train/{cat,dog}/*.jpg and val/{cat,dog}/*.jpg; it defaults to the bundled photos in
# `$MINICNN_DATA/cats_vs_dogs`, else ../shared/data/cats_vs_dogs beside the checkout, from any working folder.
# `minicnn train` does the same with more options.

# %%
import argparse
import os
import shlex
import sys
import time

import minicnn
from minicnn import (SGD, BatchNorm2D, Conv2D, Dense, Dropout, GlobalAvgPool2D, MaxPool2D, ReLU, Residual, Sequential,
                     SoftmaxCrossEntropy)
from minicnn.data import Augment, DataLoader, ImageFolder, Normalize, bundled_data, channel_stats, load_image
from minicnn.functional import probabilities
from minicnn.schedules import cosine_schedule, warmup_epochs_for
from minicnn.train import Trainer, evaluate


parser = argparse.ArgumentParser(description="Train a cat-vs-dog photo classifier with minicnn.")
parser.add_argument("data_dir", nargs="?", metavar="DATA_DIR", help="train/ and val/ with one folder per class "
                    "(default: $MINICNN_DATA/cats_vs_dogs, else ../shared/data/cats_vs_dogs beside the checkout)")
parser.add_argument("--epochs", type=int, default=80)
parser.add_argument("--image-size", type=int, default=112)
parser.add_argument("--low-res-size", type=int, default=64, help="the image size of all epochs but the last few")
parser.add_argument("--full-size-epochs", type=int, default=20, help="how many of the last epochs train at --image-size")
parser.add_argument("--batch-size", type=int, default=64)
parser.add_argument("--backend", default="numpy", choices=["numpy", "cupy"])
parser.add_argument("--out", default=os.path.join("runs", "cat_dog_example"))
parser.add_argument("--limit", type=int, default=None, help="use only this many images per split (a quick smoke run)")
# A notebook has no command line: there the arguments come from $MINICNN_EXAMPLE_ARGS (empty by default).
args = parser.parse_args(shlex.split(os.environ.get("MINICNN_EXAMPLE_ARGS", "")) if "ipykernel" in sys.modules else None)
data_dir = args.data_dir or bundled_data("cats_vs_dogs")

minicnn.use_backend(args.backend)
minicnn.seed(0)
start = time.perf_counter()

# %% [markdown]
# ## 1. Data
#
# Every photo is decoded once into (3, S, S) uint8; batches are normalized with the training set's
# channel statistics, and training batches are augmented (flips, zoom, shifts, small rotations).
#
# *Progressive resizing*: most epochs train on small images, which cost a fraction of the
# arithmetic, and only the last few at the full size S. The augmentation already resamples every
# image through a sampling grid, so it can as well produce the small version: the loader takes
# the size as a function of the epoch.

# %%
# 1. Data: decode every photo once to (3, S, S) uint8; normalize with the training set's statistics.
train_set = ImageFolder(os.path.join(data_dir, "train"), args.image_size)
val_set = ImageFolder(os.path.join(data_dir, "val"), args.image_size, classes=train_set.classes)
train_images, train_labels = train_set.images, train_set.labels
val_images, val_labels = val_set.images, val_set.labels
if args.limit:
    every_kth = slice(None, None, len(train_images) // args.limit)  # both classes, in equal shares
    train_images, train_labels = train_images[every_kth][:args.limit], train_labels[every_kth][:args.limit]
    every_kth = slice(None, None, len(val_images) // args.limit)
    val_images, val_labels = val_images[every_kth][:args.limit], val_labels[every_kth][:args.limit]
mean, std = channel_stats(train_images)
normalize = Normalize(mean, std)
low_res_epochs = args.epochs - args.full_size_epochs


def size_at(epoch):
    return args.low_res_size if epoch < low_res_epochs else None  # None: the decoded size S


train_loader = DataLoader(train_images, train_labels, args.batch_size, normalize, shuffle=True, augment=Augment(), seed=0,
                          image_size=size_at)
val_loader = DataLoader(val_images, val_labels, args.batch_size, normalize)
print(f"{train_set}\n{val_set}")

# %% [markdown]
# ## 2. Model: a small ResNet
#
# A stride-2 stem (S -> S/4), then four residual blocks: each adds its input (or, where the shape
# changes, a 1x1 projection of it) to the output of two 3x3 convolutions, so `dx` is the sum of the
# gradients through the two paths. Global average pooling makes it work at any image size, which
# is what lets the same model train on small images first.

# %%
# 2. Model: stem, four residual stages (32, 64, 128, 256 channels), global average pooling, dropout, dense.
def block(in_channels, out_channels, stride):
    body = [Conv2D(in_channels, out_channels, 3, stride=stride, padding=1), BatchNorm2D(out_channels), ReLU(),
            Conv2D(out_channels, out_channels, 3, padding=1), BatchNorm2D(out_channels)]
    shortcut = None  # the identity, where the shape stays
    if stride != 1 or in_channels != out_channels:
        shortcut = [Conv2D(in_channels, out_channels, 1, stride=stride), BatchNorm2D(out_channels)]
    return [Residual(*body, shortcut=shortcut), ReLU()]


layers, channels = [Conv2D(3, 32, 5, stride=2, padding=2), BatchNorm2D(32), ReLU(), MaxPool2D(2)], 32
for width, stride in ((32, 1), (64, 2), (128, 2), (256, 2)):
    layers += block(channels, width, stride)
    channels = width
model = Sequential(layers + [GlobalAvgPool2D(), Dropout(0.2), Dense(channels, 2, init="xavier")])
model.metadata = dict(classes=train_set.classes, image_size=args.image_size, mean=mean.tolist(), std=std.tolist())
model.summary((3, args.image_size, args.image_size))

# %% [markdown]
# ## 3. Training: forward, loss, backward, optimizer step, batch after batch

# %%
# 3. Train: SGD with Nesterov momentum, weight decay, a cosine learning-rate schedule; validate every 4th epoch
#    (and the last): the small-image epochs are short, and a validation at the full size costs a good part of one.
loss_fn = SoftmaxCrossEntropy()
optimizer = SGD(model, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
schedule = cosine_schedule(optimizer.lr, args.epochs, warmup_epochs=warmup_epochs_for(args.epochs))
trainer = Trainer(model, loss_fn, optimizer, schedule=schedule,
                  out_dir=args.out, monitor="val_accuracy", val_every=4)
# A run folder holds one run: run the script again and it continues this run (Ctrl-C saves a checkpoint),
# or returns at once if the run is complete; choose another --out for a new one.
trainer.fit(train_loader, val_loader, epochs=args.epochs, resume=os.path.exists(os.path.join(args.out, "checkpoint.npz")))

# %% [markdown]
# ## 4. Evaluation and one prediction

# %%
# 4. Evaluate the final model (the one after the last epoch, also in model.npz) and label one photo with it.
final = Sequential.load(os.path.join(args.out, "model.npz"))
result = evaluate(final, loss_fn, val_loader)
print(f"validation accuracy: {result['accuracy']:.4f} (loss {result['loss']:.4f}); "
      f"total time {time.perf_counter() - start:.0f}s")

photo = val_set.paths[0]
x = normalize(final.backend.asarray(load_image(photo, args.image_size)[None]))  # (1, 3, S, S)
p = final.backend.to_numpy(probabilities(final.predict(x)))[0]
print(f"{photo}: {final.metadata['classes'][p.argmax()]} ({p.max():.3f})")
