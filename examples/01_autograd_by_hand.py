"""y = f(X; W) for a tiny dense layer, and its gradient three ways.

    y = relu(X @ W + b),  L = mean(y²)

1. by hand with the chain rule in NumPy,
2. by minitl's backward(),
3. by central differences (minitl.gradcheck),
and all three agree.
"""
import argparse
import os

import numpy as np

import minitl
import minitl.functional as F
from minitl import Tensor


def draw(loss, path):
    """Write the graph as DOT, and as PNG beside it when Graphviz is installed."""
    from minitl import viz
    viz.to_dot(loss, path)
    print(f"graph written to {path}")
    try:
        png = viz.render(loss, os.path.splitext(path)[0] + ".png")
        print(f"graph drawn in {png}")
    except minitl.MinitlError as e:
        print(f"(not drawn: {e})")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smallest sizes (used by the tests)")
    parser.add_argument("--dot", metavar="FILE", help="also write the computational graph as Graphviz DOT")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    n, d_in, d_out = (2, 3, 2) if args.quick else (4, 5, 3)
    X = rng.standard_normal((n, d_in))
    W = rng.standard_normal((d_in, d_out))
    b = rng.standard_normal(d_out)

    # 1. The chain rule by hand: z = XW + b, y = relu(z), L = mean(y²)
    z = X @ W + b
    y = np.maximum(z, 0)
    L = (y ** 2).mean()
    dL_dy = 2 * y / y.size
    dL_dz = dL_dy * (z > 0)
    dL_dW = X.T @ dL_dz
    dL_db = dL_dz.sum(axis=0)

    # 2. minitl's reverse-mode autograd
    Wt, bt = Tensor(W, requires_grad=True), Tensor(b, requires_grad=True)
    Xt = Tensor(X)
    Xt.name, Wt.name, bt.name = "X", "W", "b"
    loss = (F.relu(F.dense(Xt, Wt, bt)) ** 2).mean()
    loss.name = "L"
    if args.dot:  # before backward(), which frees the graph
        draw(loss, args.dot)
    loss.backward()

    # 3. Central differences
    def f(W_, b_):
        return (F.relu(F.dense(Tensor(X), W_, b_)) ** 2).mean()
    err = minitl.gradcheck(f, Tensor(W.copy(), requires_grad=True), Tensor(b.copy(), requires_grad=True))

    print(f"L = {L:.6f} (by hand)   {loss.item():.6f} (minitl)")
    print(f"max |dL/dW by hand - minitl| = {np.abs(dL_dW - Wt.grad).max():.2e}")
    print(f"max |dL/db by hand - minitl| = {np.abs(dL_db - bt.grad).max():.2e}")
    print(f"gradcheck (central differences) max relative error = {err:.2e}")
    assert np.allclose(dL_dW, Wt.grad) and np.allclose(dL_db, bt.grad)


if __name__ == "__main__":
    main()
