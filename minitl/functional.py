"""Neural-network functions: activations, softmax, the cross-entropy loss, dense, flatten, dropout.

Convolution and pooling live in ``minitl.conv`` and are re-exported here, so
``import minitl.functional as F`` gives every function a model needs.
"""
import numpy

from . import kernels
from .backend import device_of, get_array_module
from .errors import DeviceError, ShapeError
from .ops import matmul, reshape
from .tensor import Function, Tensor, as_tensor

__all__ = ["relu", "sigmoid", "tanh", "softmax", "log_softmax", "softmax_cross_entropy", "dense", "flatten",
           "dropout", "conv2d", "max_pool2d", "avg_pool2d", "global_avg_pool2d", "ReLUFunction", "Sigmoid", "Tanh",
           "Softmax", "LogSoftmax", "SoftmaxCrossEntropy"]


# ---- activations --------------------------------------------------------------
class ReLUFunction(Function):
    """y = max(x, 0);  dL/dx = gy · [x > 0]  (y > 0 exactly where x > 0, so y is what is kept)."""

    def forward(self, x):
        self.y = kernels.relu_forward(x)
        return self.y

    def backward(self, gy):
        return kernels.relu_backward(gy, self.y)


class Sigmoid(Function):
    """y = σ(x) = 1 / (1 + e^-x);  dL/dx = gy · σ(x) σ(-x) = gy · y (1 - y).

    With e = e^-|x| ≤ 1 nothing overflows: σ(x) = 1 / (1 + e) for x ≥ 0 and
    e / (1 + e) for x < 0, and σ(x) σ(-x) = e / (1 + e)², each to full relative
    precision on both tails (σ(-700) = 9.86e-305, where 1 - y would cancel to 0).
    """

    def forward(self, x):
        xp = get_array_module(x)
        e = xp.exp(-xp.abs(x))
        r = 1 / (1 + e)
        self.slope = e * r * r
        return xp.where(x >= 0, r, e * r)

    def backward(self, gy):
        return gy * self.slope


class Tanh(Function):
    """y = tanh(x);  dL/dx = gy · (1 - y²)."""

    def forward(self, x):
        self.y = get_array_module(x).tanh(x)
        return self.y

    def backward(self, gy):
        return gy * (1 - self.y * self.y)


def _log_softmax(z, axis):
    """log softmax(z) = z - logsumexp(z), stable: the max is subtracted before exp."""
    xp = get_array_module(z)
    shifted = z - z.max(axis=axis, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=axis, keepdims=True))


class Softmax(Function):
    """y_i = e^{z_i} / Σ_j e^{z_j};  dL/dz = y · (gy - Σ_j gy_j y_j)."""

    def __init__(self, axis=-1):
        self.axis = axis

    def forward(self, z):
        self.y = get_array_module(z).exp(_log_softmax(z, self.axis))
        return self.y

    def backward(self, gy):
        return self.y * (gy - (gy * self.y).sum(axis=self.axis, keepdims=True))


class LogSoftmax(Function):
    """y = z - logsumexp(z);  dL/dz = gy - softmax(z) · Σ_j gy_j."""

    def __init__(self, axis=-1):
        self.axis = axis

    def forward(self, z):
        self.y = _log_softmax(z, self.axis)
        return self.y

    def backward(self, gy):
        xp = get_array_module(gy)
        return gy - xp.exp(self.y) * gy.sum(axis=self.axis, keepdims=True)


# ---- the loss -----------------------------------------------------------------
class SoftmaxCrossEntropy(Function):
    """L = 1/N Σ_i l_i with l_i = -Σ_k t_ik log ŷ_ik and ŷ_i = softmax(z_i).

    Logits z are (N, K); targets are integer labels y (N,), which stand for
    t_i = onehot(y_i), or an (N, K) matrix t: one-hot, soft (label smoothing, a
    teacher's probabilities) or rows that do not sum to 1 (weighted samples).
    log ŷ = z - logsumexp(z) is computed stably, so logits of ±1000 neither
    overflow nor give NaN. As l_i = (Σ_k t_ik) logsumexp(z_i) - Σ_k t_ik z_ik,

        dl_i/dz_i = softmax(z_i) · Σ_k t_ik - t_i      (row i of the (N, K) gradient)

    which is the classic softmax(z_i) - onehot(y_i) for labels and for rows of t
    that sum to 1. reduction 'mean' (L, dL/dz = that / N), 'sum' (no 1/N) or 'none'
    (the N values l_i, each row's gradient scaled by its own gy_i).
    """

    def __init__(self, targets, reduction="mean"):
        self.targets, self.reduction = targets, reduction

    def forward(self, z):
        xp = get_array_module(z)
        n = z.shape[0]
        log_p = _log_softmax(z, axis=1)
        t = self.targets
        if t.ndim == 1:
            per_sample = -log_p[xp.arange(n), t]
        else:
            per_sample = -(t * log_p).sum(axis=1)
        self.log_p = log_p
        if self.reduction == "none":
            return per_sample
        total = per_sample.sum()
        return total / n if self.reduction == "mean" else total

    def backward(self, gy):
        xp = get_array_module(gy)
        n = self.log_p.shape[0]
        g = xp.exp(self.log_p)
        if self.targets.ndim == 1:
            g[xp.arange(n), self.targets] -= 1
        else:  # dl_i/dz_i = softmax(z_i) · Σ_k t_ik − t_i, which is softmax − t when each row sums to 1
            g *= self.targets.sum(axis=1, keepdims=True)
            g -= self.targets
        if self.reduction == "none":
            return g * gy[:, None]
        return g * (gy / n if self.reduction == "mean" else gy)


def _check_targets(z, targets):
    xp = get_array_module(z)
    t = targets.data if isinstance(targets, Tensor) else targets
    if device_of(t) == "gpu" and device_of(z) == "cpu":  # host labels for GPU logits are simply copied
        raise DeviceError("softmax_cross_entropy: the targets are on gpu and the logits on cpu; "
                          "move one with .to('cpu') or .to('gpu') first")
    t = xp.asarray(t)
    n, k = z.shape
    if t.ndim == 1:
        if t.dtype.kind not in "iu":
            raise ShapeError(f"softmax_cross_entropy: labels must be integers, got dtype {t.dtype} "
                             f"(pass class indices, or one-hot targets of shape ({n}, {k}))")
        if t.shape[0] != n:
            raise ShapeError(f"softmax_cross_entropy: {t.shape[0]} labels for {n} rows of logits")
        if t.size and (int(t.min()) < 0 or int(t.max()) >= k):
            raise ShapeError(f"softmax_cross_entropy: labels must lie in [0, {k}), "
                             f"got values from {int(t.min())} to {int(t.max())}")
        return t.astype(numpy.int64, copy=False)
    if t.shape != (n, k):
        raise ShapeError(f"softmax_cross_entropy: targets of shape {t.shape} do not fit logits {z.shape}")
    return t.astype(z.dtype, copy=False)


def softmax_cross_entropy(logits, targets, reduction="mean"):
    """Mean cross-entropy of softmax(logits) against integer labels or (N, K) targets (see SoftmaxCrossEntropy)."""
    logits = as_tensor(logits)
    if logits.ndim != 2:
        raise ShapeError(f"softmax_cross_entropy: logits must be (N, K), got shape {logits.shape}")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    return SoftmaxCrossEntropy(_check_targets(logits.data, targets), reduction)(logits)


# ---- functional forms ---------------------------------------------------------
def relu(x): return ReLUFunction()(x)
def sigmoid(x): return Sigmoid()(x)
def tanh(x): return Tanh()(x)
def softmax(x, axis=-1): return Softmax(axis)(x)
def log_softmax(x, axis=-1): return LogSoftmax(axis)(x)


def dense(x, w, b=None):
    """y = x @ W + b with x (N, in), W (in, out), b (out,): Keras' Dense layout."""
    x, w = as_tensor(x), as_tensor(w)
    if x.shape[-1] != w.shape[0]:
        raise ShapeError(f"dense: input has {x.shape[-1]} features (shape {x.shape}) "
                         f"but the kernel expects {w.shape[0]} (kernel shape {w.shape})")
    y = matmul(x, w)
    return y if b is None else y + b


def flatten(x):
    """(N, H, W, C) -> (N, H·W·C) in row-major (h, w, c) order, as Keras flattens."""
    x = as_tensor(x)
    return reshape(x, (x.shape[0], -1))


def dropout(x, rate=0.5, training=True, rng=None):
    """Inverted dropout: keep each element with probability 1 - rate and scale it by 1/(1 - rate).

    Off (the identity) when ``training`` is False or rate is 0. The mask is a
    constant, so the gradient is gy · mask / (1 - rate), through ``mul``.
    """
    x = as_tensor(x)
    if not training or rate == 0:
        return x
    if not 0 <= rate < 1:
        raise ValueError(f"dropout rate must be in [0, 1), got {rate}")
    rng = rng if rng is not None else numpy.random.default_rng()
    xp = get_array_module(x.data)
    keep = xp.asarray(rng.random(x.shape) >= rate)
    return x * (keep.astype(x.dtype) / x.dtype.type(1 - rate))


from .conv import avg_pool2d, conv2d, global_avg_pool2d, max_pool2d  # noqa: E402,F401
