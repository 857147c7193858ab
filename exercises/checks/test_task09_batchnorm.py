"""Task 9's checks: the gradient check, the engine's closed form, and the sums a correct dL/dx has."""
import numpy as np
import pytest
import task09_batchnorm as task
from expect import close, gradients, op, tensors

from minitl import functional as F


def batch_norm_op():
    def forward(x, gamma, beta):
        return task.batch_norm_forward(x, gamma, beta)[0]

    def backward(gy, x, gamma, beta):
        return task.batch_norm_backward(gy, task.batch_norm_forward(x, gamma, beta)[1])

    return op(forward, backward, ("x", "gamma", "beta"))


@pytest.mark.parametrize("shape", [(6, 3), (4, 2, 2, 3)])
def test_task09_gradient_check(rng, shape):
    x, gamma, beta = tensors(rng, shape, shape[-1:], shape[-1:])
    gamma.data = np.abs(gamma.data) + 0.5
    gradients(batch_norm_op(), ("x", "gamma", "beta"), x, gamma, beta)


def test_task09_matches_the_engine_and_the_chain_of_primitive_ops(rng):
    x, gamma, beta = tensors(rng, (4, 3, 3, 5), (5,), (5,))
    gy = rng.standard_normal(x.shape)
    y = F.batch_norm_reference(x, gamma, beta, epsilon=1e-3)      # autograd through mean, −, square, √, ÷
    y.backward(gy)
    grads = task.batch_norm_backward(gy, task.batch_norm_forward(x.data, gamma.data, beta.data)[1])
    assert grads is not None and len(grads) == 3, "batch_norm_backward must return (dx, dgamma, dbeta)"
    dx, dgamma, dbeta = grads
    close(dbeta, beta.grad, "dL/dβ")
    close(dgamma, gamma.grad, "dL/dγ")
    sums = np.asarray(dx).sum(axis=(0, 1, 2))
    assert np.allclose(sums, 0, atol=1e-9), (
        f"Σ dL/dx over each channel should be 0 (shifting a channel changes nothing), yours is {sums}: "
        "the −(1/m) Σ gy term (the gradient through μ) is missing or wrong")
    x_hat = task.batch_norm_forward(x.data, gamma.data, beta.data)[1][0]
    along = (np.asarray(dx) * x_hat).sum(axis=(0, 1, 2))
    close(along, (x.grad * x_hat).sum(axis=(0, 1, 2)),
          "Σ dL/dx ⊙ x̂ per channel (near 0: scaling a channel changes little); if it is off, the "
          "−x̂ (1/m) Σ gy ⊙ x̂ term (the gradient through σ²) is missing or wrong", rtol=1e-8, atol=1e-9)
    close(dx, x.grad, "dL/dx")
