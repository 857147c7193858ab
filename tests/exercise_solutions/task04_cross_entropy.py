"""Task 4's solution: ``minitl.functional.SoftmaxCrossEntropy`` for integer labels and the mean."""
import numpy as np


def _log_softmax(z):
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def cross_entropy_forward(z, labels):
    return float(-_log_softmax(z)[np.arange(len(z)), labels].mean())


def cross_entropy_backward(z, labels):
    g = np.exp(_log_softmax(z))
    g[np.arange(len(z)), labels] -= 1
    return g / len(z)
