"""Classification metrics on host arrays of true and predicted class indices."""
import numpy as np


def _labels(y_true, y_pred):
    y_true, y_pred = np.asarray(y_true).ravel(), np.asarray(y_pred).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"metrics: {y_true.shape[0]} true labels but {y_pred.shape[0]} predictions")
    return y_true, y_pred


def accuracy(y_true, y_pred):
    """Fraction of predictions equal to the true labels."""
    y_true, y_pred = _labels(y_true, y_pred)
    return float((y_true == y_pred).mean()) if y_true.size else 0.0


def confusion_matrix(y_true, y_pred, num_classes=None):
    """(K, K) int64 counts: row = true class, column = predicted class; labels must be class indices in [0, K)."""
    y_true, y_pred = _labels(y_true, y_pred)
    for name, labels in (("true labels", y_true), ("predictions", y_pred)):
        if labels.size and labels.dtype.kind not in "iu":
            raise ValueError(f"confusion_matrix: the {name} must be integer class indices, got dtype {labels.dtype}")
    k = num_classes or int(max(y_true.max(initial=-1), y_pred.max(initial=-1)) + 1)
    for name, labels in (("true labels", y_true), ("predictions", y_pred)):
        if labels.size and (labels.min() < 0 or labels.max() >= k):  # would be counted in another class's cell
            raise ValueError(f"confusion_matrix: the {name} must lie in [0, {k}), got values from "
                             f"{labels.min()} to {labels.max()}")
    return np.bincount(y_true * k + y_pred, minlength=k * k).reshape(k, k)


def precision_recall_f1(y_true, y_pred, num_classes=None):
    """Per-class precision, recall, F1 and support, each a (K,) array (0 where undefined)."""
    cm = confusion_matrix(y_true, y_pred, num_classes)
    tp = np.diag(cm).astype(np.float64)
    predicted, support = cm.sum(axis=0), cm.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return precision, recall, f1, support


def macro_f1(y_true, y_pred, num_classes=None):
    """Unweighted mean of the per-class F1 scores."""
    return float(precision_recall_f1(y_true, y_pred, num_classes)[2].mean())


def roc_auc(y_true, scores):
    """Area under the ROC curve of a binary problem.

    Args:
        y_true: (N,) 0/1 labels.  scores: (N,) scores of class 1 (higher = more likely 1).

    The probability that a random positive scores above a random negative
    (ties count one half), from the ranks of the scores.
    """
    y_true, scores = np.asarray(y_true).ravel(), np.asarray(scores, dtype=np.float64).ravel()
    if y_true.shape != scores.shape:
        raise ValueError(f"roc_auc: {y_true.size} labels but {scores.size} scores")
    if not np.isin(y_true, (0, 1)).all() or not np.isfinite(scores).all():
        raise ValueError("roc_auc: labels must be 0 or 1 and scores finite")
    positives, negatives = int((y_true == 1).sum()), int((y_true == 0).sum())
    if positives == 0 or negatives == 0:
        raise ValueError("roc_auc: needs at least one positive and one negative example")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # Average ranks over ties: group equal scores and give each group its mean rank.
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_scores)) + 1]
    ends = np.r_[starts[1:], len(scores)]
    for s, e in zip(starts, ends):
        ranks[order[s:e]] = (s + e + 1) / 2
    return float((ranks[y_true == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def classification_report(y_true, y_pred, class_names):
    """A printable table of per-class precision, recall, F1 and support, with accuracy and macro averages."""
    precision, recall, f1, support = precision_recall_f1(y_true, y_pred, len(class_names))
    width = max(12, *(len(c) for c in class_names))
    lines = [f"{'':<{width}} precision    recall        f1   support"]
    for name, p, r, f, s in zip(class_names, precision, recall, f1, support):
        lines.append(f"{name:<{width}} {p:9.3f} {r:9.3f} {f:9.3f} {s:9d}")
    lines.append("")
    lines.append(f"{'accuracy':<{width}} {'':9} {'':9} {accuracy(y_true, y_pred):9.3f} {int(support.sum()):9d}")
    lines.append(f"{'macro avg':<{width}} {precision.mean():9.3f} {recall.mean():9.3f} {f1.mean():9.3f} {int(support.sum()):9d}")
    return "\n".join(lines)


def format_confusion_matrix(cm, class_names):
    """The confusion matrix as a printable table (rows: true class, columns: predicted)."""
    width = max(8, *(len(c) for c in class_names))
    corner = "true \\ pred"
    lines = [f"{corner:<{width}} " + " ".join(f"{c:>{width}}" for c in class_names)]
    for name, row in zip(class_names, cm):
        lines.append(f"{name:<{width}} " + " ".join(f"{v:>{width}d}" for v in row))
    return "\n".join(lines)
