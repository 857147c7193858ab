"""Task 8's checks: the gradient check on distinct values, ties and overlapping windows against the engine."""
import numpy as np
import pytest
import task08_max_pool_backward as task
from expect import close, gradients, op

from minitl import functional as F
from minitl.tensor import Tensor


@pytest.mark.parametrize("shape, pool, stride", [((2, 4, 4, 3), (2, 2), (2, 2)), ((1, 7, 7, 2), (3, 3), (2, 2)),
                                                 ((1, 5, 6, 2), (2, 3), (1, 2))])
def test_task08_gradient_check(rng, shape, pool, stride):
    x = Tensor(rng.permutation(int(np.prod(shape))).reshape(shape) * 0.1, requires_grad=True)   # no ties
    pooling = op(lambda x: task.max_pool2d_forward(x, pool, stride),
                 lambda gy, x: task.max_pool2d_backward(gy, x, pool, stride), "x")
    gradients(pooling, "x", x)


@pytest.mark.parametrize("pool, stride", [((2, 2), (2, 2)), ((3, 3), (2, 2))])
def test_task08_ties_and_overlaps_route_as_the_engine(rng, pool, stride):
    x = Tensor(rng.integers(0, 3, (2, 7, 7, 3)).astype(np.float32), requires_grad=True)  # many ties
    y = F.max_pool2d(x, pool, stride)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    y.backward(gy)
    dx = task.max_pool2d_backward(gy, x.data, pool, stride)
    assert dx.dtype == np.float32, f"float32 gradients gave {dx.dtype}"
    close(dx, x.grad, f"dL/dx for {pool[0]}x{pool[1]} windows, stride {stride[0]}, values in {{0, 1, 2}} "
          "(on a tie the first cell in row-major order wins; shared winners add up)", rtol=1e-6, atol=1e-6)
