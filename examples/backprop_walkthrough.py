# %% [markdown]
# # Backpropagation by hand: one forward and one backward pass of a tiny CNN
#
#     python examples/backprop_walkthrough.py [--pause] [DATA_DIR]
#
# (or open this file as a notebook: `jupytext --to notebook examples/backprop_walkthrough.py`)
#
# The network: Conv2D(1 -> 2, 3x3) -> ReLU -> MaxPool2D(2) -> Flatten -> Dense(8 -> 2) -> softmax
# cross-entropy, on a cat and a dog photo shrunk to one grey 6x6 channel, in float64 so every
# digit can be checked. Each backward formula is printed with the numerical gradient of the loss
# (central finite differences), which must agree with it. At the end, a residual block shows the
# gradient arriving by two paths. `--pause` waits for Enter between steps, for live teaching from
# a terminal. DATA_DIR defaults to `$MINICNN_DATA/cats_vs_dogs`, else ../shared/data/cats_vs_dogs beside the
# checkout, from any working folder.

# %%
import argparse
import os
import shlex
import sys

import numpy as np

import minicnn
from minicnn import Conv2D, Dense, Flatten, MaxPool2D, ReLU, Residual, Sequential, SoftmaxCrossEntropy, im2col
from minicnn.data import bundled_data, load_image
from minicnn.gradcheck import numerical_gradient, relative_error
from minicnn.trace import Tracer

parser = argparse.ArgumentParser(description="Step through one forward and backward pass of a tiny CNN, by hand.")
parser.add_argument("data_dir", nargs="?", metavar="DATA_DIR", help="train/ and val/ with one folder per class "
                    "(default: $MINICNN_DATA/cats_vs_dogs, else ../shared/data/cats_vs_dogs beside the checkout)")
parser.add_argument("--pause", action="store_true", help="wait for Enter after each step")
# A notebook has no command line: there the arguments come from $MINICNN_EXAMPLE_ARGS (empty by default).
args = parser.parse_args(shlex.split(os.environ.get("MINICNN_EXAMPLE_ARGS", "")) if "ipykernel" in sys.modules else None)
data_dir = args.data_dir or bundled_data("cats_vs_dogs")
np.set_printoptions(precision=3, suppress=True, linewidth=150)
minicnn.seed(0)


def step(title):
    if args.pause:
        input("\n[Enter] ")
    print(f"\n{'=' * 100}\n{title}\n{'=' * 100}")


def shown(a):
    """``a`` for printing: rounded to the 3 decimals shown, a negative zero (such as -0.16 times a mask's 0, or
    -0.0001 rounded) written as 0."""
    return np.round(a, 3) + 0.0  # -0.0 + 0.0 is 0.0


# %% [markdown]
# ## The data and the network
#
# One cat and one dog, each reduced to one grey 6x6 channel and standardized: `x` is (N, C, H, W) = (2, 1, 6, 6).
# The tracer records every layer's input and output, forward and backward, while one pass runs.

# %%
paths = [os.path.join(data_dir, "val", "cat", "cat.1000.jpg"), os.path.join(data_dir, "val", "dog", "dog.1000.jpg")]
paths = [p if os.path.exists(p) else sorted(os.path.join(os.path.dirname(p), f) for f in os.listdir(os.path.dirname(p)))[0]
         for p in paths]
grey = np.stack([load_image(p, 6).mean(axis=0, keepdims=True) for p in paths]) / 255.0  # (2, 1, 6, 6)
x = (grey - grey.mean()) / grey.std()
labels = np.array([0, 1])  # 0 = cat, 1 = dog

model = Sequential([Conv2D(1, 2, 3), ReLU(), MaxPool2D(2), Flatten(), Dense(8, 2)], backend="numpy").astype(np.float64)
conv, relu, pool, flatten, dense = model.layers
loss_fn = SoftmaxCrossEntropy(backend="numpy")

with Tracer(model, keep_arrays=True) as trace:
    loss = loss_fn.forward(model.forward(x), labels)
    dlogits = loss_fn.backward()
    model.backward(dlogits)
forward = trace.forward
backward = {int(r.name): r for r in trace.backward}


def loss_from(index, value):
    """The loss as a function of layer ``index``'s input: run the rest of the network on ``value``."""
    h = value
    for layer in model.layers[index:]:
        h = layer.forward(h)
    return loss_fn.forward(h, labels)


def check(name, analytic, array, f, where=None):
    """Print how far the backward result is from the numerical gradient (only at ``where``, if given)."""
    numeric = numerical_gradient(f, array, 1e-6)
    if where is not None:
        analytic, numeric = analytic[where], numeric[where]
    print(f"  numerical check of {name}: relative error {relative_error(analytic, numeric):.1e}")


# %% [markdown]
# ## Forward
#
# A convolution is a matrix product in disguise: `im2col` copies every 3x3 patch into a column, and
# one product with the filters (one per row) computes every output pixel at once.

# %%
step(f"Input x: {x.shape} = (N, C, H, W), two photos: {[os.path.basename(p) for p in paths]}")
print(shown(x[:, 0]))

step("Conv2D forward, step 1: im2col unrolls every 3x3 patch of x into a column")
cols = im2col(x, 3)
print(f"cols = im2col(x): shape {cols.shape} = (C*kh*kw, N*Ho*Wo); its first 4 columns are the first 4 patches of photo 0:")
print(shown(cols[:, :4]))
print("patch (0, 0) of photo 0, for comparison:\n", shown(x[0, 0, :3, :3]))

step("Conv2D forward, step 2: one matrix product  y = W.reshape(F, C*kh*kw) @ cols + b")
W_mat = conv.params["W"].reshape(2, -1)
print(f"W {conv.params['W'].shape} as a matrix {W_mat.shape}:\n{shown(W_mat)}")
print(f"b {conv.params['b'].shape}: {shown(conv.params['b'])}")
print(f"y = conv(x): {forward[0].output.shape} = (N, F, Ho, Wo), photo 0:\n{shown(forward[0].output[0])}")

# %%
step("ReLU forward: y = max(x, 0), remembering the mask x > 0")
print(f"{forward[1].output.shape}, photo 0:\n{shown(forward[1].output[0])}")

step("MaxPool2D forward: the maximum of each 2x2 window, remembering which cell won")
print(f"{forward[2].output.shape}, photo 0:\n{shown(forward[2].output[0])}")

step("Flatten forward: (N, C, H, W) -> (N, C*H*W)")
print(f"{forward[3].output.shape}:\n{shown(forward[3].output)}")

step("Dense forward: logits = x @ W + b")
print(f"W {dense.params['W'].shape}, b {dense.params['b'].shape}; logits {forward[4].output.shape}:")
print(shown(forward[4].output))

step("Softmax cross-entropy: p = softmax(logits); loss = mean(-log p[label])")
print(f"p =\n{shown(loss_fn.probs)}\nlabels = {labels}\nloss = {loss:.6f}")

# %% [markdown]
# ## Backward
#
# Each layer turns the gradient with respect to its output (`dout`) into the gradient with respect
# to its input (`dx`) and its parameters. Beside each, the numerical gradient: nudge every input
# by ±1e-6, rerun the rest of the network, and divide the change of the loss by 2e-6.

# %%
step("Backward of the loss: dlogits = (p - onehot(labels)) / N")
print(shown(dlogits))
logits = forward[4].output.copy()
check("dlogits", dlogits, logits, lambda: loss_fn.forward(logits, labels))

step("Dense backward: dW = x.T @ dout,  db = dout.sum(0),  dx = dout @ W.T")
print(f"dW {dense.grads['W'].shape}:\n{shown(dense.grads['W'])}\ndb: {shown(dense.grads['b'])}")
print(f"dx {backward[4].output.shape}:\n{shown(backward[4].output)}")
check("dW", dense.grads["W"], dense.params["W"], lambda: loss_from(0, x))
h = forward[4].input.copy()
check("dx", backward[4].output, h, lambda: loss_from(4, h))

step("Flatten backward: reshape dout back to (N, C, H, W)")
print(f"{backward[3].output.shape}, photo 0:\n{shown(backward[3].output[0])}")

# %%
step("MaxPool2D backward: each gradient goes to the cell that won its window; the others get 0")
print(f"dx {backward[2].output.shape}, photo 0:\n{shown(backward[2].output[0])}")
h = forward[2].input.copy()
print("  (the zeros ReLU made are ties: at a tie the loss has a kink, and finite differences, which nudge a\n"
      "   zero up until it wins its window, see half a gradient there; so the check skips the zero cells)")
check("dx", backward[2].output, h, lambda: loss_from(2, h), where=h != 0)

step("ReLU backward: dx = dout * (x > 0)")
print(f"dx {backward[1].output.shape}, photo 0:\n{shown(backward[1].output[0])}")
h = forward[1].input.copy()
check("dx", backward[1].output, h, lambda: loss_from(1, h))

# %%
step("Conv2D backward: dW = dout_mat @ cols.T,  db = dout_mat.sum(1),  dx = col2im(W_mat.T @ dout_mat)")
print("dout_mat is dout rearranged to (F, N*Ho*Wo); col2im adds each column back onto the patch it came from")
print(f"dW {conv.grads['W'].shape}:\n{shown(conv.grads['W'][:, 0])}\ndb: {shown(conv.grads['b'])}")
print(f"dx {backward[0].output.shape}, photo 0:\n{shown(backward[0].output[0, 0])}")
check("dW", conv.grads["W"], conv.params["W"], lambda: loss_from(0, x))
check("db", conv.grads["b"], conv.params["b"], lambda: loss_from(0, x))
h = x.copy()
check("dx", backward[0].output, h, lambda: loss_from(0, h))

# %% [markdown]
# ## A skip connection: the gradient arrives by two paths
#
# A residual block computes `y = body(x) + x`. The input is used twice, so its gradient is the sum
# of what each use sends back: `dx = body.backward(dout) + dout`. The second term passes `dout`
# down unchanged, however small the body's own gradient is: why deep ResNets still train.

# %%
step("Residual block: y = body(x) + x with body = Conv2D(1 -> 1, 3x3, padding 1) -> ReLU")
block = Residual(Conv2D(1, 1, 3, padding=1), ReLU(), backend="numpy").astype(np.float64)
y = block.forward(x)
dout = np.random.default_rng(1).standard_normal(y.shape)  # any upstream gradient
through_body = block.body.backward(dout)
through_shortcut = dout
dx = block.backward(dout)
print(f"y {y.shape}; dout (random) for photo 0:\n{shown(dout[0, 0])}")
print(f"through the body, body.backward(dout), photo 0:\n{shown(through_body[0, 0])}")
print(f"through the shortcut, dout itself; their sum dx, photo 0:\n{shown(dx[0, 0])}")
print(f"  dx == through_body + through_shortcut: {np.allclose(dx, through_body + through_shortcut)}")
h = x.copy()
check("dx", dx, h, lambda: float((block.forward(h) * dout).sum()))

step("Done: one SGD step would now do  W -= lr * dW  for every parameter.")
