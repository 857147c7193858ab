"""The loss L(W) = 1/N Σ_i l(y_i, ŷ_i) for classification, and its gradient.

    ŷ_i = softmax(z_i),  softmax(z)_k = e^{z_k} / Σ_j e^{z_j}
    l(y_i, ŷ_i) = −log ŷ_{i, y_i}                       (cross-entropy with the true class y_i)
    dL/dz_i = (softmax(z_i) − onehot(y_i)) / N

log softmax(z) = z − logsumexp(z) is computed as z − m − log Σ_j e^{z_j − m} with
m = max_j z_j: every exponent is ≤ 0, so nothing overflows, even for logits of 1000.
"""
import argparse

import numpy as np

import minitl.functional as F
from minitl import Tensor


def naive_loss(z, y):
    """Straight from the formula: overflows once some e^{z_k} exceeds the float range."""
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    return -np.log(p[np.arange(len(y)), y]).mean()


def stable_loss(z, y):
    """The same value with the maximum subtracted first (the log-sum-exp trick)."""
    m = z.max(axis=1, keepdims=True)
    log_p = z - m - np.log(np.exp(z - m).sum(axis=1, keepdims=True))
    return -log_p[np.arange(len(y)), y].mean()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smallest sizes (used by the tests)")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    n, k = (3, 3) if args.quick else (5, 4)
    z = rng.standard_normal((n, k))
    y = rng.integers(0, k, n)
    print(f"logits z ({n}×{k}):\n{np.array2string(z, precision=3)}\nlabels y: {y}")

    # the loss and its gradient by hand
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    onehot = np.eye(k)[y]
    grad = (p - onehot) / n
    print(f"\nsoftmax(z):\n{np.array2string(p, precision=3)}")
    print(f"(softmax − onehot) / N:\n{np.array2string(grad, precision=3)}")

    # minitl
    zt = Tensor(z, requires_grad=True)
    loss = F.softmax_cross_entropy(zt, y)
    loss.backward()
    print(f"\nL by hand {stable_loss(z, y):.6f}   minitl {loss.item():.6f}")
    print(f"max |dL/dz by hand − minitl's backward| = {np.abs(grad - zt.grad).max():.2e}")
    print("each row of the gradient sums to 0:", np.allclose(zt.grad.sum(axis=1), 0))
    assert np.allclose(grad, zt.grad)

    # overflow
    big = np.array([[1000.0, 0.0, -1000.0], [0.0, 1000.0, 999.0]])
    labels = np.array([0, 2])
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        naive = naive_loss(big, labels)
        print(f"\nlogits {big.tolist()}, labels {labels.tolist()}")
        print(f"e^1000 = {np.exp(1000.0)} in float64, so e^z / Σ e^z = inf/inf = nan")
    stable = stable_loss(big, labels)
    big_t = Tensor(big, requires_grad=True)
    ours = F.softmax_cross_entropy(big_t, labels)
    ours.backward()
    print(f"naive loss   {naive}")
    print(f"stable loss  {stable:.6f}   = mean of ≈0 (row 1) and log(1 + e) ≈ 1.313 (row 2)")
    print(f"minitl loss  {ours.item():.6f}, gradient finite: {bool(np.isfinite(big_t.grad).all())}")


if __name__ == "__main__":
    main()
