"""Task 2: add, multiply and matrix-multiply backward, with broadcasting.

docs/math.md §1 ("Dense layer", "The chain rule over the whole graph"); the engine's ops
are ``minitl.ops.Add``, ``minitl.ops.Mul`` and ``minitl.ops.MatMul``, and its broadcasting
rule is ``minitl.tensor._unbroadcast``.

    y = a + b     dL/da = gy               dL/db = gy
    y = a ⊙ b     dL/da = gy ⊙ b           dL/db = gy ⊙ a
    Y = A @ B     dL/dA = gY @ Bᵀ          dL/dB = Aᵀ @ gY        A (..., n, k), B (..., k, m)

gy = dL/dy has the shape of y. When a was broadcast (a (3, 1) added to a (2, 3, 4)), each
element of a was used several times, so its gradient is the sum of the gradients of
every copy: dL/da must be summed back to a's shape. So must a batched matrix product's
gradient for an operand without the batch axes.

What you write (NumPy arrays in, arrays out; each gradient in its input's shape)
    unbroadcast(grad, shape)            grad summed back to shape
    add_backward(gy, a, b)              (dL/da, dL/db)
    mul_backward(gy, a, b)              (dL/da, dL/db)
    matmul_backward(gy, a, b)           (dL/dA, dL/dB)

Hints
    - Broadcasting adds axes on the left and stretches axes of length 1: sum over the
      added axes, then over the stretched ones with keepdims=True.
    - np.swapaxes(b, -1, -2) is Bᵀ for stacks of matrices.

Run the checks: python -m pytest exercises -k task02
"""


def unbroadcast(grad, shape):
    """``grad`` summed over the axes that broadcasting added or stretched, back to ``shape``."""
    raise NotImplementedError("task 2: write unbroadcast")


def add_backward(gy, a, b):
    """(dL/da, dL/db) for y = a + b."""
    raise NotImplementedError("task 2: write add_backward")


def mul_backward(gy, a, b):
    """(dL/da, dL/db) for y = a ⊙ b."""
    raise NotImplementedError("task 2: write mul_backward")


def matmul_backward(gy, a, b):
    """(dL/dA, dL/dB) for Y = A @ B."""
    raise NotImplementedError("task 2: write matmul_backward")
