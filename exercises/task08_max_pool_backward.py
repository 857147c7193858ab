"""Task 8: max-pooling backward.

docs/math.md §4; the engine's op is ``minitl.conv.MaxPool2DFunction`` (its kernels are
``minitl.kernels.max_pool_forward`` and ``minitl.kernels.max_pool_backward``). Windows of
ph × pw cells, strides (sh, sw), no padding:

    y[n, i, j, c] = max_{a,b} x[n, i·sh + a, j·sw + b, c]
    dL/dx[n, i·sh + a*, j·sw + b*, c] += gy[n, i, j, c]      (a*, b*) = the window's arg-max

Only the winning cell of each window passed its value on, so only it gets the gradient.
On a tie the engine takes the first winner in row-major order (a, then b), as np.argmax
does, so the gradient of a window goes to one cell. Windows that overlap (3×3 windows,
stride 2) may share a winner: its gradients add up.

What you write (NumPy arrays in, arrays out, in gy's dtype)
    max_pool2d_backward(gy, x, pool, stride)    dL/dx (x's shape)

Hints
    - For each window position (i, j): the window x[:, r:r + ph, s:s + pw, :] reshaped to
      (N, ph·pw, C) and argmax over axis 1 give the winning cell of each (n, c).
    - np.add.at adds at repeated indices; np.put_along_axis would overwrite.

Run the checks: python -m pytest exercises -k task08
"""
import numpy as np


def max_pool2d_forward(x, pool, stride):
    """y = the maximum of each window (given: the forward of the op whose backward you write)."""
    (ph, pw), (sh, sw) = pool, stride
    n, h, w, c = x.shape
    ho, wo = (h - ph) // sh + 1, (w - pw) // sw + 1
    y = np.full((n, ho, wo, c), -np.inf, dtype=x.dtype)
    for a in range(ph):
        for b in range(pw):
            np.maximum(y, x[:, a:a + sh * (ho - 1) + 1:sh, b:b + sw * (wo - 1) + 1:sw, :], out=y)
    return y


def max_pool2d_backward(gy, x, pool, stride):
    """dL/dx: each window's gy added at the window's first arg-max."""
    raise NotImplementedError("task 8: write max_pool2d_backward")
