"""Task 2's checks: unbroadcast on known shapes, then each backward by the gradient check."""
import numpy as np
import pytest
import task02_broadcast_backward as task
from expect import close, gradients, op, tensors


@pytest.mark.parametrize("grad_shape, shape", [((2, 3, 4), (3, 1)), ((2, 3), (3,)), ((2, 3), ()),
                                               ((4, 1, 5), (1, 5)), ((2, 3), (2, 3))])
def test_task02_unbroadcast_sums_the_copies(rng, grad_shape, shape):
    grad = rng.standard_normal(grad_shape)
    expected = grad.sum(axis=tuple(range(len(grad_shape) - len(shape))))
    expected = expected.sum(axis=tuple(i for i, n in enumerate(shape) if n == 1), keepdims=True)
    close(task.unbroadcast(grad, shape), expected, f"unbroadcast of a {grad_shape} gradient to {shape}")


@pytest.mark.parametrize("shapes", [((2, 3, 4), (3, 1)), ((3,), ()), ((2, 3), (2, 3))])
def test_task02_add_backward(rng, shapes):
    gradients(op(np.add, task.add_backward, "ab"), "ab", *tensors(rng, *shapes))


@pytest.mark.parametrize("shapes", [((2, 3), (3,)), ((4, 1, 3), (2, 1)), ((2, 3), (2, 3))])
def test_task02_mul_backward(rng, shapes):
    gradients(op(np.multiply, task.mul_backward, "ab"), "ab", *tensors(rng, *shapes))


@pytest.mark.parametrize("shapes", [((3, 4), (4, 2)), ((2, 3, 4), (4, 5)), ((3, 4), (2, 4, 5))])
def test_task02_matmul_backward(rng, shapes):
    gradients(op(np.matmul, task.matmul_backward, "AB"), "AB", *tensors(rng, *shapes))
