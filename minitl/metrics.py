"""Classification metrics: accuracy, per-class precision, recall and F1, macro averages, confusion matrix.

    precision_k = TP_k / (TP_k + FP_k)      recall_k = TP_k / (TP_k + FN_k)
    F1_k = 2 · precision_k · recall_k / (precision_k + recall_k)
A class that is never predicted (or never present) gets 0 for the undefined ratio,
as scikit-learn does with zero_division=0.
"""
import numpy as np


def confusion_matrix(y_true, y_pred, num_classes):
    """C[i, j] = number of samples of true class i predicted as class j."""
    c = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(c, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return c


def _ratio(num, den):
    return np.divide(num, den, out=np.zeros(len(num)), where=den > 0)


def classification_report(y_true, y_pred, class_names):
    """A dict with accuracy, per-class precision/recall/F1/support, macro averages and the confusion matrix."""
    k = len(class_names)
    c = confusion_matrix(y_true, y_pred, k)
    tp = np.diag(c).astype(np.float64)
    precision = _ratio(tp, c.sum(axis=0))
    recall = _ratio(tp, c.sum(axis=1))
    f1 = _ratio(2 * precision * recall, precision + recall)
    total = int(c.sum())
    return {
        "accuracy": float(tp.sum() / total) if total else 0.0,
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
        "macro_f1": float(f1.mean()),
        "per_class": {name: {"precision": float(p), "recall": float(r), "f1": float(f),
                             "support": int(s)}
                      for name, p, r, f, s in zip(class_names, precision, recall, f1, c.sum(axis=1))},
        "confusion_matrix": c.tolist(),
        "classes": list(class_names),
    }


def most_confused(confusion, class_names, top=5):
    """The ``top`` off-diagonal cells of a confusion matrix, largest first: [{'true', 'predicted',
    'count', 'share'}], share = count / the true class's images (fastai's ``most_confused``)."""
    c = np.asarray(confusion)
    support = c.sum(axis=1)
    cells = [(int(c[i, j]), i, j) for i in range(len(c)) for j in range(len(c)) if i != j and c[i, j]]
    cells.sort(key=lambda cell: (-cell[0], cell[1], cell[2]))
    return [{"true": class_names[i], "predicted": class_names[j], "count": n, "share": n / int(support[i])}
            for n, i, j in cells[:top]]


def format_report(report):
    """The report as printable tables."""
    names = report["classes"]
    w = max(12, *(len(n) for n in names))
    lines = [f"{'class':<{w}}  precision  recall     f1  support"]
    for name in names:
        r = report["per_class"][name]
        lines.append(f"{name:<{w}}  {r['precision']:9.3f}  {r['recall']:6.3f}  {r['f1']:5.3f}  {r['support']:7d}")
    support = sum(r["support"] for r in report["per_class"].values())
    lines.append(f"{'macro avg':<{w}}  {report['macro_precision']:9.3f}  {report['macro_recall']:6.3f}  "
                 f"{report['macro_f1']:5.3f}  {support:7d}")
    lines.append(f"accuracy: {report['accuracy']:.3f}")
    lines.append("")
    lines.append("confusion matrix (rows: true class, columns: predicted)")
    cw = max(5, *(len(n) for n in names))
    lines.append(" " * (w + 2) + " ".join(f"{n[:cw]:>{cw}}" for n in names))
    for name, row in zip(names, report["confusion_matrix"]):
        lines.append(f"{name:<{w}}  " + " ".join(f"{v:>{cw}d}" for v in row))
    return "\n".join(lines)
