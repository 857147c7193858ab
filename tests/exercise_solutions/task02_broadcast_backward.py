"""Task 2's solution: the backward of ``minitl.ops.Add``, ``Mul`` and ``MatMul``, with
``minitl.tensor._unbroadcast`` applied in the op instead of in the walk."""
import numpy as np


def unbroadcast(grad, shape):
    extra = grad.ndim - len(shape)
    if extra > 0:
        grad = grad.sum(axis=tuple(range(extra)))
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    return grad.sum(axis=stretched, keepdims=True) if stretched else grad


def add_backward(gy, a, b):
    return unbroadcast(gy, np.shape(a)), unbroadcast(gy, np.shape(b))


def mul_backward(gy, a, b):
    return unbroadcast(gy * b, np.shape(a)), unbroadcast(gy * a, np.shape(b))


def matmul_backward(gy, a, b):
    return unbroadcast(gy @ np.swapaxes(b, -1, -2), a.shape), unbroadcast(np.swapaxes(a, -1, -2) @ gy, b.shape)
