import numpy as np
import pytest

from minicnn.metrics import (accuracy, classification_report, confusion_matrix, format_confusion_matrix, macro_f1,
                             precision_recall_f1, roc_auc)

TRUE = [0, 0, 0, 1, 1, 2, 2, 2, 2]
PRED = [0, 1, 0, 1, 2, 2, 2, 0, 2]


def test_accuracy_and_confusion_matrix():
    assert accuracy(TRUE, PRED) == pytest.approx(6 / 9)
    np.testing.assert_array_equal(confusion_matrix(TRUE, PRED), [[2, 1, 0], [0, 1, 1], [1, 0, 3]])
    assert confusion_matrix([0], [0], num_classes=3).shape == (3, 3)


def test_precision_recall_f1_by_hand():
    precision, recall, f1, support = precision_recall_f1(TRUE, PRED)
    np.testing.assert_allclose(precision, [2 / 3, 1 / 2, 3 / 4])
    np.testing.assert_allclose(recall, [2 / 3, 1 / 2, 3 / 4])
    np.testing.assert_allclose(f1, [2 / 3, 1 / 2, 3 / 4])
    assert support.tolist() == [3, 2, 4]
    assert macro_f1(TRUE, PRED) == pytest.approx((2 / 3 + 1 / 2 + 3 / 4) / 3)
    # a class never predicted: precision 0, not NaN
    precision, recall, f1, _ = precision_recall_f1([0, 1], [0, 0])
    assert precision.tolist() == [0.5, 0.0] and recall.tolist() == [1.0, 0.0] and f1[1] == 0.0


def test_roc_auc_by_hand_and_with_ties():
    assert roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert roc_auc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)
    assert roc_auc([1, 1, 0], [0.9, 0.8, 0.1]) == 1.0
    with pytest.raises(ValueError, match="positive and one negative"):
        roc_auc([1, 1], [0.2, 0.3])


def test_reports():
    report = classification_report(TRUE, PRED, ["cat", "dog", "fox"])
    assert "cat" in report and "0.667" in report and "macro avg" in report and "accuracy" in report
    table = format_confusion_matrix(confusion_matrix(TRUE, PRED), ["cat", "dog", "fox"])
    assert table.splitlines()[3].split() == ["fox", "1", "0", "3"]


def test_mismatched_lengths():
    with pytest.raises(ValueError, match="3 true labels but 2 predictions"):
        accuracy([0, 1, 1], [0, 1])
