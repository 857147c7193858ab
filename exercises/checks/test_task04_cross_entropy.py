"""Task 4's checks: the loss against the engine's, its gradient check, and huge logits."""
import numpy as np
import task04_cross_entropy as task
from expect import close, gradients

from minitl import functional as F
from minitl.tensor import Function, Tensor

LABELS = np.array([0, 2, 1, 2])


class Loss(Function):
    def forward(self, z):
        self.z = z
        return np.asarray(task.cross_entropy_forward(z, LABELS), dtype=z.dtype)

    def backward(self, gy):
        g = task.cross_entropy_backward(self.z, LABELS)
        assert np.shape(g) == self.z.shape, f"dL/dz has shape {np.shape(g)}, z has shape {self.z.shape}"
        return g * gy


def test_task04_loss_is_the_engines(rng):
    z = rng.standard_normal((4, 3))
    close(task.cross_entropy_forward(z, LABELS), F.softmax_cross_entropy(Tensor(z), LABELS).item(), "L")


def test_task04_gradient(rng):
    gradients(lambda z: Loss()(z), "z", Tensor(rng.standard_normal((4, 3)), requires_grad=True))


def test_task04_huge_logits_neither_overflow_nor_give_nan():
    z = np.array([[1000.0, 0.0, -1000.0], [-1000.0, 1000.0, 999.0], [0.0, 0.0, 0.0], [5.0, -5.0, 1000.0]])
    with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
        try:
            loss, grad = task.cross_entropy_forward(z, LABELS), task.cross_entropy_backward(z, LABELS)
        except FloatingPointError as error:
            raise AssertionError(f"logits of ±1000 overflowed ({error}): subtract each row's maximum "
                                 "before the exponential") from None
    engine = Tensor(z, requires_grad=True)
    expected = F.softmax_cross_entropy(engine, LABELS)
    expected.backward()
    close(loss, expected.item(), "L for logits of ±1000", rtol=1e-12)
    close(grad, engine.grad, "dL/dz for logits of ±1000")
