"""Gradient checking: the analytic gradient of backward() against central differences.

For a function f and a fixed random projection r of its output, the scalar
L(x) = Σ r · f(x) has the gradient that backward(r) computes. The numeric
estimate of each element is

    ∂L/∂x_i ≈ (L(x + ε e_i) - L(x - ε e_i)) / (2ε)

computed in float64. The check passes when |analytic - numeric| <= atol + rtol·|numeric|
for every element; the reported error is max|analytic - numeric| / max|numeric|.
"""
import numpy as np

from minitl.backend import get_array_module, to_numpy
from minitl.errors import GradcheckError
from minitl.tensor import Function, Tensor, no_grad

__all__ = ["gradcheck", "minitl_ops", "op_cases", "unchecked_ops"]


def _as_float64_input(i, x):
    if isinstance(x, Tensor) and x.dtype.kind == "f" and x.dtype != np.float64:
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
    rng = np.random.default_rng(seed)
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
        worst = max(worst, _compare(i, x.shape, analytic, _numeric_gradient(projected, inputs, i, eps), atol, rtol))
    return worst


def _numeric_gradient(projected, inputs, i, eps):
    """(L(x + ε e_k) - L(x - ε e_k)) / 2ε for every element k of input i, x restored after each."""
    x = inputs[i]
    numeric = get_array_module(x.data).zeros_like(x.data)
    for k in range(x.size):
        idx = np.unravel_index(k, x.shape)
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
    return numeric


def _compare(i, shape, analytic, numeric, atol, rtol):
    """max|analytic - numeric| / max|numeric|; GradcheckError naming the worst element outside the tolerance."""
    a, n = to_numpy(analytic).astype(np.float64), to_numpy(numeric)
    diff = np.abs(a - n)
    scale = max(float(np.abs(n).max(initial=0.0)), 1e-12)
    bad = diff > atol + rtol * np.abs(n)
    if bad.any():
        j = np.unravel_index(int(np.argmax(np.where(bad, diff, -1))), n.shape)
        rel = diff[j] / max(abs(n[j]), 1e-12)
        raise GradcheckError(
            f"gradcheck failed for input {i} (shape {shape}) at element {tuple(int(v) for v in j)}: "
            f"analytic {a[j]:.8g}, numeric {n[j]:.8g}, relative error {rel:.3g} "
            f"({int(bad.sum())} of {bad.size} elements outside atol={atol}, rtol={rtol})")
    return float(diff.max(initial=0.0)) / scale


def op_cases(seed=0):
    """Small float64 test cases for every registered op: (op name, description, fn, inputs).

    The test suite checks each with ``gradcheck`` and fails if a registered op has
    no case here; examples/02_gradcheck.py prints the same table.
    """
    from minitl import functional as F
    from minitl import ops

    rng = np.random.default_rng(seed)

    def t(*shape, low=None):
        a = rng.standard_normal(shape) if low is None else rng.uniform(low, low + 1.5, shape)
        return Tensor(a, requires_grad=True)

    def distinct(*shape):  # no ties, so max and max-pool are differentiable
        return Tensor(rng.permutation(int(np.prod(shape))).reshape(shape) * 0.1 + 0.01, requires_grad=True)

    def kinked(*shape, kinks=(0.0, 6.0)):  # every element at least 0.2 away from each kink
        a = rng.uniform(-1.5, 7.5, shape)
        for k in kinks:
            a = np.where(np.abs(a - k) < 0.2, a + 0.5, a)
        return Tensor(a, requires_grad=True)

    stats = rng.standard_normal(3), rng.uniform(0.5, 2.0, 3)  # moving mean and variance of 3 channels

    def bn(training, **kw):
        def f(x, *params):
            it = iter(params)
            gamma = next(it) if kw.get("scale", True) else None
            beta = next(it) if kw.get("center", True) else None
            mean, var = stats[0].copy(), stats[1].copy()   # training mode updates them in place
            return F.batch_norm(x, gamma, beta, mean, var, training=training, epsilon=1e-3, axis=kw.get("axis", -1))
        return f

    labels = np.array([0, 2, 1, 2])
    soft = rng.dirichlet(np.ones(3), size=4)
    unnormalised = soft * np.array([0.5, 2.0, 1.0, 0.5])[:, None]  # rows sum to 0.5, 2, 1, 0.5
    return [
        ("Add", "(2,3,4) + (3,1)", ops.add, [t(2, 3, 4), t(3, 1)]),
        ("Add", "(3,) + scalar tensor", ops.add, [t(3), t()]),
        ("Sub", "(2,3) - (2,1)", ops.sub, [t(2, 3), t(2, 1)]),
        ("Mul", "(2,3) * (3,)", ops.mul, [t(2, 3), t(3)]),
        ("Div", "(2,3) / (2,3)", ops.div, [t(2, 3), t(2, 3, low=0.5)]),
        ("Neg", "(4,)", ops.neg, [t(4)]),
        ("Pow", "(3,2) ** 3", lambda x: ops.pow(x, 3), [t(3, 2)]),
        ("Pow", "(3,) ** -0.5", lambda x: ops.pow(x, -0.5), [t(3, low=0.5)]),
        ("Abs", "(2,3), no element near 0", ops.abs, [Tensor(np.sign(rng.standard_normal((2, 3)))
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
        ("GetItem", "integer array with repeats", lambda x: ops.getitem(x, np.array([0, 2, 2, 1, 2])),
         [t(4, 3)]),
        ("Concatenate", "(2,3) and (4,3) on axis 0", lambda a, b: ops.concatenate([a, b], 0), [t(2, 3), t(4, 3)]),
        ("Concatenate", "channels of (1,2,2,3), (1,2,2,1), (1,2,2,2), as Keras' Concatenate",
         lambda a, b, c: ops.concatenate([a, b, c], -1), [t(1, 2, 2, 3), t(1, 2, 2, 1), t(1, 2, 2, 2)]),
        ("ReLUFunction", "(3,4)", F.relu, [t(3, 4)]),
        ("ClippedReLUFunction", "relu6 of (4,5), away from 0 and 6", F.relu6, [kinked(4, 5)]),
        ("ClippedReLUFunction", "max_value 2.5 of (3,4)", lambda x: F.clipped_relu(x, 2.5),
         [kinked(3, 4, kinks=(0.0, 2.5))]),
        ("BatchNormFunction", "training, x (4,2,2,3), gamma, beta", bn(True), [t(4, 2, 2, 3), t(3, low=0.5), t(3)]),
        ("BatchNormFunction", "training, x (3,2,2,3), no gamma (scale=False)", bn(True, scale=False),
         [t(3, 2, 2, 3), t(3)]),
        ("BatchNormFunction", "training, x (3,2,3), no gamma, no beta", bn(True, scale=False, center=False),
         [t(3, 2, 3)]),
        ("BatchNormFunction", "training, channels on axis 1, x (2,3,2,2)", bn(True, axis=1),
         [t(2, 3, 2, 2), t(3, low=0.5), t(3)]),
        ("BatchNormFunction", "inference, x (2,2,2,3), gamma, beta", bn(False), [t(2, 2, 2, 3), t(3, low=0.5), t(3)]),
        ("BatchNormFunction", "inference, x (2,3,3), no gamma", bn(False, scale=False), [t(2, 3, 3), t(3)]),
        ("BatchNormFunction", "inference, x (2,3), no gamma, no beta", bn(False, scale=False, center=False),
         [t(2, 3)]),
        ("Sigmoid", "(3,4)", F.sigmoid, [t(3, 4)]),
        ("Tanh", "(3,4)", F.tanh, [t(3, 4)]),
        ("Softmax", "(3,5) over the last axis", F.softmax, [t(3, 5)]),
        ("LogSoftmax", "(3,5) over the last axis", F.log_softmax, [t(3, 5)]),
        ("SoftmaxCrossEntropy", "(4,3) logits, integer labels",
         lambda z: F.softmax_cross_entropy(z, labels), [t(4, 3)]),
        ("SoftmaxCrossEntropy", "(4,3) logits, soft targets, sum",
         lambda z: F.softmax_cross_entropy(z, soft, reduction="sum"), [t(4, 3)]),
        ("SoftmaxCrossEntropy", "(4,3) logits, targets whose rows sum to 0.5, 2, 1, 0.5",
         lambda z: F.softmax_cross_entropy(z, unnormalised), [t(4, 3)]),
        ("SoftmaxCrossEntropy", "(4,3) logits, rows summing to 0.5, 2, 1, 0.5, per sample",
         lambda z: F.softmax_cross_entropy(z, unnormalised, reduction="none"), [t(4, 3)]),
        ("SoftmaxCrossEntropy", "(4,3) logits, per sample",
         lambda z: F.softmax_cross_entropy(z, labels, reduction="none"), [t(4, 3)]),
        ("SoftmaxCrossEntropy", "(4,3) logits, labels, label smoothing 0.1, class weights 0.5, 2, 1",
         lambda z: F.softmax_cross_entropy(z, labels, label_smoothing=0.1, class_weights=[0.5, 2.0, 1.0]),
         [t(4, 3)]),
        ("SoftmaxCrossEntropy", "(4,3) logits, mixed soft targets, class weights 0.5, 2, 1",
         lambda z: F.softmax_cross_entropy(z, soft, class_weights=[0.5, 2.0, 1.0]), [t(4, 3)]),
        ("Conv2DFunction", "x (2,5,5,3) * W (3,3,3,4) + b, same", lambda x, w, b: F.conv2d(x, w, b, padding="same"),
         [t(2, 5, 5, 3), t(3, 3, 3, 4), t(4)]),
        ("Conv2DFunction", "x (1,6,6,2) * W (2,2,2,3), stride 2, valid", lambda x, w: F.conv2d(x, w, stride=2),
         [t(1, 6, 6, 2), t(2, 2, 2, 3)]),
        ("Conv2DFunction", "relu(x (2,4,4,3) * W (3,3,3,2) + b), same",
         lambda x, w, b: F.conv2d(x, w, b, padding="same", activation="relu"), [t(2, 4, 4, 3), t(3, 3, 3, 2), t(2)]),
        ("Conv2DFunction", "1x1 as a matrix product: x (2,3,3,4) * W (1,1,4,3) + b",
         lambda x, w, b: F.conv2d(x, w, b), [t(2, 3, 3, 4), t(1, 1, 4, 3), t(3)]),
        ("Conv2DFunction", "1x1 stride 2 + relu: x (1,5,4,3) * W (1,1,3,2) + b",
         lambda x, w, b: F.conv2d(x, w, b, stride=2, activation="relu"), [t(1, 5, 4, 3), t(1, 1, 3, 2), t(2)]),
        ("DepthwiseConv2DFunction", "x (2,5,5,3) * W (3,3,3,1), same", lambda x, w: F.depthwise_conv2d(x, w, 1, "same"),
         [t(2, 5, 5, 3), t(3, 3, 3, 1)]),
        ("DepthwiseConv2DFunction", "x (1,6,5,2) * W (3,3,2,2), stride 2, same",
         lambda x, w: F.depthwise_conv2d(x, w, 2, "same"), [t(1, 6, 5, 2), t(3, 3, 2, 2)]),
        ("DepthwiseConv2DFunction", "x (1,5,5,2) * W (3,3,2,1), stride 2, valid",
         lambda x, w: F.depthwise_conv2d(x, w, 2), [t(1, 5, 5, 2), t(3, 3, 2, 1)]),
        ("DepthwiseConv2DFunction", "x (1,4,4,2) * W (2,3,2,3), pads (0,1,1,0)",
         lambda x, w: F.depthwise_conv2d(x, w, 1, ((0, 1), (1, 0))), [t(1, 4, 4, 2), t(2, 3, 2, 3)]),
        ("ZeroPadding2DFunction", "(2,3,4,2) padded ((0,1),(2,1))", lambda x: F.zero_padding2d(x, ((0, 1), (2, 1))),
         [t(2, 3, 4, 2)]),
        ("ZeroPadding2DFunction", "(1,2,2,3) padded 1", lambda x: F.zero_padding2d(x, 1), [t(1, 2, 2, 3)]),
        ("MaxPool2DFunction", "(2,4,4,3), 2x2 stride 2", F.max_pool2d, [distinct(2, 4, 4, 3)]),
        ("MaxPool2DFunction", "(1,5,5,2), 3x3 stride 2, same", lambda x: F.max_pool2d(x, 3, 2, "same"),
         [distinct(1, 5, 5, 2)]),
        ("AvgPool2DFunction", "(2,4,4,3), 2x2 stride 2", F.avg_pool2d, [t(2, 4, 4, 3)]),
        ("AvgPool2DFunction", "(1,5,5,2), 3x3 stride 2, same", lambda x: F.avg_pool2d(x, 3, 2, "same"),
         [t(1, 5, 5, 2)]),
        ("AvgPool2DFunction", "(1,4,5,2), 3x3 stride 1, same (Inception's branch pool)",
         lambda x: F.avg_pool2d(x, 3, 1, "same"), [t(1, 4, 5, 2)]),
        ("MaxPool2DFunction", "(1,7,7,2), 3x3 stride 2, valid", lambda x: F.max_pool2d(x, 3, 2),
         [distinct(1, 7, 7, 2)]),
    ]


def minitl_ops(registry=None):
    """{qualified name: class} of the ops minitl itself defines, from ``Function.registry``
    (a user's Function registers too, under its own module, and is left out)."""
    registry = Function.registry if registry is None else registry
    return {key: cls for key, cls in registry.items() if key.startswith("minitl.")}


def unchecked_ops(registry=None, cases=None):
    """Qualified names of minitl's ops that no case of ``op_cases`` names (cases name an op by its class)."""
    named = {case[0] for case in (op_cases() if cases is None else cases)}
    return sorted(key for key, cls in minitl_ops(registry).items() if cls.__name__ not in named)
