"""Task 3's solution: the forms of ``minitl.functional.ReLUFunction`` and ``minitl.functional.Sigmoid``."""
import numpy as np


def relu_forward(x):
    return np.maximum(x, 0)


def relu_backward(gy, x):
    return gy * (x > 0)


def sigmoid_forward(x):
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def sigmoid_backward(gy, x):
    e = np.exp(-np.abs(x))
    return gy * e / (1 + e) ** 2
