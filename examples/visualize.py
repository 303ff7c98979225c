# %% [markdown]
# # Pictures of what a cat/dog network learned: filters, feature maps, training curves, confusion matrix
#
#     python examples/visualize.py [--model runs/catdog/model.npz] [--out runs/pictures]
#
# (or open this file as a notebook: `jupytext --to notebook examples/visualize.py`)
#
# Uses the model and history.json of a `minicnn train` run; with no such run, it first trains a
# small model for a few epochs (under a minute). Needs matplotlib (`pip install ".[plot]"` in the checkout).
# Writes PNG files to `--out`.

# %%
import argparse
import json
import os
import shlex
import sys

import minicnn
from minicnn import Adam, Conv2D, ReLU, Sequential
from minicnn.architectures import DEFAULT_ARCHITECTURE, build
from minicnn.data import DataLoader, ImageFolder, Normalize, bundled_data, channel_stats
from minicnn.losses import loss_for
from minicnn.metrics import confusion_matrix
from minicnn.plots import plot_confusion_matrix, plot_feature_maps, plot_filters, plot_history
from minicnn.trace import Tracer
from minicnn.train import Trainer, evaluate

parser = argparse.ArgumentParser(description="Pictures of what a cat/dog network learned.")
parser.add_argument("--data", metavar="DATA_DIR", help="train/ and val/ with one folder per class "
                    "(default: $MINICNN_DATA/cats_vs_dogs, else ../shared/data/cats_vs_dogs beside the checkout)")
parser.add_argument("--model", default=os.path.join("runs", "catdog", "model.npz"))
parser.add_argument("--out", default=os.path.join("runs", "pictures"))
parser.add_argument("--epochs", type=int, default=3, help="epochs of the quick model trained when --model does not exist")
# A notebook has no command line: there the arguments come from $MINICNN_EXAMPLE_ARGS (empty by default).
args = parser.parse_args(shlex.split(os.environ.get("MINICNN_EXAMPLE_ARGS", "")) if "ipykernel" in sys.modules else None)
data_dir = args.data or bundled_data("cats_vs_dogs")
os.makedirs(args.out, exist_ok=True)
minicnn.seed(0)

if os.path.exists(args.model):
    model = Sequential.load(args.model)
    history_path = os.path.join(os.path.dirname(args.model), "history.json")
    size, classes = model.metadata["image_size"], model.metadata["classes"]
    normalize = Normalize.from_metadata(model.metadata)
    val_set = ImageFolder(os.path.join(data_dir, "val"), size, classes=classes)
else:
    print(f"{args.model} does not exist: training a quick 32x32 model for {args.epochs} epochs first")
    size, run_dir = 32, os.path.join(args.out, "quick-run")
    train_set = ImageFolder(os.path.join(data_dir, "train"), size)
    val_set = ImageFolder(os.path.join(data_dir, "val"), size, classes=train_set.classes)
    normalize = Normalize(*channel_stats(train_set.images))
    model, loss_fn = build(DEFAULT_ARCHITECTURE, size, 2)
    Trainer(model, loss_fn, Adam(model, lr=2e-3), out_dir=run_dir).fit(
        DataLoader(train_set.images, train_set.labels, 64, normalize, shuffle=True), None, epochs=args.epochs,
        resume=os.path.exists(os.path.join(run_dir, "checkpoint.npz")))  # a second time: the same run, not a new one
    history_path, classes = os.path.join(run_dir, "history.json"), train_set.classes

backend = model.backend
val_loader = DataLoader(val_set.images, val_set.labels, 250, normalize)

# %% [markdown]
# ## What the network learned

# %%
# 1. The first layer's filters: what colours and edges the network looks for.
first_conv = next(layer for layer in model if isinstance(layer, Conv2D))
plot_filters(backend.to_numpy(first_conv.params["W"]), os.path.join(args.out, "filters.png"))

# 2. One photo's feature maps after each block: the output of each of the model's own ReLUs (not those
#    inside residual blocks) that still has maps, (1, C, H, W).
x = normalize(backend.asarray(val_set.images[:1]))  # (1, 3, S, S)
with Tracer(model.eval(), keep_arrays=True) as trace:
    model.forward(x)
after_blocks = [r for r in trace.forward if "." not in r.name and isinstance(r.layer, ReLU) and r.output.ndim == 4]
for block, after in enumerate(after_blocks, start=1):
    plot_feature_maps(after.output[0], os.path.join(args.out, f"feature_maps_block{block}.png"),
                      title=f"block {block}: {after.output.shape[1]} maps of {after.output.shape[2]}x{after.output.shape[3]}")

# 3. Training curves.
with open(history_path) as f:
    plot_history(json.load(f), os.path.join(args.out, "curves.png"))

# 4. The confusion matrix on the validation photos.
result = evaluate(model, loss_for(model), val_loader)
cm = confusion_matrix(result["labels"], result["probabilities"].argmax(1), len(classes))
plot_confusion_matrix(cm, classes, os.path.join(args.out, "confusion_matrix.png"))
print(f"validation accuracy {result['accuracy']:.3f}; pictures in {args.out}: {sorted(os.listdir(args.out))}")
