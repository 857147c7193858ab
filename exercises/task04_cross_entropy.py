"""Task 4: softmax cross-entropy, forward and backward: the article's loss L(W).

docs/math.md §5 and §6; the engine's op is ``minitl.functional.SoftmaxCrossEntropy``.
Logits z (N, K) (the model's output), integer labels y (N,):

    ŷ_i = softmax(z_i),   ŷ_ik = e^(z_ik) / Σ_j e^(z_ij)
    L   = 1/N Σ_i −log ŷ_i,y_i
    dL/dz = (softmax(z) − onehot(y)) / N

A logit of 1000 overflows e^z. Subtracting each row's maximum first changes nothing
(softmax(z − c) = softmax(z)) and keeps every exponent ≤ 0:
log ŷ_ik = z_ik − m_i − log Σ_j e^(z_ij − m_i), m_i = max_j z_ij.

What you write (NumPy arrays in; labels are integers in [0, K))
    cross_entropy_forward(z, labels)    L, a float
    cross_entropy_backward(z, labels)   dL/dz, (N, K)

Hints
    - z.max(axis=1, keepdims=True) keeps the axis, so it broadcasts against z.
    - log ŷ at the labels: log_p[np.arange(N), labels].

Run the checks: python -m pytest exercises -k task04
"""


def cross_entropy_forward(z, labels):
    """L = mean over the rows of −log softmax(z)[label], computed without overflow."""
    raise NotImplementedError("task 4: write cross_entropy_forward")


def cross_entropy_backward(z, labels):
    """dL/dz = (softmax(z) − onehot(labels)) / N."""
    raise NotImplementedError("task 4: write cross_entropy_backward")
