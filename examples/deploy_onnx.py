# %% [markdown]
# # Classify photos with an exported minicnn model, using ONNX Runtime, Pillow and NumPy only: no minicnn
#
#     minicnn export runs/catdog/model.npz catdog.onnx
#     python examples/deploy_onnx.py catdog.onnx photo1.jpg photo2.jpg
#
# (or open this file as a notebook: `jupytext --to notebook examples/deploy_onnx.py`)
#
# The file holds all a deployment needs: the graph normalizes the pixels and ends in class probabilities,
# and its metadata gives the image size and the class names. Each line printed reads as `minicnn predict`'s.

# %%
import argparse
import json
import os
import shlex
import sys

import numpy as np
import onnxruntime
from PIL import Image


# %%
def load_image(path, size):
    """RGB uint8 (3, size, size): the shorter side resized to ``size``, the centre square cropped.

    The same steps as minicnn's load_image (minicnn/data/folders.py), repeated here so that this script needs
    no minicnn: the photo gives the pixels the model was trained on.
    """
    with Image.open(path) as im:
        im.draft("RGB", (size, size))
        im = im.convert("RGB")
        scale = size / min(im.size)
        w, h = max(size, round(im.size[0] * scale)), max(size, round(im.size[1] * scale))
        im = im.resize((w, h), Image.BILINEAR, reducing_gap=2.0)
        left, top = (w - size) // 2, (h - size) // 2
        return np.asarray(im.crop((left, top, left + size, top + size)), dtype=np.uint8).transpose(2, 0, 1)


# %% [markdown]
# Which file, which photos: the command line (or `$MINICNN_EXAMPLE_ARGS` in a notebook).

# %%
parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("model", help="an .onnx file written by 'minicnn export'")
parser.add_argument("images", nargs="+")
args = parser.parse_args(shlex.split(os.environ.get("MINICNN_EXAMPLE_ARGS", "")) if "ipykernel" in sys.modules else None)

# %% [markdown]
# The graph's metadata says how it wants its pixels and what its outputs mean.

# %%
session = onnxruntime.InferenceSession(args.model, providers=["CPUExecutionProvider"])
meta = {key: json.loads(value) for key, value in session.get_modelmeta().custom_metadata_map.items()}
if meta.get("input") not in ("uint8", "float") or meta.get("output") != "probabilities":
    raise SystemExit(f"{args.model}: export it with pixels in and probabilities out (the defaults of 'minicnn export')")
size, classes = meta["image_size"], meta["classes"]

# %%
images = np.stack([load_image(path, size) for path in args.images])  # (N, 3, S, S) uint8
if meta["input"] == "float":
    images = images.astype(np.float32) / 255
probs = session.run(None, {session.get_inputs()[0].name: images})[0]
if probs.shape[1] == 1:  # one sigmoid output: the probability of the second class
    probs = np.concatenate([1 - probs, probs], axis=1)
for path, p in zip(args.images, probs):
    best = int(p.argmax())
    print(f"{path}: {classes[best]} ({p[best]:.3f})")
