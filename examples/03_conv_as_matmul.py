"""Convolution as one matrix product, forward and backward, on a 5×5 image.

    Y[i, j, o] = Σ_{a, b, c} X[i + a, j + b, c] · W[a, b, c, o] + bias[o]     (no kernel flip)

im2col copies each 3×3 window of X into one row of a matrix, so the whole
convolution is cols @ W_mat with W_mat = W.reshape(3·3·C, O). Backward:

    dW_mat = colsᵀ @ gY        dX = col2im(gY @ W_matᵀ)        dbias = Σ gY

col2im adds each row back to the window it came from (the adjoint of im2col).
The numbers are small integers, so all versions agree exactly.
"""
import argparse

import numpy as np

import minitl.functional as F
from minitl import Tensor
from minitl.kernels import col2im, im2col


def conv_loops(x, w, b):
    """The definition, one output cell at a time (valid padding, stride 1)."""
    H, W, _C = x.shape
    kh, kw, _, O = w.shape
    y = np.zeros((H - kh + 1, W - kw + 1, O))
    for i in range(y.shape[0]):
        for j in range(y.shape[1]):
            for o in range(O):
                y[i, j, o] = (x[i:i + kh, j:j + kw, :] * w[:, :, :, o]).sum() + b[o]
    return y


def grad_w_loops(x, gy, shape):
    """dW[a, b, c, o] = Σ_{i, j} X[i + a, j + b, c] · gY[i, j, o]."""
    kh, kw, _, _ = shape
    Ho, Wo, _ = gy.shape
    dw = np.zeros(shape)
    for a in range(kh):
        for b in range(kw):
            dw[a, b] = np.einsum("ijc,ijo->co", x[a:a + Ho, b:b + Wo, :], gy)
    return dw


def show(title, a):
    print(f"\n{title}  shape {a.shape}")
    print(np.array2string(a.astype(int), max_line_width=120))  # every number here is an integer


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="accepted for the tests; this example is small")
    parser.add_argument("--channels", type=int, default=1, help="input channels C (default 1)")
    parser.add_argument("--filters", type=int, default=2, help="output channels O (default 2)")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    C, O = args.channels, args.filters
    x = rng.integers(0, 5, (5, 5, C)).astype(np.float64)
    w = rng.integers(-1, 2, (3, 3, C, O)).astype(np.float64)
    b = np.arange(O, dtype=np.float64)
    show("X[:, :, 0] (the image, channel 0)", x[:, :, 0])
    show("W[:, :, 0, 0] (filter 0, channel 0)", w[:, :, 0, 0])

    # forward, three ways
    y_loops = conv_loops(x, w, b)
    cols = im2col(x[None], 3, 3, 1, 1, (0, 0, 0, 0))           # (Ho·Wo, 3·3·C): one row per window
    w_mat = w.reshape(3 * 3 * C, O)
    y_mat = (cols @ w_mat + b).reshape(3, 3, O)
    xt, wt, bt = Tensor(x[None], requires_grad=True), Tensor(w, requires_grad=True), Tensor(b, requires_grad=True)
    y = F.conv2d(xt, wt, bt)
    show("cols = im2col(X): row (i·3 + j) is the window at (i, j)", cols)
    show("W_mat = W.reshape(3·3·C, O)", w_mat)
    show("Y[:, :, 0] by loops", y_loops[:, :, 0])
    print("\nforward:  loops == cols @ W_mat + b:", np.array_equal(y_loops, y_mat),
          "   loops == minitl.functional.conv2d:", np.array_equal(y_loops, y.numpy()[0]))

    # backward: the gradient gY of some loss with respect to Y
    gy = rng.integers(-2, 3, y.shape).astype(np.float64)
    y.backward(gy)
    g = gy.reshape(-1, O)
    dw = (cols.T @ g).reshape(w.shape)
    dx = col2im(g @ w_mat.T, (1, 5, 5, C), 3, 3, 1, 1, (0, 0, 0, 0))
    db = g.sum(axis=0)
    show("gY[:, :, 0]", gy[0, :, :, 0])
    show("dX[:, :, 0] = col2im(gY @ W_matᵀ)", dx[0, :, :, 0])
    print("\nbackward: dW = colsᵀ @ gY equals the loops:", np.array_equal(dw, grad_w_loops(x, gy[0], w.shape)))
    print("          minitl's backward == by hand:  dX", np.array_equal(xt.grad, dx),
          "  dW", np.array_equal(wt.grad, dw), "  dbias", np.array_equal(bt.grad, db))
    assert np.array_equal(y_loops, y.numpy()[0]) and np.array_equal(xt.grad, dx) and np.array_equal(wt.grad, dw)


if __name__ == "__main__":
    main()
