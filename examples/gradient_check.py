# %% [markdown]
# # Gradient-check every layer and loss of minicnn, then watch the check catch three classic bugs
#
#     python examples/gradient_check.py
#
# (or open this file as a notebook: `jupytext --to notebook examples/gradient_check.py`)
#
# Each check compares the backward pass with central finite differences in float64 (see
# `minicnn.gradcheck`); a relative error near 1e-10 means the hand-derived gradient is right,
# anything above 1e-6 means it is not.

# %%
import numpy as np

import minicnn
from minicnn import (AvgPool2D, BatchNorm2D, BinaryCrossEntropy, Conv2D, Dense, Dropout, Flatten, GlobalAvgPool2D,
                     MaxPool2D, ReLU, Residual, Sigmoid, SoftmaxCrossEntropy, gradcheck)

minicnn.seed(0)
rng = np.random.default_rng(0)
images = rng.standard_normal((2, 3, 7, 6))  # (N, C, H, W): small, odd sizes catch more index bugs
features = rng.standard_normal((4, 5))      # (N, D)

checks = [
    (Conv2D(3, 4, kernel_size=(3, 2), stride=(2, 1), padding=1), images),
    (MaxPool2D(3, stride=2, padding=1), images),
    (AvgPool2D(2, stride=1), images),
    (BatchNorm2D(3), images),
    (ReLU(), images),
    (Sigmoid(), images),
    (Flatten(), images),
    (Dropout(0.3), images),
    (Dense(5, 3), features),
    (GlobalAvgPool2D(), images),
    (Residual(Conv2D(3, 4, 3, padding=1), ReLU(), Conv2D(4, 4, 3, stride=2, padding=1),
              shortcut=[Conv2D(3, 4, 1, stride=2)]), images),
]
print("Relative errors of each gradient (input, then each parameter):")
for layer, x in checks:
    errors = gradcheck(layer, x).errors
    print(f"  {type(layer).__name__:<20} " + "   ".join(f"{name} {err:.1e}" for name, err in errors.items()))
for loss, labels in [(SoftmaxCrossEntropy(), np.array([0, 4, 2, 1])), (BinaryCrossEntropy(), np.array([1, 0, 0, 1]))]:
    logits = features if isinstance(loss, SoftmaxCrossEntropy) else features[:, :1]
    print(f"  {type(loss).__name__:<20} logits {gradcheck(loss, logits, labels).errors['input']:.1e}")


# %% [markdown]
# ## Three bugs that students (and textbooks) really write
#
# Each is one line away from the right code, and each passes a casual test: the shapes are right.

# %%
class DenseForgottenTranspose(Dense):
    def backward(self, dout):
        self.grads["W"] = self.x.T @ dout
        self.grads["b"] = dout.sum(axis=0)
        return dout @ self.params["W"]  # BUG: should be W.T (runs only because W is square here)


class ReLUMissingMask(ReLU):
    def backward(self, dout):
        return dout.copy()  # BUG: should be dout * (x > 0)


class MaxPoolWrongCell(MaxPool2D):
    def _windows(self, padded):
        return super()._windows(padded)[::-1]  # BUG: offsets reversed, so each gradient lands in the mirrored cell


print("\nPlanted bugs: the check must fail")
for buggy, x in [(DenseForgottenTranspose(5, 5), features), (ReLUMissingMask(), images), (MaxPoolWrongCell(2), images)]:
    result = gradcheck(buggy, x)
    print(f"\n{type(buggy).__name__}: {'caught' if not result.ok else 'NOT CAUGHT'}\n{result}")
