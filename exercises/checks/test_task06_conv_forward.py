"""Task 6's checks: im2col against the engine's, the convolution against the loops of the formula."""
import numpy as np
import pytest
import task06_conv_forward as task
from expect import close

from minitl import kernels
from minitl.conv import conv2d_reference

CASES = [  # x shape, w shape, stride, pads
    ((2, 5, 5, 3), (3, 3, 3, 4), (1, 1), (1, 1, 1, 1)),
    ((1, 6, 7, 2), (2, 3, 2, 3), (2, 1), (0, 0, 0, 0)),
    ((2, 7, 6, 3), (3, 3, 3, 2), (2, 2), (0, 1, 1, 0)),
    ((1, 4, 4, 5), (1, 1, 5, 2), (1, 1), (0, 0, 0, 0)),
]


def describe(x_shape, w_shape, stride, pads):
    return f"x {x_shape}, kernel {w_shape}, stride {stride}, pads (top, bottom, left, right) {pads}"


@pytest.mark.parametrize("x_shape, w_shape, stride, pads", CASES)
def test_task06_im2col_is_the_engines(rng, x_shape, w_shape, stride, pads):
    x = rng.standard_normal(x_shape)
    kh, kw = w_shape[:2]
    expected = kernels.im2col(x, kh, kw, *stride, pads)
    close(task.im2col(x, kh, kw, stride, pads), expected, f"cols of {describe(x_shape, w_shape, stride, pads)} "
          "(row (n·Ho + i)·Wo + j, column (a·kw + b)·C + c)")


@pytest.mark.parametrize("x_shape, w_shape, stride, pads", CASES)
def test_task06_conv2d_forward_is_the_formula(rng, x_shape, w_shape, stride, pads):
    x, w, b = rng.standard_normal(x_shape), rng.standard_normal(w_shape), rng.standard_normal(w_shape[3])
    what = describe(x_shape, w_shape, stride, pads)
    close(task.conv2d_forward(x, w, b, stride, pads), conv2d_reference(x, w, b, stride, pads), f"y for {what}")
    close(task.conv2d_forward(x, w, None, stride, pads), conv2d_reference(x, w, None, stride, pads),
          f"y without bias for {what}")


def test_task06_float32_stays_float32(rng):
    x, w = rng.standard_normal((1, 4, 4, 2)).astype(np.float32), rng.standard_normal((3, 3, 2, 3)).astype(np.float32)
    y = task.conv2d_forward(x, w, np.zeros(3, np.float32), (1, 1), (1, 1, 1, 1))
    assert y.dtype == np.float32, f"float32 inputs gave {y.dtype} outputs"
