"""Tensor and reverse-mode automatic differentiation.

A ``Tensor`` wraps an array (NumPy on the CPU, CuPy on the GPU). Every op is a
``Function`` with ``forward`` on arrays and ``backward`` on arrays side by side.
Calling a Function records it as the creator of its output, so the graph is built
as the computation runs; ``Tensor.backward()`` walks that graph in reverse
topological order and applies the chain rule as vector–Jacobian products: for
y = f(x), dL/dx = (∂y/∂x)ᵀ dL/dy, summed over every op that used x. Reverse
topological order makes that sum complete before x's own creator runs backward.
"""
import contextlib
import weakref

import numpy as np

from minitl.backend import DEFAULT_DTYPE, device_of, get_array_module, to_device, to_numpy
from minitl.errors import DeviceError, MinitlError, ShapeError

__all__ = ["Function", "Tensor", "as_tensor", "enable_grad", "is_grad_enabled", "no_grad", "records"]

_grad_enabled = True


@contextlib.contextmanager
def no_grad():
    """Run ops without recording a graph (evaluation, parameter updates)."""
    global _grad_enabled
    previous, _grad_enabled = _grad_enabled, False
    try:
        yield
    finally:
        _grad_enabled = previous


@contextlib.contextmanager
def enable_grad():
    """Record the graph again inside a ``no_grad`` block."""
    global _grad_enabled
    previous, _grad_enabled = _grad_enabled, True
    try:
        yield
    finally:
        _grad_enabled = previous


def is_grad_enabled():
    return _grad_enabled


def records(*tensors):
    """Whether an op on these inputs records a graph: gradients are on and one of them requires grad.

    An op asked to work in place (``inplace=True``) does so only when it records nothing, so
    no backward pass needs the values it overwrites: under ``no_grad``, or in a frozen model.
    """
    return _grad_enabled and any(isinstance(t, Tensor) and t.requires_grad for t in tensors)


def _as_array(data, dtype=None):
    """An array for ``data``: arrays keep their dtype, Python numbers and lists become float32."""
    if isinstance(data, Tensor):
        data = data.data
    xp = get_array_module(data)
    if isinstance(data, (np.ndarray, np.generic)) or xp is not np:
        return data.astype(dtype, copy=False) if dtype is not None else xp.asarray(data)
    return np.asarray(data, dtype=dtype or DEFAULT_DTYPE)


class Tensor:
    """An array with a gradient: ``data``, ``grad`` and the op that created it."""

    # numpy_array + tensor calls Tensor.__radd__; CuPy defers only to a priority above
    # its ndarray's 100, so cupy_array + tensor does too
    __array_priority__ = 1000

    def __init__(self, data, requires_grad=False, dtype=None):
        self.version = 0
        self.data = _as_array(data, dtype)
        if requires_grad and self.data.dtype.kind != "f":
            raise MinitlError(f"only floating-point tensors can require gradients, got {self.data.dtype}")
        self.requires_grad = bool(requires_grad)
        self.grad = None
        self.name = None
        self._creator = None
        self._node = None
        self._retain_grad = False

    # ``version`` counts assignments to ``data``: ``t.data = a``, and ``t.data -= step``
    # (an optimizer step, loading weights). Arrays derived from the data and kept for
    # later (the Winograd-transformed kernel of a conv layer) are recomputed when it
    # changes. Code that writes into the array in place (``t.data[i] = v``) adds 1 itself.
    @property
    def data(self):
        return self._data

    @data.setter
    def data(self, value):
        self._data = value
        self.version += 1

    # ---- array-like properties -------------------------------------------------
    shape = property(lambda self: self.data.shape)
    dtype = property(lambda self: self.data.dtype)
    ndim = property(lambda self: self.data.ndim)
    size = property(lambda self: self.data.size)
    device = property(lambda self: device_of(self.data))
    is_leaf = property(lambda self: self._creator is None)

    def __len__(self):
        return len(self.data)

    def __bool__(self):  # as NumPy: only a one-element tensor has a truth value
        return bool(self.data)

    def __float__(self):
        return float(self.item())

    def __repr__(self):
        body = np.array2string(to_numpy(self.data), precision=4, threshold=20, prefix="Tensor(")
        grad = ", requires_grad=True" if self.requires_grad else ""
        dev = ", device='gpu'" if self.device == "gpu" else ""
        return f"Tensor({body}, dtype={self.dtype}{dev}{grad})"

    def numpy(self):
        """The data as a NumPy array (copied from the GPU when needed)."""
        return to_numpy(self.data)

    def item(self):
        return self.data.item()

    def detach(self):
        """The same data, cut from the graph."""
        return Tensor(self.data)

    def astype(self, dtype):
        return Tensor(self.data.astype(dtype), requires_grad=self.requires_grad)

    def to(self, device):
        """This tensor on ``device`` ('cpu' or 'gpu'); a leaf keeps requires_grad."""
        out = Tensor(to_device(self.data, device), requires_grad=self.requires_grad)
        if self.grad is not None:
            out.grad = to_device(self.grad, device)
        return out

    def retain_grad(self):
        """Keep ``.grad`` on this non-leaf tensor after backward (e.g. for Grad-CAM)."""
        self._retain_grad = True
        return self

    def zero_grad(self):
        self.grad = None

    # ---- reverse-mode differentiation ------------------------------------------
    def backward(self, grad=None, retain_graph=False):
        """Accumulate dself/dleaf into ``leaf.grad`` for every leaf that requires grad.

        ``grad`` is dL/dself; it may be omitted only for a single-element tensor
        (then it is 1). The walk is iterative, so deep graphs never hit Python's
        recursion limit, and each op's saved buffers are freed once used unless
        ``retain_graph=True``.
        """
        if not self.requires_grad:
            raise MinitlError("backward() on a tensor that does not require grad "
                              "(no input had requires_grad=True, or it was built under no_grad)")
        xp = get_array_module(self.data)
        if grad is None:
            if self.size != 1:
                raise ShapeError(f"backward() without a gradient needs a single-element tensor; "
                                 f"this one has shape {self.shape}: pass grad= of that shape, or reduce it first")
            grad = xp.ones_like(self.data)
        else:
            grad = to_device(_as_array(grad, self.dtype), self.device)  # a NumPy grad for a GPU graph
            if grad.shape != self.shape:
                raise ShapeError(f"backward(): gradient shape {grad.shape} does not match tensor shape {self.shape}")

        root = self._graph_node()
        grads = {id(root): grad}
        handed_out = {id(grad)}  # arrays that .grad attributes (or the caller) hold
        order = _topological_order(root)
        while order:  # outputs first; popping lets each used intermediate be freed
            node = order.pop()
            g = grads.pop(id(node), None)
            if g is None:
                continue
            fn = node._creator
            if fn is None:  # a leaf: parameters and inputs keep their gradient
                node.grad = _own_grad(g, handed_out) if node.grad is None else node.grad + g
                continue
            tensor = node.tensor()
            if tensor is not None and tensor._retain_grad:
                tensor.grad = _own_grad(g, handed_out) if tensor.grad is None else tensor.grad + g
            if fn.inputs is None:
                raise MinitlError("backward through a graph that was already freed; "
                                  "call backward(retain_graph=True) the first time")
            fn.needs_grad = tuple(x.requires_grad for x in fn.inputs)
            for i, (x, gx) in enumerate(zip(fn.inputs, _input_grads(fn, g))):
                if gx is None or not x.requires_grad:
                    continue
                gx = _unbroadcast(gx, x.shape).astype(x.dtype, copy=False)
                if gx.shape != x.shape:
                    raise ShapeError(f"{type(fn).__name__}.backward returned a gradient of shape {gx.shape} "
                                     f"for input {i} of shape {x.shape}")
                k = id(x)
                grads[k] = grads[k] + gx if k in grads else gx
            if not retain_graph:
                fn.release()

    def _graph_node(self):
        """What the graph keeps of this tensor: itself for a leaf, else a data-free ``_Node``."""
        if self._creator is None:
            return self
        if self._node is None:
            self._node = _Node(self)
        return self._node

    # ---- operators (the ops themselves live in minitl.ops) ---------------------
    def __add__(self, other): return ops.add(self, other)
    def __radd__(self, other): return ops.add(other, self)
    def __sub__(self, other): return ops.sub(self, other)
    def __rsub__(self, other): return ops.sub(other, self)
    def __mul__(self, other): return ops.mul(self, other)
    def __rmul__(self, other): return ops.mul(other, self)
    def __truediv__(self, other): return ops.div(self, other)
    def __rtruediv__(self, other): return ops.div(other, self)
    def __neg__(self): return ops.neg(self)
    def __pow__(self, exponent): return ops.pow(self, exponent)
    def __rpow__(self, base): return ops.rpow(base, self)
    def __abs__(self): return ops.abs(self)
    def __matmul__(self, other): return ops.matmul(self, other)
    def __rmatmul__(self, other): return ops.matmul(other, self)
    def __getitem__(self, key): return ops.getitem(self, key)

    # Comparisons give boolean tensors and are not differentiable.
    def _compare(self, other, op):
        if isinstance(other, Tensor):
            if other.device != self.device:
                raise DeviceError(f"cannot compare a tensor on {self.device} with one on {other.device}; "
                                  f"move one with .to('cpu') or .to('gpu') first")
            other = other.data
        elif isinstance(other, (np.ndarray, list, tuple)) and self.device == "gpu":
            other = to_device(np.asarray(other), "gpu")  # CuPy refuses host arrays, as arithmetic moves them
        return Tensor(op(self.data, other))

    def __lt__(self, other): return self._compare(other, lambda a, b: a < b)
    def __le__(self, other): return self._compare(other, lambda a, b: a <= b)
    def __gt__(self, other): return self._compare(other, lambda a, b: a > b)
    def __ge__(self, other): return self._compare(other, lambda a, b: a >= b)
    def __eq__(self, other): return self._compare(other, lambda a, b: a == b)
    def __ne__(self, other): return self._compare(other, lambda a, b: a != b)
    __hash__ = object.__hash__

    # ---- methods -------------------------------------------------------------
    def sum(self, axis=None, keepdims=False): return ops.sum(self, axis, keepdims)
    def mean(self, axis=None, keepdims=False): return ops.mean(self, axis, keepdims)
    def max(self, axis=None, keepdims=False): return ops.max(self, axis, keepdims)
    def exp(self): return ops.exp(self)
    def log(self): return ops.log(self)
    def sqrt(self): return ops.sqrt(self)
    def abs(self): return ops.abs(self)
    def reshape(self, *shape): return ops.reshape(self, shape[0] if len(shape) == 1 else shape)
    def transpose(self, *axes): return ops.transpose(self, (axes[0] if len(axes) == 1 else axes) or None)
    def broadcast_to(self, shape): return ops.broadcast_to(self, shape)
    T = property(lambda self: ops.transpose(self))

    def argmax(self, axis=None):
        return Tensor(self.data.argmax(axis=axis))


class _Node:
    """The graph's record of a tensor that an op made: its creator, shape and dtype, not its data.

    Ops keep these for their inputs instead of the tensors, so an intermediate array is
    freed as soon as neither the user nor an op's saved values need it (the conv output
    before a ReLU, say), as in PyTorch.
    """

    __slots__ = ("_creator", "dtype", "shape", "tensor")
    requires_grad, is_leaf = True, False

    def __init__(self, tensor):
        self._creator, self.shape, self.dtype = tensor._creator, tensor.shape, tensor.dtype
        self.tensor = weakref.ref(tensor)

    ndim = property(lambda self: len(self.shape))
    name = property(lambda self: getattr(self.tensor(), "name", None))


def _topological_order(root):
    """Graph nodes reachable from ``root`` that need a gradient, inputs before outputs (iterative DFS)."""
    order, visited = [], set()
    stack = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if id(node) in visited:
            continue
        visited.add(id(node))
        stack.append((node, True))
        fn = node._creator
        if fn is not None and fn.inputs is not None:
            for x in fn.inputs:
                if x.requires_grad and id(x) not in visited:
                    stack.append((x, False))
    return order


def _input_grads(fn, gy):
    """``fn.backward(gy)`` as a tuple of arrays (or None), one per input of ``fn``."""
    gxs = fn.backward(gy)
    gxs = tuple(gxs) if isinstance(gxs, (tuple, list)) else (gxs,)
    if len(gxs) != len(fn.inputs):
        raise MinitlError(f"{type(fn).__name__}.backward returned {len(gxs)} gradient(s) for "
                          f"{len(fn.inputs)} input(s); return one per input of forward (None for no gradient)")
    return tuple(gx.data if isinstance(gx, Tensor) else gx for gx in gxs)


def _own_grad(g, handed_out):
    """``g`` to keep as a ``.grad``: writable, and not an array that another ``.grad`` or the caller holds."""
    if id(g) in handed_out or not _writeable(g):
        g = g.copy()
    handed_out.add(id(g))
    return g


def _writeable(a):
    """NumPy's writeable flag. CuPy arrays have none and broadcast views are writable there,
    so an array with a zero stride (a broadcast view, whose cells share memory) counts as read-only."""
    flag = getattr(a.flags, "writeable", None)
    return flag if flag is not None else 0 not in a.strides


def _unbroadcast(grad, shape):
    """Sum ``grad`` over the axes that broadcasting added or stretched, back to ``shape``."""
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    if extra > 0:
        grad = grad.sum(axis=tuple(range(extra)))
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if stretched:
        grad = grad.sum(axis=stretched, keepdims=True)
    return grad


def _broadcasts(tensors):
    """Whether the tensors' shapes broadcast together (NumPy's rule)."""
    try:
        np.broadcast_shapes(*(t.shape for t in tensors))
    except ValueError:
        return False
    return True


def as_tensor(x, like=None):
    """``x`` as a Tensor; Python numbers take the dtype of ``like`` (as NumPy does for scalars).

    Floats next to an integer tensor are float32, as every Python number alone is.
    """
    if isinstance(x, Tensor):
        return x
    if like is not None and isinstance(x, (int, float, bool)):
        xp = get_array_module(like.data)
        keeps = like.dtype.kind == "f" or (like.dtype.kind in "iu" and isinstance(x, int) and not isinstance(x, bool))
        return Tensor(xp.asarray(x, dtype=like.dtype if keeps else DEFAULT_DTYPE))
    if like is not None and like.device == "gpu":
        return Tensor(to_device(_as_array(x), "gpu"))
    return Tensor(x)


class Function:
    """A differentiable op: ``forward(*arrays) -> array`` and ``backward(gy) -> grads``.

    ``forward`` returns one array; ``backward`` returns one gradient per input (a tuple
    or list, or one array for one input; None for an input without one), each in
    the input's shape or in the broadcast shape that the walk sums back.
    ``needs_grad`` holds one bool per input (as PyTorch's ``ctx.needs_input_grad``),
    set when the op is recorded and again by the autograd walk just before backward:
    backward may skip the work for, and return None for, an input with False.
    Subclasses register themselves in ``Function.registry`` under their qualified
    name, module and class (the gradient-check test walks it, so no op goes
    unchecked). Non-tensor arguments (axes, shapes) go to ``__init__``; whatever
    backward needs is saved on ``self`` in forward and freed by ``release()``
    once the backward pass has used it. A forward may raise ``ShapeError`` for
    inputs that do not fit; a ValueError from inputs that do not broadcast
    together is reported as one.
    """

    registry = {}  # noqa: RUF012 (one registry shared by every Function class)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        Function.registry[f"{cls.__module__}.{cls.__qualname__}"] = cls

    inputs = None
    needs_grad = None

    def __call__(self, *inputs):
        first = next((x for x in inputs if isinstance(x, Tensor)), None)
        tensors = [as_tensor(x, like=first) for x in inputs]
        devices = {t.device for t in tensors}
        if len(devices) > 1:
            desc = ", ".join(f"{t.shape} on {t.device}" for t in tensors)
            raise DeviceError(f"{type(self).__name__}: inputs are on different devices ({desc}); "
                              f"move them with .to('cpu') or .to('gpu') first")
        try:
            y = self.forward(*[t.data for t in tensors])
            if not hasattr(y, "dtype"):
                raise MinitlError(f"{type(self).__name__}.forward must return one array, got {type(y).__name__}; "
                                  f"a Function has one output (write one Function per output)")
        except MinitlError:
            raise
        except ValueError as e:
            if _broadcasts(tensors):
                raise
            shapes = " and ".join(str(t.shape) for t in tensors)  # NumPy's broadcasting error in minitl's words
            raise ShapeError(f"{type(self).__name__}: input shapes {shapes} do not fit ({e})") from None
        record = records(*tensors)
        out = Tensor(y, requires_grad=record and y.dtype.kind == "f")
        if out.requires_grad:
            out._creator = self
            self.inputs = [t._graph_node() if t.requires_grad else t for t in tensors]
            self.needs_grad = tuple(t.requires_grad for t in tensors)
        return out

    def forward(self, *xs):
        raise NotImplementedError

    def backward(self, gy):
        raise NotImplementedError(f"{type(self).__name__} defines no backward(gy)")

    def release(self):
        """Drop the inputs and saved arrays once backward has used them."""
        self.__dict__.clear()


from minitl import ops
