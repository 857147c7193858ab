"""Task 7's checks: col2im against the engine's and as im2col's adjoint, then dX, dW and db
by the gradient check and against the loops of ``minitl.conv.conv2d_backward_reference``."""
import numpy as np
import pytest
import task07_conv_backward as task
from expect import close, gradients, op, tensors

from minitl import kernels
from minitl.conv import conv2d_backward_reference, conv2d_reference

CASES = [  # x shape, w shape, stride, pads: overlapping windows, strides that skip cells, uneven padding
    ((2, 5, 5, 3), (3, 3, 3, 4), (1, 1), (1, 1, 1, 1)),
    ((1, 6, 7, 2), (2, 3, 2, 3), (2, 1), (0, 0, 0, 0)),
    ((2, 7, 6, 3), (3, 3, 3, 2), (2, 2), (0, 1, 1, 0)),
]


@pytest.mark.parametrize("x_shape, w_shape, stride, pads", CASES)
def test_task07_col2im_is_the_adjoint_of_im2col(rng, x_shape, w_shape, stride, pads):
    kh, kw = w_shape[:2]
    x = rng.standard_normal(x_shape)
    cols = kernels.im2col(x, kh, kw, *stride, pads)
    d = rng.standard_normal(cols.shape)
    what = f"col2im for x {x_shape}, kernel {kh}x{kw}, stride {stride}, pads {pads}"
    dx = task.col2im(d, x_shape, kh, kw, stride, pads)
    close(dx, kernels.col2im(d, x_shape, kh, kw, *stride, pads), what + " (overlapping cells add up)")
    assert np.isclose((cols * d).sum(), (x * dx).sum()), f"{what}: <im2col(x), D> != <x, col2im(D)>"


@pytest.mark.parametrize("x_shape, w_shape, stride, pads", CASES)
def test_task07_conv2d_backward(rng, x_shape, w_shape, stride, pads):
    x, w, b = tensors(rng, x_shape, w_shape, w_shape[3:])
    gy = rng.standard_normal(conv2d_reference(x.data, w.data, None, stride, pads).shape)
    dx, dw, db = conv2d_backward_reference(gy, x.data, w.data, stride, pads)
    grads = task.conv2d_backward(gy, x.data, w.data, stride, pads)
    assert grads is not None and len(grads) == 3, "conv2d_backward must return (dx, dw, db)"
    what = f"for x {x_shape}, kernel {w_shape}, stride {stride}, pads {pads}"
    for name, mine, expected in zip(("x", "W", "b"), grads, (dx, dw, db)):
        close(mine, expected, f"dL/d{name} {what}")
    conv = op(lambda x, w, b: conv2d_reference(x, w, b, stride, pads),
              lambda gy, x, w, b: task.conv2d_backward(gy, x, w, stride, pads), ("x", "W", "b"))
    gradients(conv, ("x", "W", "b"), x, w, b)
