"""Every registered differentiable op passes a float64 gradient check, and none is left unchecked."""
import numpy as np
import pytest

from minitl import Function, GradcheckError, Tensor, gradcheck, ops
from minitl.check import minitl_ops, op_cases, unchecked_ops

CASES = op_cases()


def test_every_registered_op_has_a_gradient_check():
    assert unchecked_ops(cases=CASES) == [], "ops without a gradient check in minitl.check.op_cases"
    assert len(minitl_ops()) >= 27


def test_the_registry_check_fails_for_a_minitl_op_without_a_case():
    softplus = type("Softplus", (Function,), {"__module__": "minitl.functional",
                                              "forward": lambda self, x: np.logaddexp(x, 0)})
    try:
        assert Function.registry["minitl.functional.Softplus"] is softplus
        assert unchecked_ops(cases=CASES) == ["minitl.functional.Softplus"]
    finally:
        del Function.registry["minitl.functional.Softplus"]


def test_a_user_op_named_like_a_minitl_op_keeps_both_registered():
    class Add(Function):
        def forward(self, a, b):
            return a + b

    assert Function.registry["minitl.ops.Add"] is ops.Add
    assert Function.registry[f"{__name__}.{Add.__qualname__}"] is Add
    assert "minitl.ops.Add" in minitl_ops() and Add not in minitl_ops().values()
    assert unchecked_ops(cases=CASES) == []


@pytest.mark.parametrize("name,desc,fn,inputs", CASES, ids=[f"{c[0]}:{c[1]}" for c in CASES])
def test_op_gradient(name, desc, fn, inputs):
    err = gradcheck(fn, *inputs)
    assert err < 1e-6


def test_gradcheck_catches_a_wrong_backward():
    class BadSquare(Function):
        def forward(self, x):
            self.x = x
            return x * x

        def backward(self, gy):
            return gy * self.x  # should be 2x

    try:
        x = Tensor(np.array([1.0, -2.0, 3.0]), requires_grad=True)
        with pytest.raises(GradcheckError, match=r"input 0 .*element \(\d+,\).*analytic.*numeric"):
            gradcheck(lambda a: BadSquare()(a), x)
    finally:
        del Function.registry[f"{__name__}.{BadSquare.__qualname__}"]


def test_gradcheck_catches_in_place_modification():
    def scale_in_place(x):
        x.data *= 2
        return x * 1

    x = Tensor(np.ones(3), requires_grad=True)
    with pytest.raises(GradcheckError, match="modified input 0"):
        gradcheck(scale_in_place, x)


def test_gradcheck_wants_float64():
    with pytest.raises(GradcheckError, match="float64"):
        gradcheck(lambda a: a * 2, Tensor(np.ones(3, np.float32), requires_grad=True))


def test_gradcheck_of_non_contiguous_input():
    base = np.random.default_rng(1).standard_normal((4, 3))
    x = Tensor(base.T, requires_grad=True)  # a transposed view
    assert not x.data.flags.c_contiguous
    assert gradcheck(lambda a: (a * a).sum(axis=0), x) < 1e-6


def test_gradcheck_of_a_function_with_several_outputs():
    x = Tensor(np.array([0.5, -1.0, 2.0]), requires_grad=True)
    assert gradcheck(lambda a: (a * a, a.exp().sum()), x) < 1e-6

    class HalfWrong(Function):     # right for x, wrong for y
        def forward(self, x, y):
            self.x, self.y = x, y
            return x * y

        def backward(self, gy):
            return gy * self.y, gy

    try:
        y = Tensor(np.array([1.5, 2.0, -0.5]), requires_grad=True)
        with pytest.raises(GradcheckError, match=r"input 1 \(shape \(3,\)\)"):
            gradcheck(lambda a, b: (a * 2, HalfWrong()(a, b)), x, y)
    finally:
        del Function.registry[f"{__name__}.{HalfWrong.__qualname__}"]


def test_gradcheck_says_what_is_wrong_with_the_output():
    x = Tensor(np.array([0.5, -1.0, 2.0]), requires_grad=True)
    with pytest.raises(GradcheckError, match="must return a Tensor or a tuple of Tensors, got float"):
        gradcheck(lambda a: float(a.sum()), x)
    with pytest.raises(GradcheckError, match=r"no output of fn \(int64 \(\)\) has a gradient"):
        gradcheck(lambda a: a.argmax(), x)


def test_gradcheck_names_the_float32_input():
    x = Tensor(np.ones(3), requires_grad=True)
    with pytest.raises(GradcheckError, match=r"input 1 \(shape \(2,\)\) is float32"):
        gradcheck(lambda a, b: a.sum() * b, x, Tensor(np.ones(2, np.float32)))
