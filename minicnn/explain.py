"""Grad-CAM: where in an image a network finds the evidence for a class (Selvaraju et al., 2017).

For the feature maps ``A`` (N, C, h, w) of a convolution and a class score ``y_k`` (its logit), each map's
weight is the mean of the score's gradient over the map, ``alpha_c = mean_ij dy_k / dA_cij``; the heatmap is
``ReLU(sum_c alpha_c A_c)``, scaled to [0, 1] and resized to the image. In an explicit-backward library the
gradient is already there: it is the ``dout`` that the layer after those maps receives in backward.
"""
import numpy as np

from .data.augment import resize
from .functional import is_binary, predicted_classes


def grad_cam(model, x, classes=None, layer=None):
    """Grad-CAM heatmaps of ``model`` for the images ``x``.

    Args:
        model: a :class:`~minicnn.Sequential` from images to logits (N, K), or one logit per image.
        x: images (N, C, H, W) on the model's backend, as the model takes them (normalized).
        classes: (N,) the class whose evidence to show for each image; default: the predicted class.
        layer: the dotted name of the layer whose output maps to use (a layer inside a Sequential, as
            ``model.named_layers()`` names it); default: the last layer whose output is maps of more than one
            pixel (N, C, h, w) (the last convolution's maps, or their pooled maps, before global pooling).

    Returns:
        ``(heatmaps, classes)``: (N, H, W) float32 in [0, 1] and (N,) int64, on the host.

    The model runs in evaluation mode; its ``grads`` hold this backward's gradients afterwards.
    """
    backend = model.backend
    outputs, gradients = {}, {}  # the 4-D outputs by layer name, in order; the score's gradient at the chosen one

    def record(phase, name, _, inputs, output):
        if phase == "forward" and getattr(output, "ndim", 0) == 4:
            outputs[name] = output
        elif phase == "backward" and name == chosen_layer:
            gradients[name] = inputs  # backward hooks get (dout, dx): dout is the gradient at the layer's output

    chosen_layer = None
    with model.evaluating(), model.hooked(record):
        logits = model.forward(x)
        spatial = [name for name, output in outputs.items() if output.shape[2] * output.shape[3] > 1]
        if layer is None and not spatial:
            raise ValueError(f"grad_cam: no layer of the model gives feature maps of more than one pixel for x of "
                             f"shape {tuple(x.shape)}")
        chosen_layer = spatial[-1] if layer is None else layer
        if chosen_layer not in outputs:
            raise ValueError(f"grad_cam: no layer named {layer!r} gives 4-D feature maps; those that do: {list(outputs)}")
        if classes is None:
            chosen = predicted_classes(logits)
        else:
            wanted, count = np.asarray(classes), 2 if is_binary(logits) else logits.shape[1]
            if wanted.shape != (len(x),) or wanted.dtype.kind not in "iu" or wanted.min() < 0 or wanted.max() >= count:
                raise ValueError(f"grad_cam: classes must be one class per image, ints from 0 to {count - 1} of shape "
                                 f"({len(x)},), got {classes!r}")
            chosen = backend.asarray(wanted.astype(np.int64))
        if is_binary(logits):  # one logit: class 1's score is the logit, class 0's its negative
            dlogits = (2 * chosen - 1).astype(logits.dtype).reshape(logits.shape)
        else:
            dlogits = backend.xp.zeros(logits.shape, dtype=logits.dtype)
            dlogits[backend.xp.arange(len(x)), chosen] = 1
        model.backward(dlogits)
    maps, gradient = outputs[chosen_layer], gradients[chosen_layer]
    weights = gradient.mean(axis=(2, 3), keepdims=True)  # alpha_c: (N, C, 1, 1)
    cam = backend.to_numpy(backend.xp.maximum((weights * maps).sum(axis=1), 0)).astype(np.float32)  # (N, h, w)
    peak = cam.max(axis=(1, 2), keepdims=True)
    cam = np.divide(cam, peak, out=np.zeros_like(cam), where=peak > 0)
    return resize(cam[:, None], tuple(x.shape[2:]))[:, 0], backend.to_numpy(chosen)  # bilinear, as PyTorch's
