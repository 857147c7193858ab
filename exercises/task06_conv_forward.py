"""Task 6: im2col and the convolution forward, y = f(X; W).

docs/math.md §1 ("Convolution layer") and §2; the engine's code is ``minitl.kernels.im2col``
and ``minitl.conv.Conv2DFunction.forward``, and ``minitl.conv.conv2d_reference`` is the formula
as loops. Channels last: x (N, H, W, C), kernel W (kh, kw, C, O), bias b (O,), strides
(sh, sw), zero padding pads = (top, bottom, left, right):

    Ho = (H + top + bottom − kh) // sh + 1,  Wo likewise
    y[n, i, j, o] = b[o] + Σ_{a,b,c} x_pad[n, i·sh + a, j·sw + b, c] · W[a, b, c, o]

im2col copies each window into one row, so the convolution is one matrix product:

    cols[(n·Ho + i)·Wo + j, (a·kw + b)·C + c] = x_pad[n, i·sh + a, j·sw + b, c]   (N·Ho·Wo, kh·kw·C)
    y = cols @ W.reshape(kh·kw·C, O) + b                                         (N·Ho·Wo, O) → (N, Ho, Wo, O)

What you write (NumPy arrays in, arrays out, in x's dtype)
    im2col(x, kh, kw, stride, pads)           cols, in exactly the order above
    conv2d_forward(x, w, b, stride, pads)     y (N, Ho, Wo, O); b may be None

Hints
    - np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0))) pads the two image axes.
    - A loop over the kh·kw cells (a, b) of the window suffices: the cell (a, b) of every
      window is the slice x_pad[:, a : a + sh·(Ho − 1) + 1 : sh, b : b + sw·(Wo − 1) + 1 : sw, :],
      an (N, Ho, Wo, C) block that goes into the columns of that cell.
    - Task 12 runs the demo's VGG16 on this function: keep float32 in, float32 out.

Run the checks: python -m pytest exercises -k task06
"""


def im2col(x, kh, kw, stride, pads):
    """The windows of x as rows: (N·Ho·Wo, kh·kw·C)."""
    raise NotImplementedError("task 6: write im2col")


def conv2d_forward(x, w, b, stride, pads):
    """y = im2col(x) @ W.reshape(kh·kw·C, O) + b, as (N, Ho, Wo, O)."""
    raise NotImplementedError("task 6: write conv2d_forward")
