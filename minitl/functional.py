"""Neural-network functions: activations, softmax, the cross-entropy loss, dense, flatten, dropout,
batch normalisation.

Convolution and pooling live in ``minitl.conv`` and are re-exported here, so
``import minitl.functional as F`` gives every function a model needs.
"""
import numpy as np

from minitl import kernels
from minitl.backend import device_of, get_array_module, to_device
from minitl.errors import DeviceError, ShapeError
from minitl.ops import matmul, mean, reshape, sqrt
from minitl.tensor import Function, Tensor, as_tensor, records

__all__ = [
    "BatchNormFunction",
    "ClippedReLUFunction",
    "LogSoftmax",
    "ReLUFunction",
    "Sigmoid",
    "Softmax",
    "SoftmaxCrossEntropy",
    "Tanh",
    "avg_pool2d",
    "batch_norm",
    "batch_norm_reference",
    "clipped_relu",
    "conv2d",
    "dense",
    "depthwise_conv2d",
    "dropout",
    "flatten",
    "global_avg_pool2d",
    "log_softmax",
    "max_pool2d",
    "relu",
    "relu6",
    "sigmoid",
    "softmax",
    "softmax_cross_entropy",
    "tanh",
    "zero_padding2d",
]


# ---- activations --------------------------------------------------------------
class ReLUFunction(Function):
    """y = max(x, 0);  dL/dx = gy · [x > 0]  (y > 0 exactly where x > 0, so y is what is kept).
    inplace=True: y is written into x's array (see ``relu``)."""

    def __init__(self, inplace=False):
        self.inplace = inplace

    def forward(self, x):
        self.y = kernels.relu_forward(x, out=x if self.inplace else None)
        return self.y

    def backward(self, gy):
        return kernels.relu_backward(gy, self.y)


class ClippedReLUFunction(Function):
    """y = min(max(x, 0), m) (ReLU6 for m = 6);  dL/dx = gy · [0 < x < m].

    0 < y < m exactly where 0 < x < m, so y is what is kept (NaN stays NaN).
    inplace=True: y is written into x's array (see ``relu``).
    """

    def __init__(self, max_value, inplace=False):
        self.max_value, self.inplace = max_value, inplace

    def forward(self, x):
        self.y = kernels.clipped_relu_forward(x, self.max_value, out=x if self.inplace else None)
        return self.y

    def backward(self, gy):
        return kernels.clipped_relu_backward(gy, self.y, self.max_value)


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
        return t.astype(np.int64, copy=False)
    if t.shape != (n, k):
        raise ShapeError(f"softmax_cross_entropy: targets of shape {t.shape} do not fit logits {z.shape}")
    return t.astype(z.dtype, copy=False)


def softmax_cross_entropy(logits, targets, reduction="mean", label_smoothing=0.0, class_weights=None):
    """Mean cross-entropy of softmax(logits) against integer labels or (N, K) targets (see SoftmaxCrossEntropy).

    ``label_smoothing`` ε: each target row t_i becomes (1 − ε) t_i + ε/K (Keras' and
    PyTorch's ``label_smoothing``). ``class_weights`` w (K,): example i counts w · t_i times
    (w_{y_i} for a label; for a mixed target the mix of its classes' weights), and the mean
    stays over N, as Keras' ``class_weight``: L = 1/N Σ_i (w · t_i) l_i. Both go through
    the soft-target form, so dL/dz_i = (w · t_i)(softmax(z_i) − t_i) / N.
    """
    logits = as_tensor(logits)
    if logits.ndim != 2:
        raise ShapeError(f"softmax_cross_entropy: logits must be (N, K), got shape {logits.shape}")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    if not 0 <= label_smoothing < 1:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    t = _check_targets(logits.data, targets)
    if label_smoothing or class_weights is not None:
        xp = get_array_module(logits.data)
        k = logits.shape[1]
        if t.ndim == 1:
            t = xp.eye(k, dtype=logits.dtype)[t]
        t = (1 - label_smoothing) * t + label_smoothing / k
        if class_weights is not None:
            w = xp.asarray(class_weights, dtype=logits.dtype)
            if w.shape != (k,):
                raise ShapeError(f"softmax_cross_entropy: {w.shape} class weights for {k} classes")
            t = t * (t @ w)[:, None]
        t = t.astype(logits.dtype, copy=False)
    return SoftmaxCrossEntropy(t, reduction)(logits)


# ---- functional forms ---------------------------------------------------------
def _overwrites(x, inplace):
    """Whether an op asked for ``inplace`` may write its result into x's array: x is a NumPy or
    CuPy array's Tensor, C-contiguous, of a float dtype, and the op records no graph (so no
    backward needs x's values; see ``minitl.tensor.records``). The caller must not use x after."""
    return (inplace and isinstance(x, Tensor) and x.dtype.kind == "f" and x.data.flags.c_contiguous
            and not records(x))


def relu(x, inplace=False):
    """y = max(x, 0); inplace=True overwrites x with y when no graph is recorded (as PyTorch's
    ``relu(x, inplace=True)``: saves a pass and an array in inference; x must not be used after)."""
    return ReLUFunction(_overwrites(x, inplace))(x)


def relu6(x, inplace=False): return clipped_relu(x, 6.0, inplace)
def sigmoid(x): return Sigmoid()(x)
def tanh(x): return Tanh()(x)
def softmax(x, axis=-1): return Softmax(axis)(x)
def log_softmax(x, axis=-1): return LogSoftmax(axis)(x)


def clipped_relu(x, max_value, inplace=False):
    """y = min(max(x, 0), max_value), as Keras' ReLU(max_value); ``inplace`` as for ``relu``."""
    if not max_value > 0:
        raise ValueError(f"clipped_relu: max_value must be positive, got {max_value}")
    return ClippedReLUFunction(float(max_value), _overwrites(x, inplace))(x)


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
    rng = rng if rng is not None else np.random.default_rng()
    xp = get_array_module(x.data)
    keep = xp.asarray(rng.random(x.shape) >= rate)
    return x * (keep.astype(x.dtype) / x.dtype.type(1 - rate))


# ---- batch normalisation ------------------------------------------------------
class BatchNormFunction(Function):
    """Batch normalisation of x over every axis but the channel axis (N, H, W for NHWC), m values each:

        x̂ = (x − μ) / √(σ² + ε),   y = γ · x̂ + β          (γ = 1 without scale, β = 0 without center)

    training: μ = (1/m) Σ x and σ² = (1/m) Σ (x − μ)², the batch's mean and biased variance;
    inference: μ and σ² are the moving statistics, constants given to ``__init__``.
    Backward, sums over the m values of each channel:

        dL/dβ = Σ gy,   dL/dγ = Σ gy · x̂
        inference: dL/dx = gy · γ / √(σ² + ε)
        training:  dL/dx = γ / √(σ² + ε) · (gy − (1/m) Σ gy − x̂ · (1/m) Σ gy · x̂)

    (training: μ and σ² depend on x, which gives the two mean terms; docs/math.md derives them).
    Training runs in ``kernels.batch_norm_forward`` and ``batch_norm_backward``: two passes over
    the data each way, sums in float64.
    forward(x, *params) takes params = [γ] if scale, then [β] if center, each of shape (C,).
    The batch statistics stay on ``batch_mean`` and ``batch_variance`` for the moving update.
    inplace=True (inference only): y is written into x's array (see ``batch_norm``).
    """

    def __init__(self, axis, epsilon, training, mean=None, variance=None, scale=True, center=True, inplace=False):
        self.axis, self.epsilon, self.training = axis, epsilon, training
        self.mean, self.variance, self.scale, self.center = mean, variance, scale, center
        self.inplace = inplace

    def _channels(self, a, ndim):
        """A (C,) array shaped to broadcast along the channel axis."""
        shape = [1] * ndim
        shape[self.axis] = -1
        return a.reshape(shape)

    def forward(self, x, *params):
        xp = get_array_module(x)
        axes = tuple(i for i in range(x.ndim) if i != self.axis)
        gamma = params[0] if self.scale else None
        beta = params[-1] if self.center else None
        def c(a):
            return self._channels(a, x.ndim)
        self.gamma, self.axes = gamma, axes
        if not self.training:                            # y = (x − μ) · γ/√(σ² + ε) + β, one pass
            mean, variance = xp.asarray(self.mean, dtype=x.dtype), xp.asarray(self.variance, dtype=x.dtype)
            self.inv_std = c(1 / xp.sqrt(variance + x.dtype.type(self.epsilon)))
            self.x, self.mean = x, c(mean)
            scale = self.inv_std.reshape(-1) * gamma if gamma is not None else self.inv_std.reshape(-1)
            shift = beta if beta is not None else xp.zeros_like(mean)
            out = x if self.inplace else None
            if self.axis == x.ndim - 1:
                return kernels.channel_affine(x, mean, scale, shift, out=out)
            if out is None:
                return (x - c(mean)) * c(scale) + c(shift)
            out -= c(mean)
            out *= c(scale)
            out += c(shift)
            return out
        self.x = x = xp.ascontiguousarray(xp.moveaxis(x, self.axis, -1))     # (..., C): a view when C is last
        y, self.mean, variance = kernels.batch_norm_forward(x.reshape(-1, x.shape[-1]), gamma, beta, self.epsilon)
        self.inv_std = 1 / xp.sqrt(variance + self.epsilon)
        self.batch_mean, self.batch_variance = self.mean.astype(x.dtype), variance.astype(x.dtype)
        return xp.moveaxis(y.reshape(x.shape), -1, self.axis)

    def backward(self, gy):
        axes, inv_std, gamma = self.axes, self.inv_std, self.gamma
        need_params = self.needs_grad[1:]
        if self.training:
            xp = get_array_module(gy)
            g = xp.moveaxis(gy, self.axis, -1)
            dx, sum_gy_x_hat, sum_gy = kernels.batch_norm_backward(
                g.reshape(-1, g.shape[-1]), self.x.reshape(-1, g.shape[-1]), self.mean, inv_std, gamma,
                self.needs_grad[0], any(need_params))
            dx = None if dx is None else xp.moveaxis(dx.reshape(g.shape), -1, self.axis)
            grads = []
            if self.scale:
                grads.append(sum_gy_x_hat.astype(gy.dtype) if need_params[0] else None)
            if self.center:
                grads.append(sum_gy.astype(gy.dtype) if need_params[-1] else None)
            return (dx, *grads)
        if self.scale and need_params[0]:          # x̂ only for dL/dγ (a frozen layer needs none)
            x_hat = (self.x - self.mean) * inv_std
        scale = inv_std * self._channels(gamma, gy.ndim) if gamma is not None else inv_std
        dx = gy * scale if self.needs_grad[0] else None
        grads = []
        if self.scale:
            grads.append((gy * x_hat).sum(axis=axes) if need_params[0] else None)
        if self.center:
            grads.append(gy.sum(axis=axes) if need_params[-1] else None)
        return (dx, *grads)


def batch_norm(x, gamma, beta, moving_mean, moving_variance, training=False, momentum=0.99, epsilon=1e-3,
               axis=-1, inplace=False):
    """Batch normalisation as Keras' BatchNormalization (see ``BatchNormFunction``); gamma or beta may be None.

    training=True normalises with the batch statistics and updates the moving statistics in
    place (arrays or Tensors, as PyTorch's running_mean):
    moving = moving · momentum + batch · (1 − momentum), with the biased batch variance.
    training=False normalises with the moving statistics and leaves them alone; there
    inplace=True overwrites x with y when no graph is recorded, as ``relu`` does.
    """
    x = as_tensor(x)
    axis = axis % x.ndim if -x.ndim <= axis < x.ndim else None
    if axis is None:
        raise ShapeError(f"batch_norm: axis is out of range for an input of shape {x.shape}")
    stats = [s.data if isinstance(s, Tensor) else s for s in (moving_mean, moving_variance)]
    params = [p for p in (gamma, beta) if p is not None]
    channels = x.shape[axis]
    for what, a in (("gamma", gamma), ("beta", beta), ("moving_mean", stats[0]), ("moving_variance", stats[1])):
        if a is not None and tuple(a.shape) != (channels,):
            raise ShapeError(f"batch_norm: {what} has shape {tuple(a.shape)}, the input {x.shape} has "
                             f"{channels} channels on axis {axis}")
    inplace = not training and _overwrites(x, inplace) and not records(*params)
    fn = BatchNormFunction(axis, epsilon, training, *stats, scale=gamma is not None, center=beta is not None,
                           inplace=inplace)
    y = fn(x, *params)
    if training:
        for target, batch in ((moving_mean, fn.batch_mean), (moving_variance, fn.batch_variance)):
            data = target.data if isinstance(target, Tensor) else target
            batch = to_device(batch, device_of(data)).astype(data.dtype, copy=False)
            data[...] = data * momentum + batch * (1.0 - momentum)
    return y


def batch_norm_reference(x, gamma=None, beta=None, epsilon=1e-3, axis=-1):
    """Training-mode batch normalisation as a chain of primitive ops, for students who compare:
    μ = mean(x), d = x − μ, σ² = mean(d · d), x̂ = d / √(σ² + ε), y = γ · x̂ + β (means over every
    axis but ``axis``). Its gradient is the autograd walk through these ops, which must equal the
    closed form of ``BatchNormFunction.backward`` (tests/test_conv_reference.py compares them)."""
    x = as_tensor(x)
    axes = tuple(i for i in range(x.ndim) if i != axis % x.ndim)
    shape = [1] * x.ndim
    shape[axis] = -1
    d = x - mean(x, axis=axes, keepdims=True)
    x_hat = d / sqrt(mean(d * d, axis=axes, keepdims=True) + epsilon)
    y = x_hat if gamma is None else x_hat * reshape(gamma, shape)
    return y if beta is None else y + reshape(beta, shape)


from minitl.conv import avg_pool2d, conv2d, depthwise_conv2d, global_avg_pool2d, max_pool2d, zero_padding2d
