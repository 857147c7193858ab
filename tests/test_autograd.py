import sys

import numpy as np
import pytest

import minitl
import minitl.functional as F
from minitl import Function, MinitlError, ShapeError, Tensor


def test_dtype_rules():
    assert Tensor([1.0, 2.0]).dtype == np.float32
    assert Tensor(3).dtype == np.float32
    assert Tensor(np.zeros(2)).dtype == np.float64
    assert Tensor(np.zeros(2, np.float32)).dtype == np.float32
    assert Tensor(np.arange(3)).dtype.kind == "i"
    a, b = Tensor(np.ones(2, np.float32)), Tensor(np.ones(2, np.float64))
    assert (a + b).dtype == np.float64
    assert (a * 2.0).dtype == np.float32  # Python scalars take the tensor's dtype
    with pytest.raises(MinitlError):
        Tensor(np.arange(3), requires_grad=True)


def test_basic_backward_and_accessors():
    x = Tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    y = (x * x).sum()
    y.backward()
    np.testing.assert_allclose(x.grad, [2.0, 4.0, 6.0])
    assert y.item() == 14.0
    assert isinstance(x.numpy(), np.ndarray)
    d = x.detach()
    assert not d.requires_grad and d.is_leaf and d.data is x.data


def test_gradients_accumulate_into_leaves_and_reused_nodes():
    x = Tensor(np.array([2.0]), requires_grad=True)
    y = x * 3
    z = y * y + y  # y used three times: dz/dy = 2y + 1 = 13, dz/dx = 39
    z.backward()
    np.testing.assert_allclose(x.grad, [39.0])
    (x * 1).sum().backward()  # a second graph adds to the existing gradient
    np.testing.assert_allclose(x.grad, [40.0])


def test_broadcasting_gradients_reduce_to_input_shape():
    a = Tensor(np.ones((2, 3, 4)), requires_grad=True)
    b = Tensor(np.ones((3, 1)), requires_grad=True)
    c = Tensor(np.ones(()), requires_grad=True)
    (a * b + c).sum().backward()
    assert b.grad.shape == (3, 1) and c.grad.shape == ()
    np.testing.assert_allclose(b.grad, np.full((3, 1), 8.0))
    np.testing.assert_allclose(c.grad, 24.0)


def test_no_grad_builds_no_graph():
    x = Tensor(np.ones(3), requires_grad=True)
    with minitl.no_grad():
        y = x * 2 + 1
        with minitl.enable_grad():
            z = x * 2
    assert not y.requires_grad and y.is_leaf
    assert z.requires_grad and not z.is_leaf
    assert minitl.is_grad_enabled()
    with pytest.raises(MinitlError, match="does not require grad"):
        y.sum().backward()


def test_deep_chain_has_no_recursion_limit():
    x = Tensor(np.array([1.0]), requires_grad=True)
    y = x
    for _ in range(100_000):
        y = y + 1e-5
    assert 100_000 > sys.getrecursionlimit()
    y.backward()
    np.testing.assert_allclose(x.grad, [1.0])


def test_backward_frees_graph_unless_retained():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = (x.exp() * x).sum()
    y.backward(retain_graph=True)
    g1 = x.grad.copy()
    y.backward()
    np.testing.assert_allclose(x.grad, 2 * g1)
    assert y._creator.inputs is None  # saved buffers released
    with pytest.raises(MinitlError, match="already freed"):
        y.backward()


def test_retain_grad_on_intermediate():
    x = Tensor(np.array([1.0, -2.0]), requires_grad=True)
    h = (x * 3).retain_grad()
    F.relu(h).sum().backward()
    np.testing.assert_allclose(h.grad, [1.0, 0.0])
    np.testing.assert_allclose(x.grad, [3.0, 0.0])


def test_backward_on_non_scalar_needs_gradient():
    x = Tensor(np.ones((2, 2)), requires_grad=True)
    y = x * 2
    with pytest.raises(ShapeError, match=r"single-element.*\(2, 2\)"):
        y.backward()
    with pytest.raises(ShapeError, match="does not match"):
        y.backward(np.ones(3))
    y.backward(np.ones((2, 2)))
    np.testing.assert_allclose(x.grad, 2 * np.ones((2, 2)))


def test_matmul_shape_error_is_clear():
    a, b = Tensor(np.ones((2, 3))), Tensor(np.ones((4, 5)))
    with pytest.raises(ShapeError, match=r"\(2, 3\) and \(4, 5\)"):
        a @ b
    with pytest.raises(ShapeError, match="rank"):
        Tensor(np.ones(3)) @ b
    with pytest.raises(ShapeError, match=r"\(2, 3\) and \(4,\)"):
        a + Tensor(np.ones(4))


def test_comparisons_and_methods():
    x = Tensor(np.array([[1.0, 5.0], [3.0, 2.0]]))
    assert (x > 2).dtype == bool and not (x > 2).requires_grad
    np.testing.assert_array_equal((x == 3).data, [[False, False], [True, False]])
    np.testing.assert_array_equal(x.argmax(axis=1).data, [1, 0])
    np.testing.assert_allclose(x.T.data, x.data.T)
    np.testing.assert_allclose(x.reshape(4).data, [1, 5, 3, 2])
    np.testing.assert_allclose(x.mean(axis=0).data, [2.0, 3.5])
    np.testing.assert_allclose((2 - x).data, 2 - x.data)
    np.testing.assert_allclose((np.ones(2) + x).data, 1 + x.data)
    np.testing.assert_allclose((1 / x).data, 1 / x.data)
    np.testing.assert_allclose((x ** 2).data, x.data ** 2)
    assert "Tensor(" in repr(x)


def test_integer_indexing_with_repeats_accumulates():
    x = Tensor(np.arange(4.0), requires_grad=True)
    x[[0, 2, 2, 2]].sum().backward()
    np.testing.assert_allclose(x.grad, [1.0, 0.0, 3.0, 0.0])


def test_intermediate_arrays_are_freed_when_no_op_needs_them():
    import gc
    import weakref
    x = Tensor(np.arange(1.0, 7.0), requires_grad=True)
    h = x * 2             # Mul keeps x and 2, not its output
    y = F.relu(h)         # ReLU keeps its output, not its input
    data = weakref.ref(h.data)
    del h
    gc.collect()
    assert data() is None, "the graph kept an array that no backward needs"
    y.sum().backward()
    np.testing.assert_allclose(x.grad, np.full(6, 2.0))


def test_leaf_gradients_are_writable_and_not_shared():
    x = Tensor(np.ones(3), requires_grad=True)
    x.sum().backward()          # Sum's backward is a read-only broadcast view
    x.grad *= 0.5
    np.testing.assert_allclose(x.grad, [0.5, 0.5, 0.5])
    a, b = Tensor(np.ones(2), requires_grad=True), Tensor(np.ones(2), requires_grad=True)
    g = np.array([1.0, 2.0])
    (a + b).backward(g)         # Add passes the same array to both inputs
    a.grad[0] = 9.0
    np.testing.assert_allclose(b.grad, [1.0, 2.0])
    np.testing.assert_allclose(g, [1.0, 2.0])


class FlaglessArray:
    """An array whose ``flags`` have no ``writeable``, as CuPy's: only the layout flags."""

    def __init__(self, a):
        self.a = a
        self.flags = type("Flags", (), {"c_contiguous": a.flags.c_contiguous})()
        self.strides = a.strides

    def copy(self):
        return FlaglessArray(self.a.copy())


def test_a_broadcast_gradient_without_a_writeable_flag_is_copied():
    from minitl.tensor import _own_grad
    view = FlaglessArray(np.broadcast_to(np.ones(1), (3,)))   # stride 0, as cupy.broadcast_to gives
    kept = _own_grad(view, set())
    assert kept is not view and 0 not in kept.strides
    plain = FlaglessArray(np.ones(3))
    assert _own_grad(plain, set()) is plain


def test_tensors_outrank_cupy_arrays_in_mixed_operators():
    # cupy.ndarray (priority 100) defers `cupy_array + tensor` to Tensor.__radd__ only for a
    # strictly higher __array_priority__; NumPy arrays defer to any positive one
    assert Tensor.__array_priority__ > 100
    y = np.ones(2, np.float32) + Tensor(np.ones(2, np.float32))
    assert isinstance(y, Tensor) and np.array_equal(y.data, [2, 2])


def test_truth_value_and_float_of_one_element_tensors():
    loss = Tensor(np.array(0.5))
    assert loss < 1.0 and not loss > 1.0
    assert float(loss) == 0.5 and float(Tensor([2.0])) == 2.0
    with pytest.raises(ValueError, match="ambiguous"):
        bool(Tensor(np.array([1.0, 2.0])) > 0)
    with pytest.raises(ValueError, match="ambiguous"):
        _ = Tensor(np.ones(3)) in [Tensor(1.0)]


def test_integer_tensor_with_python_numbers():
    labels = Tensor(np.arange(3))
    assert (labels * 2).dtype == labels.dtype and (1 + labels).dtype == labels.dtype
    np.testing.assert_array_equal((labels + 1).data, [1, 2, 3])
    assert (labels * 0.5).dtype.kind == "f"
    assert (Tensor(np.array([True, False])) + 1).dtype.kind == "f"


def test_a_custom_function_may_return_lists_or_tensors_from_backward():
    class MulBy(Function):
        def forward(self, a, b):
            self.a, self.b = a, b
            return a * b

        def backward(self, gy):
            return [Tensor(gy * self.b), gy * self.a]

    a, b = Tensor(np.array([1.0, 2.0]), requires_grad=True), Tensor(np.array([3.0, 4.0]), requires_grad=True)
    MulBy()(a, b).sum().backward()
    np.testing.assert_allclose(a.grad, [3.0, 4.0])
    np.testing.assert_allclose(b.grad, [1.0, 2.0])


def test_a_custom_function_that_breaks_the_contract_is_named():
    class OneGrad(Function):
        def forward(self, a, b):
            return a + b

        def backward(self, gy):
            return gy

    class SumNoShape(Function):
        def forward(self, x):
            return x.sum()

        def backward(self, gy):
            return gy           # should be broadcast to x's shape

    class TwoOutputs(Function):
        def forward(self, x):
            return x[:1], x[1:]

    class NoBackward(Function):
        def forward(self, x):
            return 2 * x

    x = Tensor(np.ones(3), requires_grad=True)
    with pytest.raises(MinitlError, match=r"OneGrad.backward returned 1 gradient\(s\) for 2 input\(s\)"):
        OneGrad()(x, x).sum().backward()
    with pytest.raises(ShapeError, match=r"SumNoShape.backward returned a gradient of shape \(\) for input 0 "
                                         r"of shape \(3,\)"):
        SumNoShape()(x).backward()
    with pytest.raises(MinitlError, match="TwoOutputs.forward must return one array, got tuple"):
        TwoOutputs()(x)
    with pytest.raises(NotImplementedError, match="NoBackward defines no backward"):
        NoBackward()(x).sum().backward()
    assert x.grad is None


def test_abs_and_a_number_to_the_power_of_a_tensor():
    x = Tensor(np.array([-2.0, 0.5, 3.0]), requires_grad=True)
    y = (abs(x) + 2 ** x).sum()
    y.backward()
    np.testing.assert_allclose(y.item(), 5.5 + 2 ** -2.0 + 2 ** 0.5 + 2 ** 3.0, rtol=1e-12)
    np.testing.assert_allclose(x.grad, np.sign(x.data) + 2 ** x.data * np.log(2), rtol=1e-12)
    assert (2 ** Tensor(np.ones(2, np.float32))).dtype == np.float32
    assert minitl.gradcheck(lambda t: 0.5 ** t, Tensor(np.array([0.3, -1.2]), requires_grad=True)) < 1e-6
    with pytest.raises(ValueError, match="positive base, got -2"):
        (-2) ** x


def test_only_inputs_that_do_not_broadcast_are_a_shape_error():
    with pytest.raises(ShapeError, match=r"Add: input shapes \(2, 3\) and \(4,\) do not fit"):
        Tensor(np.ones((2, 3))) + Tensor(np.ones(4))

    class Picky(Function):
        def forward(self, x):
            raise ValueError("rate must be positive")

    with pytest.raises(ValueError, match="^rate must be positive$") as caught:
        Picky()(Tensor(np.ones(3)))
    assert not isinstance(caught.value, ShapeError)

    class Strict(Function):
        def forward(self, a, b):
            raise ValueError("a bug unrelated to shapes")

    with pytest.raises(ValueError, match="^a bug unrelated to shapes$") as caught:
        Strict()(Tensor(np.ones((2, 3))), Tensor(np.ones(3)))
    assert not isinstance(caught.value, ShapeError)


def test_backward_is_told_which_inputs_need_a_gradient():
    seen = []

    class Scale(Function):
        def forward(self, a, b):
            self.a, self.b = a, b
            return a * b

        def backward(self, gy):
            seen.append(self.needs_grad)
            need_a, need_b = self.needs_grad
            return gy * self.b if need_a else None, gy * self.a if need_b else None

    a, b = Tensor(np.array([1.0, 2.0]), requires_grad=True), Tensor(np.array([3.0, 4.0]))
    Scale()(a, b).sum().backward()
    frozen = Tensor(np.array([5.0, 6.0]), requires_grad=True)
    y = Scale()(a, frozen)
    frozen.requires_grad = False                 # frozen between forward and backward
    y.sum().backward()
    assert seen == [(True, False), (True, False)]
    np.testing.assert_array_equal(a.grad, [8.0, 10.0])
    assert b.grad is None and frozen.grad is None


def test_matmul_computes_only_the_gradients_needed(rng):
    a = Tensor(rng.standard_normal((3, 4)), requires_grad=True)
    w = Tensor(rng.standard_normal((4, 2)))
    fn = minitl.ops.MatMul()
    fn(a, w)
    assert fn.needs_grad == (True, False)           # set when the op is recorded
    ga, gw = fn.backward(np.ones((3, 2)))
    assert gw is None
    np.testing.assert_array_equal(ga, np.ones((3, 2)) @ w.data.T)
