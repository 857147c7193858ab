import numpy as np
import pytest

import minitl.functional as F
from minitl import ShapeError, Tensor, gradcheck


def reference_cross_entropy(z, labels):
    """Float64 log-softmax loss, written with explicit logsumexp per row."""
    out = []
    for row, k in zip(z.astype(np.float64), labels):
        m = row.max()
        lse = m + np.log(np.exp(row - m).sum())
        out.append(lse - row[k])
    return np.mean(out)


@pytest.mark.parametrize("scale", [1.0, 1000.0])
def test_cross_entropy_and_gradient_match_reference(scale, rng):
    z = rng.standard_normal((5, 4)) * scale
    z[0, 0], z[1, 2] = 1000.0, -1000.0
    labels = np.array([0, 1, 2, 3, 0])
    logits = Tensor(z, requires_grad=True)
    loss = F.softmax_cross_entropy(logits, labels)
    assert np.isfinite(loss.item())
    np.testing.assert_allclose(loss.item(), reference_cross_entropy(z, labels), rtol=1e-12)
    loss.backward()
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    expected = (p - np.eye(4)[labels]) / 5  # softmax − onehot, over N
    np.testing.assert_allclose(logits.grad, expected, atol=1e-15)
    assert np.isfinite(logits.grad).all()


def test_float32_logits_of_1000_do_not_overflow():
    z = Tensor(np.array([[1000.0, -1000.0, 0.0], [-1000.0, -1000.0, 1000.0]], np.float32), requires_grad=True)
    loss = F.softmax_cross_entropy(z, np.array([1, 2]))
    assert loss.dtype == np.float32
    np.testing.assert_allclose(loss.item(), 1000.0, rtol=1e-6)
    p = F.softmax(z)
    assert np.isfinite(p.data).all()
    np.testing.assert_allclose(p.data.sum(axis=1), 1.0, rtol=1e-6)
    assert np.isfinite(F.log_softmax(z).data).all()


def test_one_hot_targets_equal_integer_labels(rng):
    z = rng.standard_normal((4, 3))
    labels = np.array([2, 0, 1, 1])
    a = F.softmax_cross_entropy(Tensor(z), labels).item()
    b = F.softmax_cross_entropy(Tensor(z), np.eye(3)[labels]).item()
    np.testing.assert_allclose(a, b, rtol=1e-12)
    per = F.softmax_cross_entropy(Tensor(z), labels, reduction="none").data
    np.testing.assert_allclose(per.mean(), a, rtol=1e-12)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_targets_whose_rows_do_not_sum_to_one(reduction, rng):
    z = rng.standard_normal((4, 3))
    t = rng.dirichlet(np.ones(3), size=4) * np.array([0.5, 2.0, 1.0, 1.5])[:, None]
    logits = Tensor(z, requires_grad=True)
    loss = F.softmax_cross_entropy(logits, t, reduction=reduction)
    log_p = z - z.max(1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(1, keepdims=True))
    per_sample = -(t * log_p).sum(1)
    expected = {"mean": per_sample.mean(), "sum": per_sample.sum(), "none": per_sample}[reduction]
    np.testing.assert_allclose(loss.data, expected, rtol=1e-12)
    gy = rng.standard_normal(4)
    loss.backward(gy if reduction == "none" else None)
    rows = np.exp(log_p) * t.sum(1, keepdims=True) - t           # softmax · Σ_k t_k − t
    scale = {"mean": 1 / 4, "sum": 1.0, "none": gy[:, None]}[reduction]
    np.testing.assert_allclose(logits.grad, rows * scale, atol=1e-15)
    np.testing.assert_allclose(rows.sum(1), 0, atol=1e-15)      # each row still sums to zero
    assert gradcheck(lambda a: F.softmax_cross_entropy(a, t, reduction=reduction),
                     Tensor(z, requires_grad=True)) < 1e-7


def test_softmax_matches_reference(rng):
    z = rng.standard_normal((3, 6)) * 50
    e = np.exp(z - z.max(axis=1, keepdims=True))
    np.testing.assert_allclose(F.softmax(Tensor(z)).data, e / e.sum(1, keepdims=True), rtol=1e-12)


@pytest.mark.parametrize("labels,match", [
    (np.array([0.0, 1.0, 2.0]), "must be integers"),
    (np.array([0, 1, 3]), r"\[0, 3\).*from 0 to 3"),
    (np.array([-1, 0, 1]), r"\[0, 3\)"),
    (np.array([0, 1]), "2 labels for 3 rows"),
    (np.ones((3, 4)), r"targets of shape \(3, 4\)"),
])
def test_bad_labels_get_clear_errors(labels, match):
    with pytest.raises(ShapeError, match=match):
        F.softmax_cross_entropy(Tensor(np.zeros((3, 3))), labels)


def test_logits_must_be_2d():
    with pytest.raises(ShapeError, match=r"\(N, K\)"):
        F.softmax_cross_entropy(Tensor(np.zeros(3)), np.array([0]))


def test_label_smoothing_and_class_weights_against_the_formulas(rng):
    z, labels, eps, w = rng.standard_normal((6, 3)), np.array([0, 1, 2, 2, 1, 0]), 0.1, np.array([0.5, 2.0, 1.0])
    log_p = z - np.log(np.exp(z).sum(1, keepdims=True))
    t = (1 - eps) * np.eye(3)[labels] + eps / 3                   # (1 − ε) onehot + ε/K
    smoothed = F.softmax_cross_entropy(Tensor(z), labels, label_smoothing=eps).item()
    np.testing.assert_allclose(smoothed, -(t * log_p).sum(1).mean(), rtol=1e-12)
    weighted = F.softmax_cross_entropy(Tensor(z), labels, class_weights=w).item()
    np.testing.assert_allclose(weighted, np.mean(w[labels] * -log_p[np.arange(6), labels]), rtol=1e-12)  # over N
    logits = Tensor(z, requires_grad=True)
    F.softmax_cross_entropy(logits, labels, label_smoothing=eps, class_weights=w).backward()
    weight = t @ w                                                # w · t_i for a smoothed row
    np.testing.assert_allclose(logits.grad, weight[:, None] * (np.exp(log_p) - t) / 6, rtol=1e-10)
    assert F.softmax_cross_entropy(Tensor(z), labels, class_weights=np.ones(3)).item() == pytest.approx(
        F.softmax_cross_entropy(Tensor(z), labels).item(), rel=1e-12)
    with pytest.raises(ShapeError, match=r"\(2,\) class weights for 3 classes"):
        F.softmax_cross_entropy(Tensor(z), labels, class_weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="label_smoothing must be in"):
        F.softmax_cross_entropy(Tensor(z), labels, label_smoothing=1.0)
