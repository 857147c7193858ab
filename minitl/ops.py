"""Tensor algebra: elementwise arithmetic, reductions and shape ops.

Each op is a ``Function`` with its forward and backward side by side. ``gy`` is the
gradient of the loss with respect to the op's output (dL/dy); backward returns dL/dx
for each input. Broadcasting is undone by the autograd walk, so backward may return
gradients in the broadcast shape.
"""
import itertools
import math

from minitl.backend import get_array_module, scatter_add
from minitl.errors import ShapeError
from minitl.tensor import Function, Tensor, records

__all__ = [
    "Abs",
    "Add",
    "BroadcastTo",
    "Concatenate",
    "Div",
    "Exp",
    "GetItem",
    "Log",
    "MatMul",
    "Max",
    "Mean",
    "Mul",
    "Neg",
    "Pow",
    "Reshape",
    "Sqrt",
    "Sub",
    "Sum",
    "Transpose",
    "abs",
    "add",
    "broadcast_to",
    "concatenate",
    "div",
    "exp",
    "getitem",
    "log",
    "matmul",
    "max",
    "mean",
    "mul",
    "neg",
    "pow",
    "reshape",
    "rpow",
    "sqrt",
    "sub",
    "sum",
    "transpose",
]


# ---- elementwise arithmetic ---------------------------------------------------
class Add(Function):
    """y = a + b;  dL/da = gy,  dL/db = gy. inplace=True: y is written into b's array (see ``add``)."""

    def __init__(self, inplace=False):
        self.inplace = inplace

    def forward(self, a, b):
        return get_array_module(b).add(a, b, out=b) if self.inplace else a + b

    def backward(self, gy):
        return gy, gy


class Sub(Function):
    """y = a - b;  dL/da = gy,  dL/db = -gy."""

    def forward(self, a, b):
        return a - b

    def backward(self, gy):
        return gy, -gy


class Mul(Function):
    """y = a * b;  dL/da = gy * b,  dL/db = gy * a."""

    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, gy):
        need_a, need_b = self.needs_grad
        return gy * self.b if need_a else None, gy * self.a if need_b else None


class Div(Function):
    """y = a / b;  dL/da = gy / b,  dL/db = -gy * a / b²."""

    def forward(self, a, b):
        self.a, self.b = a, b
        return a / b

    def backward(self, gy):
        ga = gy / self.b
        return ga, -ga * self.a / self.b if self.needs_grad[1] else None


class Neg(Function):
    """y = -x;  dL/dx = -gy."""

    def forward(self, x):
        return -x

    def backward(self, gy):
        return -gy


class Pow(Function):
    """y = x ** p for a constant p;  dL/dx = gy * p * x^(p-1)."""

    def __init__(self, p):
        self.p = p

    def forward(self, x):
        self.x = x
        return x ** self.p

    def backward(self, gy):
        return gy * self.p * self.x ** (self.p - 1)


class Abs(Function):
    """y = |x|;  dL/dx = gy * sign(x) (0 at x = 0, a subgradient)."""

    def forward(self, x):
        self.x = x
        return get_array_module(x).abs(x)

    def backward(self, gy):
        return gy * get_array_module(gy).sign(self.x)


class Exp(Function):
    """y = exp(x);  dL/dx = gy * y."""

    def forward(self, x):
        self.y = get_array_module(x).exp(x)
        return self.y

    def backward(self, gy):
        return gy * self.y


class Log(Function):
    """y = log(x);  dL/dx = gy / x."""

    def forward(self, x):
        self.x = x
        return get_array_module(x).log(x)

    def backward(self, gy):
        return gy / self.x


class Sqrt(Function):
    """y = √x;  dL/dx = gy / (2 y)."""

    def forward(self, x):
        self.y = get_array_module(x).sqrt(x)
        return self.y

    def backward(self, gy):
        return gy / (2 * self.y)


class MatMul(Function):
    """Y = A @ B, A (..., n, k), B (..., k, m);  dL/dA = gY @ Bᵀ,  dL/dB = Aᵀ @ gY."""

    def forward(self, a, b):
        if a.ndim < 2 or b.ndim < 2:
            raise ShapeError(f"matmul needs operands of rank >= 2, got shapes {a.shape} and {b.shape}")
        if a.shape[-1] != b.shape[-2]:
            raise ShapeError(f"matmul: shapes {a.shape} and {b.shape} do not fit "
                             f"(inner dimensions {a.shape[-1]} != {b.shape[-2]})")
        self.a, self.b = a, b
        return a @ b

    def backward(self, gy):
        xp = get_array_module(gy)
        need_a, need_b = self.needs_grad
        return (gy @ xp.swapaxes(self.b, -1, -2) if need_a else None,
                xp.swapaxes(self.a, -1, -2) @ gy if need_b else None)


# ---- reductions ---------------------------------------------------------------
def _expand(gy, shape, axis, keepdims):
    """Reshape a reduced gradient so it broadcasts against the input of ``shape``."""
    if axis is None or keepdims:
        return gy.reshape([1] * len(shape)) if axis is None and not keepdims else gy
    axes = axis if isinstance(axis, tuple) else (axis,)
    axes = sorted(a % len(shape) for a in axes)
    for a in axes:
        gy = get_array_module(gy).expand_dims(gy, a)
    return gy


class Sum(Function):
    """y = Σ_axis x;  dL/dx = gy broadcast back over the summed axes."""

    def __init__(self, axis=None, keepdims=False):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x):
        self.shape = x.shape
        return x.sum(axis=self.axis, keepdims=self.keepdims)

    def backward(self, gy):
        xp = get_array_module(gy)
        return xp.broadcast_to(_expand(gy, self.shape, self.axis, self.keepdims), self.shape)


class Mean(Function):
    """y = (1/n) Σ_axis x;  dL/dx = gy / n broadcast back, n = number of averaged elements."""

    def __init__(self, axis=None, keepdims=False):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x):
        self.shape = x.shape
        y = x.mean(axis=self.axis, keepdims=self.keepdims)
        self.n = x.size // y.size if y.size else 1
        return y

    def backward(self, gy):
        xp = get_array_module(gy)
        return xp.broadcast_to(_expand(gy, self.shape, self.axis, self.keepdims) / self.n, self.shape)


class Max(Function):
    """y = max_axis x;  dL/dx = gy where x is the maximum (shared equally between ties), else 0."""

    def __init__(self, axis=None, keepdims=False):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x):
        self.x = x
        self.y = x.max(axis=self.axis, keepdims=self.keepdims)
        return self.y

    def backward(self, gy):
        y = _expand(self.y, self.x.shape, self.axis, self.keepdims)
        mask = self.x == y
        count = mask.sum(axis=self.axis, keepdims=True)
        return mask * (_expand(gy, self.x.shape, self.axis, self.keepdims) / count)


# ---- shape ops ----------------------------------------------------------------
class Reshape(Function):
    """y = x viewed with a new shape;  dL/dx = gy reshaped back."""

    def __init__(self, shape):
        self.new_shape = shape

    def forward(self, x):
        self.shape = x.shape
        try:
            return x.reshape(self.new_shape)
        except ValueError:
            raise ShapeError(f"cannot reshape a tensor of shape {x.shape} ({x.size} elements) "
                             f"into shape {self.new_shape}") from None

    def backward(self, gy):
        return gy.reshape(self.shape)


class Transpose(Function):
    """y = x with axes permuted;  dL/dx = gy with the inverse permutation."""

    def __init__(self, axes=None):
        self.axes = axes

    def forward(self, x):
        self.axes = tuple(self.axes) if self.axes is not None else tuple(reversed(range(x.ndim)))
        return x.transpose(self.axes)

    def backward(self, gy):
        inverse = [0] * len(self.axes)
        for i, a in enumerate(self.axes):
            inverse[a] = i
        return gy.transpose(inverse)


class BroadcastTo(Function):
    """y = x stretched to ``shape``;  dL/dx = gy summed over the stretched axes."""

    def __init__(self, shape):
        self.shape = tuple(shape)

    def forward(self, x):
        xp = get_array_module(x)
        try:
            return xp.broadcast_to(x, self.shape)
        except ValueError:
            raise ShapeError(f"cannot broadcast shape {x.shape} to {self.shape}") from None

    def backward(self, gy):
        return gy  # the autograd walk sums it back to the input's shape


class GetItem(Function):
    """y = x[key] (slices or integer arrays);  dL/dx = zeros with gy added at x[key] (repeats add up)."""

    def __init__(self, key):
        self.key = key

    def forward(self, x):
        self.shape = x.shape
        return x[self.key]

    def backward(self, gy):
        return scatter_add(get_array_module(gy).zeros(self.shape, dtype=gy.dtype), self.key, gy)


class Concatenate(Function):
    """y = [x_1, x_2, ...] joined along ``axis``;  dL/dx_i = the slice of gy that x_i filled."""

    def __init__(self, axis=0):
        self.axis = axis

    def forward(self, *xs):
        xp = get_array_module(*xs)
        self.sizes = [x.shape[self.axis] for x in xs]
        try:
            return xp.concatenate(xs, axis=self.axis)
        except ValueError:
            raise ShapeError(f"concatenate along axis {self.axis}: shapes "
                             f"{[x.shape for x in xs]} do not fit") from None

    def backward(self, gy):
        xp = get_array_module(gy)
        bounds = list(itertools.accumulate(self.sizes))[:-1]
        return tuple(xp.split(gy, bounds, axis=self.axis))


# ---- functional forms ---------------------------------------------------------
def add(a, b, inplace=False):
    """a + b; inplace=True writes the sum into b's array when no graph is recorded and a and b are
    Tensors of one shape, dtype and device (a pass and an array saved in inference; b must not
    be used after)."""
    inplace = (inplace and isinstance(a, Tensor) and isinstance(b, Tensor) and not records(a, b)
               and (a.shape, a.dtype, a.device) == (b.shape, b.dtype, b.device)
               and getattr(b.data.flags, "writeable", True))
    return Add(inplace)(a, b)
def sub(a, b): return Sub()(a, b)
def mul(a, b): return Mul()(a, b)
def div(a, b): return Div()(a, b)
def neg(x): return Neg()(x)
def abs(x): return Abs()(x)
def exp(x): return Exp()(x)
def log(x): return Log()(x)
def sqrt(x): return Sqrt()(x)
def matmul(a, b): return MatMul()(a, b)
def sum(x, axis=None, keepdims=False): return Sum(axis, keepdims)(x)
def mean(x, axis=None, keepdims=False): return Mean(axis, keepdims)(x)
def max(x, axis=None, keepdims=False): return Max(axis, keepdims)(x)
def reshape(x, shape): return Reshape(tuple(shape) if not isinstance(shape, int) else (shape,))(x)
def transpose(x, axes=None): return Transpose(axes)(x)
def broadcast_to(x, shape): return BroadcastTo(shape)(x)
def concatenate(xs, axis=0): return Concatenate(axis)(*xs)


def pow(x, p):
    """x ** p for a constant exponent p (a Python number)."""
    if isinstance(p, Tensor):
        raise TypeError("pow: the exponent must be a Python number, not a Tensor")
    return Pow(p)(x)


def rpow(base, x):
    """base ** x for a positive constant base: exp(x · ln base), so dL/dx = gy · y · ln base."""
    if not base > 0:
        raise ValueError(f"base ** tensor needs a positive base, got {base}")
    return exp(mul(x, math.log(base)))


def getitem(x, key):
    """x[key] with basic slicing or integer-array indexing (Tensors in the key are used as arrays)."""
    if isinstance(key, Tensor):
        key = key.data
    elif isinstance(key, tuple):
        key = tuple(k.data if isinstance(k, Tensor) else k for k in key)
    elif isinstance(key, list):
        key = get_array_module(x.data if isinstance(x, Tensor) else x).asarray(key)
    return GetItem(key)(x)

