import numpy as np
import pytest

from minitl.metrics import classification_report, confusion_matrix, format_report


def test_confusion_matrix_and_report_by_hand():
    y_true = [0, 0, 0, 1, 1, 2]
    y_pred = [0, 0, 1, 1, 2, 2]
    c = confusion_matrix(y_true, y_pred, 3)
    np.testing.assert_array_equal(c, [[2, 1, 0], [0, 1, 1], [0, 0, 1]])
    r = classification_report(y_true, y_pred, ["a", "b", "c"])
    assert r["accuracy"] == pytest.approx(4 / 6)
    assert r["per_class"]["a"] == {"precision": 1.0, "recall": pytest.approx(2 / 3), "f1": pytest.approx(0.8),
                                   "support": 3}
    assert r["per_class"]["b"]["precision"] == pytest.approx(0.5)
    assert r["per_class"]["c"]["f1"] == pytest.approx(2 / 3)
    assert r["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    text = format_report(r)
    assert "macro avg" in text and "confusion matrix" in text


def test_never_predicted_class_scores_zero_not_nan():
    r = classification_report([0, 1, 1], [1, 1, 1], ["x", "y"])
    assert r["per_class"]["x"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert np.isfinite(r["macro_f1"])
