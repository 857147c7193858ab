"""Task 11's solution: ``minitl.metrics.confusion_matrix`` and ``minitl.metrics.classification_report``."""
import numpy as np


def confusion_matrix(y_true, y_pred, k):
    c = np.zeros((k, k), dtype=np.int64)
    np.add.at(c, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return c


def _ratio(num, den):
    return np.divide(num, den, out=np.zeros(len(num)), where=den > 0)


def precision_recall_f1(c):
    tp = np.diag(c).astype(np.float64)
    precision, recall = _ratio(tp, c.sum(axis=0)), _ratio(tp, c.sum(axis=1))
    return precision, recall, _ratio(2 * precision * recall, precision + recall)


def accuracy(c):
    return float(np.trace(c) / c.sum())
