"""Task 3: ReLU and a numerically safe sigmoid.

docs/math.md §3; the engine's ops are ``minitl.functional.ReLUFunction`` and
``minitl.functional.Sigmoid``.

    ReLU:     y = max(x, 0)                 dL/dx = gy ⊙ [x > 0]
    sigmoid:  y = σ(x) = 1 / (1 + e^(−x))   dL/dx = gy ⊙ σ(x) σ(−x)

Written as it stands, 1 / (1 + e^(−x)) overflows e^(−x) for x < −709, and the slope
y (1 − y) cancels to 0 for x > 37 (y rounds to 1) although σ(x)σ(−x) ≈ e^(−x) is far
from 0 there. A safe form must be right to full relative precision on both tails:
σ(−700) = 9.86e−305 and the slope at x = 40 is 4.25e−18.

What you write (NumPy arrays in, arrays out)
    relu_forward(x), relu_backward(gy, x)
    sigmoid_forward(x), sigmoid_backward(gy, x)

Hints
    - With e = e^(−|x|) (never above 1, never overflows): σ(x) = 1 / (1 + e) for x ≥ 0 and
      e / (1 + e) for x < 0; σ(x) σ(−x) = e / (1 + e)².
    - np.where picks between two arrays element by element.

Run the checks: python -m pytest exercises -k task03
"""


def relu_forward(x):
    """max(x, 0)."""
    raise NotImplementedError("task 3: write relu_forward")


def relu_backward(gy, x):
    """dL/dx = gy ⊙ [x > 0]."""
    raise NotImplementedError("task 3: write relu_backward")


def sigmoid_forward(x):
    """σ(x), without overflow and exact to rounding on both tails."""
    raise NotImplementedError("task 3: write sigmoid_forward")


def sigmoid_backward(gy, x):
    """dL/dx = gy ⊙ σ(x) σ(−x), exact to rounding on both tails."""
    raise NotImplementedError("task 3: write sigmoid_backward")
