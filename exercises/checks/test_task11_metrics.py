"""Task 11's checks: against minitl.metrics, with a class that is never predicted and one that never occurs."""
import numpy as np
import pytest
import task11_metrics as task
from expect import close

from minitl.metrics import classification_report

NAMES = ["cat", "dog", "cow", "bird"]


def predictions(rng):
    y_true = rng.integers(0, 3, 60)                           # "bird" never occurs
    y_pred = np.where(rng.random(60) < 0.6, y_true, rng.integers(0, 4, 60))
    y_pred[y_pred == 2] = 1                                   # "cow" is never predicted
    return y_true, y_pred


def test_task11_confusion_matrix(rng):
    y_true, y_pred = predictions(rng)
    c = task.confusion_matrix(y_true, y_pred, 4)
    close(c, classification_report(y_true, y_pred, NAMES)["confusion_matrix"], "C (rows: true, columns: predicted)")
    assert np.asarray(c).sum() == 60, "the counts do not add up to the 60 samples: repeated pairs were lost"


@pytest.mark.parametrize("seed", [0, 1])
def test_task11_precision_recall_f1_and_accuracy(seed):
    y_true, y_pred = predictions(np.random.default_rng(seed))
    report = classification_report(y_true, y_pred, NAMES)
    c = np.array(report["confusion_matrix"])
    with np.errstate(divide="ignore", invalid="ignore"):
        scores = task.precision_recall_f1(c)
    assert scores is not None and len(scores) == 3, "precision_recall_f1 must return (precision, recall, f1)"
    for what, mine in zip(("precision", "recall", "f1"), scores):
        expected = [report["per_class"][n][what] for n in NAMES]
        close(mine, expected, f"{what} per class {NAMES} (cow is never predicted, bird never occurs: 0)")
    close(task.accuracy(c), report["accuracy"], "accuracy")
