"""Task 9: batch normalisation backward, in training mode.

docs/math.md §11 ("The backward pass in training mode"); the engine's op is
``minitl.functional.BatchNormFunction``, and ``minitl.functional.batch_norm_reference`` is the
same forward as a chain of primitive ops, whose gradient autograd computes step by step.
Per channel c (the last axis), over its m values (every other axis):

    μ = (1/m) Σ x        σ² = (1/m) Σ (x − μ)²        s = 1 / √(σ² + ε)
    x̂ = (x − μ) s        y = γ x̂ + β

In training mode μ and σ² are computed from the same x, so the gradient flows through
them too. First through the graph, one primitive at a time (CS231n's staged way), then
simplified, it is

    dL/dβ = Σ gy        dL/dγ = Σ gy ⊙ x̂
    dL/dx = γ s (gy − (1/m) Σ gy − x̂ (1/m) Σ gy ⊙ x̂)

What you write (NumPy arrays in, arrays out)
    batch_norm_backward(gy, cache)    (dL/dx, dL/dγ, dL/dβ), cache from batch_norm_forward

Hints
    - Staged: go back through x̂ = d·s, s = (v + ε)^(−1/2), v = mean(d²), d = x − μ,
      μ = mean(x); each node's gradient is the sum over the nodes that read it (d is read
      twice). Then check that it simplifies to the formula above.
    - Σ over every axis but the last: axis=tuple(range(x.ndim - 1)), with keepdims=True
      where the result must broadcast against x.
    - Σ dL/dx over a channel is 0: shifting every x of a channel changes nothing after
      normalisation.

Run the checks: python -m pytest exercises -k task09
"""
import numpy as np


def batch_norm_forward(x, gamma, beta, epsilon=1e-3):
    """y and the cache for backward (given), channels on the last axis."""
    axes = tuple(range(x.ndim - 1))
    mu = x.mean(axis=axes, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=axes, keepdims=True)
    s = 1 / np.sqrt(var + epsilon)
    x_hat = (x - mu) * s
    return gamma * x_hat + beta, (x_hat, s, gamma)


def batch_norm_backward(gy, cache):
    """(dL/dx, dL/dγ, dL/dβ) in training mode; cache = (x̂, s, γ) as batch_norm_forward made it."""
    raise NotImplementedError("task 9: write batch_norm_backward")
