"""What the checks share: comparisons that say which value is off and by how much, the
gradient check with the inputs' names, and ops made of a task's array functions."""
import re

import numpy as np

from minitl.check import gradcheck
from minitl.errors import GradcheckError
from minitl.tensor import Function, Tensor


def close(actual, expected, what, rtol=1e-10, atol=1e-12):
    """AssertionError naming ``what``, the worst element and both values, unless actual ≈ expected."""
    assert actual is not None, f"{what}: got None"
    a, e = np.asarray(actual), np.asarray(expected)
    assert a.shape == e.shape, f"{what}: shape {a.shape}, expected {e.shape}"
    diff = np.abs(a.astype(np.float64) - e)
    bad = ~(diff <= atol + rtol * np.abs(e))               # NaN counts as off
    if bad.any():
        i = np.unravel_index(int(np.argmax(np.where(bad, np.nan_to_num(diff, nan=np.inf), -1))), a.shape)
        raise AssertionError(f"{what}: {int(bad.sum())} of {bad.size} values are off; the worst at index "
                             f"{tuple(int(k) for k in i)}: yours {a[i]:.10g}, expected {e[i]:.10g}")


def gradients(fn, names, *inputs):
    """``minitl.check.gradcheck(fn, *inputs)``, its message naming the input (``names``) whose gradient is off."""
    try:
        return gradcheck(fn, *inputs)
    except GradcheckError as error:
        found = re.search(r"for input (\d+)", str(error))
        if found is None:
            raise AssertionError(str(error)) from None
        raise AssertionError(f"dL/d{names[int(found.group(1))]} is wrong: {error}") from None


def tensors(rng, *shapes):
    """float64 tensors of standard normal values that require a gradient."""
    return [Tensor(rng.standard_normal(s), requires_grad=True) for s in shapes]


def op(forward, backward, names):
    """A minitl op made of a task's array functions: y = forward(*xs), grads = backward(gy, *xs).
    Each gradient must come back in its input's shape."""

    class TaskOp(Function):
        def forward(self, *xs):
            self.xs = xs
            return forward(*xs)

        def backward(self, gy):
            grads = backward(gy, *self.xs)
            grads = tuple(grads) if isinstance(grads, (tuple, list)) else (grads,)
            for name, x, g in zip(names, self.xs, grads):
                assert g is not None, f"dL/d{name} is None"
                assert np.shape(g) == x.shape, f"dL/d{name} has shape {np.shape(g)}, {name} has shape {x.shape}"
            return grads

    return lambda *xs: TaskOp()(*xs)
