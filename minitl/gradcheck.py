"""Gradient checking: the analytic gradient of backward() against central differences.

For a function f and a fixed random projection r of its output, the scalar
L(x) = Σ r · f(x) has the gradient that backward(r) computes. The numeric
estimate of each element is

    ∂L/∂x_i ≈ (L(x + ε e_i) - L(x - ε e_i)) / (2ε)

computed in float64. The check passes when |analytic - numeric| <= atol + rtol·|numeric|
for every element; the reported error is max|analytic - numeric| / max|numeric|.
"""
import numpy

from .backend import get_array_module, to_numpy
from .errors import GradcheckError
from .tensor import Tensor, no_grad


def _as_float64_input(i, x):
    if isinstance(x, Tensor) and x.dtype.kind == "f" and x.dtype != numpy.float64:
        raise GradcheckError(f"gradcheck needs float64 inputs for accurate differences; input {i} "
                             f"(shape {x.shape}) is {x.dtype}: pass x.astype('float64')")
    return x  # non-tensor arguments (labels, shapes) are passed through


def _outputs(out):
    """``fn``'s result as a tuple of Tensors (a Tensor, or a tuple or list of them)."""
    outs = tuple(out) if isinstance(out, (tuple, list)) else (out,)
    for k, o in enumerate(outs):
        if not isinstance(o, Tensor):
            where = f" as output {k}" if len(outs) > 1 else ""
            raise GradcheckError(f"gradcheck: fn must return a Tensor or a tuple of Tensors, "
                                 f"got {type(o).__name__}{where}")
    return outs


def gradcheck(fn, *inputs, eps=1e-6, atol=1e-6, rtol=1e-4, seed=0):
    """Check ``fn(*inputs)``'s backward against central differences.

    ``inputs`` are Tensors (float64; those with requires_grad=True are checked)
    or other arguments passed through unchanged. ``fn`` returns a Tensor or a tuple
    of Tensors; with several outputs, L sums the projection of each floating-point one.
    Raises ``GradcheckError`` naming the input, the worst element, both values and
    the error; also fails if ``fn`` modified an input in place. Returns the largest
    error over all checked inputs; their ``.grad`` then holds the analytic gradient of L.
    """
    inputs = [_as_float64_input(i, x) for i, x in enumerate(inputs)]
    checked = [i for i, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad]
    if not checked:
        raise GradcheckError("gradcheck: no input has requires_grad=True")
    before = {i: inputs[i].data.copy() for i in range(len(inputs)) if isinstance(inputs[i], Tensor)}

    for i in checked:
        inputs[i].grad = None
    outs = _outputs(fn(*inputs))
    used = [k for k, o in enumerate(outs) if o.requires_grad]
    if not used:
        kinds = ", ".join(f"{o.dtype} {o.shape}" for o in outs)
        raise GradcheckError(f"gradcheck: no output of fn ({kinds}) has a gradient; it must be a floating-point "
                             f"tensor computed from an input with requires_grad=True")
    xp = get_array_module(outs[used[0]].data)
    rng = numpy.random.default_rng(seed)
    r = {k: xp.asarray(rng.standard_normal(outs[k].shape)).astype(outs[k].dtype) for k in used}
    for k in used:
        outs[k].backward(r[k], retain_graph=k != used[-1])

    for i, original in before.items():
        if not bool((inputs[i].data == original).all()):
            raise GradcheckError(f"gradcheck: the function modified input {i} (shape {original.shape}) in place")

    def projected(*args):
        with no_grad():
            outs = _outputs(fn(*args))
            return sum(float((outs[k].data * r[k]).sum()) for k in used)

    worst = 0.0
    for i in checked:
        x = inputs[i]
        analytic = x.grad if x.grad is not None else xp.zeros_like(x.data)
        numeric = xp.zeros_like(x.data)
        for k in range(x.size):
            idx = numpy.unravel_index(k, x.shape)
            old = x.data[idx].item()
            x.data[idx] = old + eps
            x.version += 1                      # written in place: cached transforms are stale
            plus = projected(*inputs)
            x.data[idx] = old - eps
            x.version += 1
            minus = projected(*inputs)
            x.data[idx] = old
            x.version += 1
            numeric[idx] = (plus - minus) / (2 * eps)
        a, n = to_numpy(analytic).astype(numpy.float64), to_numpy(numeric)
        diff = numpy.abs(a - n)
        scale = max(float(numpy.abs(n).max(initial=0.0)), 1e-12)
        worst = max(worst, float(diff.max(initial=0.0)) / scale)
        bad = diff > atol + rtol * numpy.abs(n)
        if bad.any():
            j = numpy.unravel_index(int(numpy.argmax(numpy.where(bad, diff, -1))), n.shape)
            rel = diff[j] / max(abs(n[j]), 1e-12)
            raise GradcheckError(
                f"gradcheck failed for input {i} (shape {x.shape}) at element {tuple(int(v) for v in j)}: "
                f"analytic {a[j]:.8g}, numeric {n[j]:.8g}, relative error {rel:.3g} "
                f"({int(bad.sum())} of {bad.size} elements outside atol={atol}, rtol={rtol})")
    return worst


def op_cases(seed=0):
    """Small float64 test cases for every registered op: (op name, description, fn, inputs).

    The test suite checks each with ``gradcheck`` and fails if a registered op has
    no case here; examples/02_gradcheck.py prints the same table.
    """
    from . import functional as F
    from . import ops

    rng = numpy.random.default_rng(seed)

    def t(*shape, low=None):
        a = rng.standard_normal(shape) if low is None else rng.uniform(low, low + 1.5, shape)
        return Tensor(a, requires_grad=True)

    def distinct(*shape):  # no ties, so max and max-pool are differentiable
        return Tensor(rng.permutation(int(numpy.prod(shape))).reshape(shape) * 0.1 + 0.01, requires_grad=True)

    labels = numpy.array([0, 2, 1, 2])
    soft = rng.dirichlet(numpy.ones(3), size=4)
    return [
        ("Add", "(2,3,4) + (3,1)", ops.add, [t(2, 3, 4), t(3, 1)]),
        ("Add", "(3,) + scalar tensor", ops.add, [t(3), t()]),
        ("Sub", "(2,3) - (2,1)", ops.sub, [t(2, 3), t(2, 1)]),
        ("Mul", "(2,3) * (3,)", ops.mul, [t(2, 3), t(3)]),
        ("Div", "(2,3) / (2,3)", ops.div, [t(2, 3), t(2, 3, low=0.5)]),
        ("Neg", "(4,)", ops.neg, [t(4)]),
        ("Pow", "(3,2) ** 3", lambda x: ops.pow(x, 3), [t(3, 2)]),
        ("Pow", "(3,) ** -0.5", lambda x: ops.pow(x, -0.5), [t(3, low=0.5)]),
        ("Abs", "(2,3), no element near 0", ops.abs, [Tensor(numpy.sign(rng.standard_normal((2, 3)))
                                                          * rng.uniform(0.2, 1.5, (2, 3)), requires_grad=True)]),
        ("Exp", "(2,3)", ops.exp, [t(2, 3)]),
        ("Log", "(2,3)", ops.log, [t(2, 3, low=0.5)]),
        ("Sqrt", "(2,3)", ops.sqrt, [t(2, 3, low=0.5)]),
        ("MatMul", "(3,4) @ (4,2)", ops.matmul, [t(3, 4), t(4, 2)]),
        ("MatMul", "(2,3,4) @ (4,5) batched", ops.matmul, [t(2, 3, 4), t(4, 5)]),
        ("Sum", "all of (2,3,4)", ops.sum, [t(2, 3, 4)]),
        ("Sum", "axis=1", lambda x: ops.sum(x, axis=1), [t(2, 3, 4)]),
        ("Sum", "axis=(0,2), keepdims", lambda x: ops.sum(x, axis=(0, 2), keepdims=True), [t(2, 3, 4)]),
        ("Mean", "all of (2,3)", ops.mean, [t(2, 3)]),
        ("Mean", "axis=-1, keepdims", lambda x: ops.mean(x, axis=-1, keepdims=True), [t(2, 3, 4)]),
        ("Max", "all of (3,4)", ops.max, [distinct(3, 4)]),
        ("Max", "axis=0", lambda x: ops.max(x, axis=0), [distinct(3, 4)]),
        ("Max", "axis=2, keepdims", lambda x: ops.max(x, axis=2, keepdims=True), [distinct(2, 3, 4)]),
        ("Reshape", "(2,6) -> (3,4)", lambda x: ops.reshape(x, (3, 4)), [t(2, 6)]),
        ("Transpose", "(2,3,4) axes (2,0,1)", lambda x: ops.transpose(x, (2, 0, 1)), [t(2, 3, 4)]),
        ("BroadcastTo", "(3,1) -> (2,3,4)", lambda x: ops.broadcast_to(x, (2, 3, 4)), [t(3, 1)]),
        ("GetItem", "basic slice [1:, ::2]", lambda x: ops.getitem(x, (slice(1, None), slice(None, None, 2))),
         [t(3, 5)]),
        ("GetItem", "integer array with repeats", lambda x: ops.getitem(x, numpy.array([0, 2, 2, 1, 2])),
         [t(4, 3)]),
        ("Concatenate", "(2,3) and (4,3) on axis 0", lambda a, b: ops.concatenate([a, b], 0), [t(2, 3), t(4, 3)]),
        ("ReLU", "(3,4)", F.relu, [t(3, 4)]),
        ("Sigmoid", "(3,4)", F.sigmoid, [t(3, 4)]),
        ("Tanh", "(3,4)", F.tanh, [t(3, 4)]),
        ("Softmax", "(3,5) over the last axis", F.softmax, [t(3, 5)]),
        ("LogSoftmax", "(3,5) over the last axis", F.log_softmax, [t(3, 5)]),
        ("SoftmaxCrossEntropy", "(4,3) logits, integer labels",
         lambda z: F.softmax_cross_entropy(z, labels), [t(4, 3)]),
        ("SoftmaxCrossEntropy", "(4,3) logits, soft targets, sum",
         lambda z: F.softmax_cross_entropy(z, soft, reduction="sum"), [t(4, 3)]),
        ("SoftmaxCrossEntropy", "(4,3) logits, per sample",
         lambda z: F.softmax_cross_entropy(z, labels, reduction="none"), [t(4, 3)]),
        ("Conv2D", "x (2,5,5,3) * W (3,3,3,4) + b, same", lambda x, w, b: F.conv2d(x, w, b, padding="same"),
         [t(2, 5, 5, 3), t(3, 3, 3, 4), t(4)]),
        ("Conv2D", "x (1,6,6,2) * W (2,2,2,3), stride 2, valid", lambda x, w: F.conv2d(x, w, stride=2),
         [t(1, 6, 6, 2), t(2, 2, 2, 3)]),
        ("Conv2D", "relu(x (2,4,4,3) * W (3,3,3,2) + b), same",
         lambda x, w, b: F.conv2d(x, w, b, padding="same", activation="relu"), [t(2, 4, 4, 3), t(3, 3, 3, 2), t(2)]),
        ("MaxPool2D", "(2,4,4,3), 2x2 stride 2", F.max_pool2d, [distinct(2, 4, 4, 3)]),
        ("MaxPool2D", "(1,5,5,2), 3x3 stride 2, same", lambda x: F.max_pool2d(x, 3, 2, "same"),
         [distinct(1, 5, 5, 2)]),
        ("AvgPool2D", "(2,4,4,3), 2x2 stride 2", F.avg_pool2d, [t(2, 4, 4, 3)]),
        ("AvgPool2D", "(1,5,5,2), 3x3 stride 2, same", lambda x: F.avg_pool2d(x, 3, 2, "same"), [t(1, 5, 5, 2)]),
    ]
