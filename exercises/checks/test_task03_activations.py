"""Task 3's checks: values against the engine, the gradient check, and the far tails."""
import numpy as np
import task03_activations as task
from expect import close, gradients, op

from minitl import functional as F
from minitl.tensor import Tensor


def away_from_zero(rng, shape):
    x = rng.standard_normal(shape)
    return Tensor(np.where(np.abs(x) < 0.1, x + 0.3, x), requires_grad=True)


def test_task03_relu(rng):
    x = away_from_zero(rng, (3, 4))
    close(task.relu_forward(x.data), F.relu(x).data, "relu_forward")
    gradients(op(task.relu_forward, lambda gy, x: task.relu_backward(gy, x), "x"), "x", x)


def test_task03_sigmoid_values_and_gradient(rng):
    x = Tensor(rng.standard_normal((3, 4)) * 3, requires_grad=True)
    close(task.sigmoid_forward(x.data), F.sigmoid(x).data, "sigmoid_forward")
    gradients(op(task.sigmoid_forward, lambda gy, x: task.sigmoid_backward(gy, x), "x"), "x", x)


def test_task03_sigmoid_is_exact_on_both_tails():
    x = np.array([-1000.0, -700.0, -40.0, 40.0, 700.0, 1000.0])
    with np.errstate(over="raise", under="ignore", invalid="raise", divide="raise"):
        try:
            y, slope = task.sigmoid_forward(x), task.sigmoid_backward(np.ones_like(x), x)
        except FloatingPointError as error:
            raise AssertionError(f"the sigmoid overflowed or divided by zero far out ({error}): "
                                 "compute it from e^(-|x|), which never exceeds 1") from None
    engine = Tensor(x, requires_grad=True)
    expected = F.sigmoid(engine)
    expected.backward(np.ones_like(x))
    close(y, expected.data, "σ(x) at x = ±40, ±700, ±1000 (σ(-700) = 9.86e-305)", rtol=1e-12, atol=0)
    close(slope, engine.grad, "σ(x)σ(-x) at x = ±40, ±700, ±1000 (4.25e-18 at x = 40, where y(1 - y) gives 0)",
          rtol=1e-12, atol=0)
