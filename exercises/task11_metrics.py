"""Task 11: precision, recall and F1 from a confusion matrix.

docs/math.md §10 and ``minitl.metrics``; the engine's report is
``minitl.metrics.classification_report``. C[i, j] counts the samples of true class i that
the model predicted as class j. For class k:

    TP_k = C[k, k]     FP_k = Σ_i C[i, k] − TP_k   (predicted k, wrongly)
                       FN_k = Σ_j C[k, j] − TP_k   (truly k, missed)
    precision_k = TP_k / (TP_k + FP_k)     recall_k = TP_k / (TP_k + FN_k)
    F1_k = 2 precision_k recall_k / (precision_k + recall_k)
    accuracy = Σ_k TP_k / Σ C

A class that is never predicted has no precision, one that never occurs no recall: they
count as 0 (scikit-learn's zero_division=0), and so does F1 when both are 0. Macro
averages are the plain means over the classes, so a rare class counts as much as a common one.

What you write (NumPy arrays in)
    confusion_matrix(y_true, y_pred, k)    C (k, k) of integers
    precision_recall_f1(c)                 three arrays of k floats
    accuracy(c)                            a float

Hints
    - np.add.at(c, (y_true, y_pred), 1) counts repeated pairs; c[y_true, y_pred] += 1 would not.
    - np.divide(num, den, out=np.zeros(k), where=den > 0) leaves 0 where den is 0.

Run the checks: python -m pytest exercises -k task11
"""


def confusion_matrix(y_true, y_pred, k):
    """C[i, j] = the number of samples of true class i predicted as class j."""
    raise NotImplementedError("task 11: write confusion_matrix")


def precision_recall_f1(c):
    """(precision, recall, F1) per class, 0 where the ratio is undefined."""
    raise NotImplementedError("task 11: write precision_recall_f1")


def accuracy(c):
    """The fraction of samples on the diagonal."""
    raise NotImplementedError("task 11: write accuracy")
