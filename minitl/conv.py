"""Convolution, depthwise convolution, zero padding and pooling on channels-last tensors (N, H, W, C).

Notation: x is (N, H, W, C), a kernel W is (kh, kw, C, O) (Keras' HWIO), strides
(sh, sw), zero padding (top, bottom, left, right), and the output is
(N, Ho, Wo, O) with Ho = (H + top + bottom - kh) // sh + 1 (Wo likewise).
The array work (im2col, col2im, pooling windows) is in ``minitl.kernels``.
"""
import numpy as np

from minitl import kernels, winograd
from minitl.backend import get_array_module
from minitl.errors import ShapeError
from minitl.ops import mean
from minitl.tensor import Function, as_tensor, records
from minitl.winograd import algorithm, get_algorithm, set_algorithm  # noqa: F401  (conv algorithm for students)

__all__ = [
    "AvgPool2DFunction",
    "Conv2DFunction",
    "DepthwiseConv2DFunction",
    "MaxPool2DFunction",
    "ZeroPadding2DFunction",
    "avg_pool2d",
    "conv2d",
    "conv2d_backward_reference",
    "conv2d_reference",
    "depthwise_conv2d",
    "depthwise_conv2d_reference",
    "global_avg_pool2d",
    "max_pool2d",
    "output_hw",
    "padding_pairs",
    "resolve_padding",
    "zero_padding2d",
]


def _pair(v, what):
    if isinstance(v, int):
        return v, v
    v = tuple(v)
    if len(v) != 2 or not all(isinstance(i, int) for i in v):
        raise ValueError(f"{what} must be an int or a pair of ints, got {v!r}")
    return v


def resolve_padding(padding, size, window, stride):
    """(top, bottom, left, right) for 'valid', 'same' (Keras: extra pad bottom/right), an int or pairs."""
    (h, w), (kh, kw), (sh, sw) = size, window, stride
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            return 0, 0, 0, 0
        if mode == "same":
            pads = []
            for n, k, s in ((h, kh, sh), (w, kw, sw)):
                total = max((-(-n // s) - 1) * s + k - n, 0)
                pads += [total // 2, total - total // 2]
            return tuple(pads)
        raise ValueError(f"padding must be 'valid', 'same', an int or pairs, got {padding!r}")
    if isinstance(padding, int):
        return (padding,) * 4
    p = tuple(padding)
    if len(p) == 2 and all(isinstance(i, int) for i in p):  # (ph, pw)
        return p[0], p[0], p[1], p[1]
    if len(p) == 2:  # ((top, bottom), (left, right))
        return tuple(p[0]) + tuple(p[1])
    if len(p) == 4:
        return p
    raise ValueError(f"cannot read padding {padding!r}")


def output_hw(size, window, stride, pads):
    """(Ho, Wo) for an (H, W) input: Ho = (H + top + bottom - kh) // sh + 1, Wo likewise."""
    (h, w), (kh, kw), (sh, sw) = size, window, stride
    return kernels.output_size(h, kh, sh, pads[0], pads[1]), kernels.output_size(w, kw, sw, pads[2], pads[3])


def _output_size(what, shape, window, stride, pads):
    _, h, w, _ = shape
    ho, wo = output_hw((h, w), window, stride, pads)
    if ho < 1 or wo < 1:
        raise ShapeError(f"{what}: window {window} is larger than the padded input "
                         f"{h + pads[0] + pads[1]}x{w + pads[2] + pads[3]} (input shape {shape}, "
                         f"padding {pads})")
    return ho, wo


def _check_nhwc(what, x):
    if x.ndim != 4:
        raise ShapeError(f"{what}: input must be (N, H, W, C), got shape {x.shape} (rank {x.ndim})")


# Convolution unfolds a few images at a time: each group's cols matrix is at most
# GROUP_BYTES (or one image), written into one buffer that the group loop reuses. A
# layer then never holds the whole (N·Ho·Wo, kh·kw·C) matrix (925 MB for VGG16's
# block1_conv2 at batch 8 x 224), and no fresh pages are touched per call.
GROUP_BYTES = 64 * 2**20


def _group_size(image_bytes):
    """Images per group: about GROUP_BYTES of cols, at least one image."""
    return max(1, GROUP_BYTES // max(image_bytes, 1))


# The forward pass goes further on the CPU: tiles of about TILE_BYTES of cols (whole
# output rows of one image, or whole images), so the matrix product reads each tile
# from the cache that im2col just wrote it to (VGG16's block1_conv2 at batch 8 x 224
# on 2 cores: about 25% faster than 64 MB groups). A tile has at least TILE_ROWS rows
# of cols, as shorter products run slower. Each tile hands the cores from Numba's
# threads to the BLAS threads and back, which costs far more when other processes
# share the cores: with 3-channel inputs at batch 8 x 224 on 2 busy cores (load 6),
# ResNet50's 7×7/2 stem took 0.45x and VGG16's block1_conv1 0.55x the time of 4 MB
# tiles with 16 MB ones, which still sit in a 32 MB L3 cache.
TILE_BYTES = 16 * 2**20
TILE_ROWS = 1024


def _tiles(n, ho, wo, row_bytes, tile_bytes):
    """(n0, n1, i0, i1) per tile: images n0 <= n < n1, output rows i0 <= i < i1, with
    about tile_bytes of cols (row_bytes per row of cols) and at least TILE_ROWS rows."""
    rows = max(tile_bytes // max(row_bytes, 1), TILE_ROWS)
    if rows >= ho * wo:
        step = rows // (ho * wo)
        return [(n0, min(n, n0 + step), 0, ho) for n0 in range(0, n, step)]
    parts = -(-ho // max(1, rows // wo))                # equal tiles of h output rows
    h = -(-ho // parts)
    return [(i, i + 1, i0, min(ho, i0 + h)) for i in range(n) for i0 in range(0, ho, h)]


class Conv2DFunction(Function):
    """Y = X * W + b, a cross-correlation (no kernel flip), computed as matrix products;
    with relu=True, Y = max(X * W + b, 0) (the layer's ReLU fused in).

    Forward:  cols = im2col(X)            (N·Ho·Wo, kh·kw·C)
              Y    = cols @ W_mat + b     W_mat = W.reshape(kh·kw·C, O);  Y is (N·Ho·Wo, O) = NHWC
              Y    = max(Y, 0)            relu only: in place, in the same pass as + b
    Backward: gY     = gY · [Y > 0]       relu only (Y is kept from forward)
              dW_mat = colsᵀ @ gY         (kh·kw·C, O)
              dX     = col2im(gY @ W_matᵀ)
              db     = Σ gY over N, Ho, Wo
    Rows of cols are independent, so forward runs over tiles of output rows
    (``_tiles``) and backward over groups of images (``_group_size``), summing dW over
    the groups. cols is recomputed in backward instead of kept, so memory stays at one
    tile's or group's worth.
    A 1×1 kernel without padding needs no im2col: cols is X itself (every sh-th row and
    sw-th column of it), so Y = X_mat @ W_mat, dW_mat = X_matᵀ @ gY and dX = gY @ W_matᵀ
    put back on that grid (``_pointwise_forward``, ``_pointwise_backward``).
    Under ``set_algorithm('reference')`` forward and backward are the loops of
    ``conv2d_reference`` and ``conv2d_backward_reference`` instead.
    """

    def __init__(self, stride, pads, relu=False):
        self.stride, self.pads, self.relu = stride, pads, relu

    def forward(self, x, w, b=None):
        self.reference = get_algorithm() == "reference"
        if self.reference:
            self.x, self.w, self.has_bias = x, w, b is not None
            y = conv2d_reference(x, w, b, self.stride, self.pads)
            if self.relu:
                y = get_array_module(y).maximum(y, 0)
                self.y = y
            return y
        # -- Winograd (minitl.winograd) for 3x3 stride-1 kernels, when winograd.choose says so
        self.tile = winograd.choose(x, w, b, self.stride, self.pads, getattr(self, "training", False))
        if self.tile:
            self.x, self.w, self.has_bias = x, w, b is not None
            y = winograd.conv_forward(x, w, b, self.pads, self.relu, self.tile, getattr(self, "weight", None))
            if self.relu:
                self.y = y.reshape(-1, w.shape[3])
            return y
        # -- end of Winograd
        kh, kw, c, o = w.shape
        self.x, self.w, self.has_bias = x, w, b is not None
        n = x.shape[0]
        ho, wo = _output_size("conv2d", x.shape, (kh, kw), self.stride, self.pads)
        w_mat = w.reshape(kh * kw * c, o)
        if self._pointwise(w):
            y = self._pointwise_forward(x, w_mat)
        else:
            y = self._im2col_forward(x, w_mat, kh, kw, ho, wo)
        if b is not None and b.dtype != y.dtype:
            y, b = y + b, None                           # NumPy's type promotion
        if self.relu:
            self.y = kernels.bias_relu(y, b)
        elif b is not None:
            y += b
        return y.reshape(n, ho, wo, o)

    def _pointwise(self, w):
        """Whether cols would be X itself: a 1×1 kernel and no padding."""
        return w.shape[:2] == (1, 1) and not any(self.pads)

    def _pointwise_rows(self, x):
        """X_mat (N·Ho·Wo, C): the cells a 1×1 kernel reads."""
        xp = get_array_module(x)
        sh, sw = self.stride
        x = x if (sh, sw) == (1, 1) else x[:, ::sh, ::sw]
        return xp.ascontiguousarray(x).reshape(-1, x.shape[3])

    def _pointwise_forward(self, x, w_mat):
        return get_array_module(x).matmul(self._pointwise_rows(x), w_mat)

    def _pointwise_backward(self, g, w_mat):
        xp = get_array_module(g)
        x = self.x
        need_dx, need_dw = self.needs_grad[:2]
        dw = (self._pointwise_rows(x).T @ g).astype(xp.result_type(x, g), copy=False) if need_dw else None
        dx = None
        if need_dx:
            dcells = (g @ w_mat.T).astype(xp.result_type(g, w_mat), copy=False)
            sh, sw = self.stride
            if (sh, sw) == (1, 1):
                dx = dcells.reshape(x.shape)
            else:
                dx = xp.zeros(x.shape, dtype=dcells.dtype)
                dx[:, ::sh, ::sw] = dcells.reshape(x.shape[0], -(-x.shape[1] // sh), -(-x.shape[2] // sw), -1)
        return dx, dw

    def _im2col_forward(self, x, w_mat, kh, kw, ho, wo):
        xp = get_array_module(x)
        n, k, o = x.shape[0], *w_mat.shape
        y = xp.empty((n * ho * wo, o), dtype=xp.result_type(x, w_mat))
        tiles = _tiles(n, ho, wo, k * x.itemsize, TILE_BYTES if xp is np else GROUP_BYTES)
        buf = xp.empty((max((n1 - n0) * (i1 - i0) for n0, n1, i0, i1 in tiles) * wo, k), dtype=x.dtype)
        for n0, n1, i0, i1 in tiles:
            r0, r1 = (n0 * ho + i0) * wo, ((n1 - 1) * ho + i1) * wo   # rows of y
            cols = kernels.im2col(x[n0:n1], kh, kw, *self.stride, self.pads, out=buf[:r1 - r0], rows=(i0, i1))
            xp.matmul(cols, w_mat, out=y[r0:r1])
        return y

    def backward(self, gy):
        if self.reference:
            g = gy * (self.y > 0) if self.relu else gy
            dx, dw, db = conv2d_backward_reference(g, self.x, self.w, self.stride, self.pads)
            grads = (dx, dw, db)[:3 if self.has_bias else 2]
            return tuple(gi if need else None for gi, need in zip(grads, self.needs_grad))
        xp = get_array_module(gy)
        x, w = self.x, self.w
        kh, kw, c, o = w.shape
        k = kh * kw * c
        n, ho, wo, _ = gy.shape
        m = ho * wo
        g = gy.reshape(n * m, o)
        w_mat = w.reshape(k, o)
        need_dx, need_dw = self.needs_grad[:2]          # no dx for the network's input image, no dW when frozen
        if self._pointwise(w):
            if self.relu:
                g = kernels.relu_backward(g, self.y)
            db = g.sum(axis=0) if self.has_bias and self.needs_grad[2] else None
            dx, dw = self._pointwise_backward(g, w_mat)
            dw = dw.reshape(w.shape) if need_dw else None
            return (dx, dw) if not self.has_bias else (dx, dw, db)
        dw = xp.zeros((k, o), dtype=xp.result_type(x, gy)) if need_dw else None
        db = xp.zeros(o, dtype=gy.dtype) if self.has_bias and self.needs_grad[2] else None
        dx = xp.empty(x.shape, dtype=xp.result_type(gy, w)) if need_dx else None
        step = _group_size(m * k * x.itemsize)
        # -- Winograd (minitl.winograd): dW by the adjoint of F(m×m, 3×3), dX as the
        # convolution of gY with the flipped kernel
        wino = bool(self.tile) and gy.dtype == x.dtype == w.dtype
        u_back = winograd.backward_kernel(getattr(self, "weight", None), w, self.tile) if wino and need_dx else None
        # -- end of Winograd
        buf = None if wino else xp.empty((min(n, step) * m, k), dtype=x.dtype)
        for n0 in range(0, n, step):
            n1 = min(n, n0 + step)
            gi = g[n0 * m:n1 * m]
            if self.relu:                               # one group at a time: no second full-size gY
                gi = kernels.relu_backward(gi, self.y[n0 * m:n1 * m])
            if db is not None:
                db += gi.sum(axis=0)
            if wino:                                    # Winograd, see above
                gi = gi.reshape(n1 - n0, ho, wo, o)
                if need_dw:
                    dw += winograd.backward_weight(x[n0:n1], gi, self.pads, self.tile).reshape(k, o)
                if need_dx:
                    winograd.backward_input(gi, u_back, dx[n0:n1].shape, self.pads, self.tile, out=dx[n0:n1])
                continue
            cols = buf[:(n1 - n0) * m]
            if need_dw:
                kernels.im2col(x[n0:n1], kh, kw, *self.stride, self.pads, out=cols)
                dw += cols.T @ gi
            if need_dx:                                 # dcols overwrites cols when the dtypes allow
                dcols = xp.matmul(gi, w_mat.T, out=cols) if cols.dtype == dx.dtype else gi @ w_mat.T
                kernels.col2im(dcols, (n1 - n0,) + x.shape[1:], kh, kw, *self.stride, self.pads, out=dx[n0:n1])
        dw = dw.reshape(w.shape) if need_dw else None
        return (dx, dw) if not self.has_bias else (dx, dw, db)


def conv2d_reference(x, w, b=None, stride=(1, 1), pads=(0, 0, 0, 0)):
    """The formula itself, as loops over output positions, to check ``Conv2DFunction`` against:
    y[n, i, j, o] = b[o] + Σ_{a,b,c} x_pad[n, i·sh + a, j·sw + b, c] · W[a, b, c, o], for arrays."""
    xp = get_array_module(x)
    kh, kw, _, o = w.shape
    top, bottom, left, right = pads
    x_pad = xp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    rows = range(0, x_pad.shape[1] - kh + 1, stride[0])      # the top row of each window that fits
    cols = range(0, x_pad.shape[2] - kw + 1, stride[1])
    y = xp.zeros((x.shape[0], len(rows), len(cols), o), dtype=xp.result_type(x, w))
    for i, r in enumerate(rows):
        for j, s in enumerate(cols):
            y[:, i, j, :] = xp.tensordot(x_pad[:, r:r + kh, s:s + kw, :], w, axes=3)
    return y if b is None else y + b


def conv2d_backward_reference(gy, x, w, stride=(1, 1), pads=(0, 0, 0, 0)):
    """dX, dW and db of y = ``conv2d_reference(x, w, b, stride, pads)`` as loops over output
    positions (i, j), the slow twin of ``Conv2DFunction.backward``, for arrays:

        dW[a, b, c, o]               += Σ_n x_pad[n, i·sh + a, j·sw + b, c] · gy[n, i, j, o]
        dx_pad[n, i·sh + a, j·sw + b, c] += Σ_o W[a, b, c, o] · gy[n, i, j, o]
        db[o]                        += Σ_n gy[n, i, j, o]

    and dX is dx_pad without its padding (a pixel in several windows gets the sum of their
    gradients, which is what col2im does)."""
    xp = get_array_module(x)
    kh, kw = w.shape[:2]
    sh, sw = stride
    top, bottom, left, right = pads
    x_pad = xp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    dx_pad = xp.zeros(x_pad.shape, dtype=xp.result_type(gy, w))
    dw = xp.zeros(w.shape, dtype=xp.result_type(gy, x))
    for i in range(gy.shape[1]):
        for j in range(gy.shape[2]):
            r, s = i * sh, j * sw
            g = gy[:, i, j, :]                                                      # (N, O)
            dw += xp.tensordot(x_pad[:, r:r + kh, s:s + kw, :], g, axes=([0], [0]))  # (kh, kw, C, O)
            dx_pad[:, r:r + kh, s:s + kw, :] += xp.tensordot(g, w, axes=([1], [3]))  # (N, kh, kw, C)
    dx = xp.ascontiguousarray(dx_pad[:, top:top + x.shape[1], left:left + x.shape[2], :])
    return dx, dw, gy.sum(axis=(0, 1, 2))


def conv2d(x, w, b=None, stride=1, padding="valid", activation=None):
    """2-D convolution of x (N, H, W, C) with kernel w (kh, kw, C, O) and bias b (O,), as Keras' Conv2D;
    activation 'relu' applies max(·, 0) in the same op."""
    x, w = as_tensor(x), as_tensor(w)
    _check_nhwc("conv2d", x)
    if w.ndim != 4:
        raise ShapeError(f"conv2d: kernel must be (kh, kw, C_in, C_out), got shape {w.shape}")
    if x.shape[3] != w.shape[2]:
        raise ShapeError(f"conv2d: input has {x.shape[3]} channels (shape {x.shape}) but the kernel "
                         f"expects {w.shape[2]} (kernel shape {w.shape})")
    if b is not None and tuple(b.shape) != (w.shape[3],):
        raise ShapeError(f"conv2d: bias shape {tuple(b.shape)} does not match {w.shape[3]} filters")
    if activation not in (None, "relu"):
        raise ValueError(f"conv2d: activation must be None or 'relu', got {activation!r}")
    stride = _pair(stride, "stride")
    pads = resolve_padding(padding, x.shape[1:3], w.shape[:2], stride)
    fn = Conv2DFunction(stride, pads, relu=activation == "relu")
    fn.weight = w                                       # Winograd caches its transformed kernel on it
    fn.training = records(x, w, b)                      # a gradient will flow back: see winograd.choose
    return fn(x, w) if b is None else fn(x, w, b)


class MaxPool2DFunction(Function):
    """y = max over each window;  dL/dx = gy routed to the window's arg-max (first one on ties).
    with_arg=False (no graph recorded, so no backward): the arg-max is not kept."""

    def __init__(self, pool, stride, pads, with_arg=True):
        self.pool, self.stride, self.pads, self.with_arg = pool, stride, pads, with_arg

    def forward(self, x):
        _output_size("max_pool2d", x.shape, self.pool, self.stride, self.pads)
        self.shape = x.shape
        y, self.arg = kernels.max_pool_forward(x, *self.pool, *self.stride, self.pads, with_arg=self.with_arg)
        return y

    def backward(self, gy):
        return kernels.max_pool_backward(gy, self.arg, self.shape, *self.pool, *self.stride, self.pads)


class AvgPool2DFunction(Function):
    """y = mean over each window's non-padded cells (Keras);  dL/dx = gy / count spread over the window."""

    def __init__(self, pool, stride, pads):
        self.pool, self.stride, self.pads = pool, stride, pads

    def forward(self, x):
        _output_size("avg_pool2d", x.shape, self.pool, self.stride, self.pads)
        self.shape = x.shape
        return kernels.avg_pool_forward(x, *self.pool, *self.stride, self.pads)

    def backward(self, gy):
        return kernels.avg_pool_backward(gy, self.shape, *self.pool, *self.stride, self.pads)


def _pool(cls, what, x, pool, stride, padding, **options):
    x = as_tensor(x)
    _check_nhwc(what, x)
    pool = _pair(pool, "pool")
    stride = pool if stride is None else _pair(stride, "stride")
    pads = resolve_padding(padding, x.shape[1:3], pool, stride)
    return cls(pool, stride, pads, **options)(x)


def max_pool2d(x, pool=2, stride=None, padding="valid"):
    """Max pooling of x (N, H, W, C); stride defaults to the pool size, as in Keras."""
    return _pool(MaxPool2DFunction, "max_pool2d", x, pool, stride, padding, with_arg=records(x))


def avg_pool2d(x, pool=2, stride=None, padding="valid"):
    """Average pooling of x (N, H, W, C); padded cells are not counted, as in Keras."""
    return _pool(AvgPool2DFunction, "avg_pool2d", x, pool, stride, padding)


def global_avg_pool2d(x):
    """(N, H, W, C) -> (N, C): the mean over H and W."""
    x = as_tensor(x)
    _check_nhwc("global_avg_pool2d", x)
    return mean(x, axis=(1, 2))


class DepthwiseConv2DFunction(Function):
    """Y = depthwise X * W: each input channel c convolved with its own M filters W[:, :, c, :],
    W (kh, kw, C, M) as Keras stores it, Y (N, Ho, Wo, C·M) with output channel c·M + m.

    Forward:  y[n, i, j, c·M + m] = Σ_{a,b} x_pad[n, i·sh + a, j·sw + b, c] · W[a, b, c, m]
    Backward: dW[a, b, c, m] = Σ_{n,i,j} x_pad[n, i·sh + a, j·sw + b, c] · gy[n, i, j, c·M + m]
              dx_pad[n, i·sh + a, j·sw + b, c] += Σ_m gy[n, i, j, c·M + m] · W[a, b, c, m]
    (the kernels are ``minitl.kernels.depthwise_forward`` and ``depthwise_backward``).
    """

    def __init__(self, stride, pads):
        self.stride, self.pads = stride, pads

    def forward(self, x, w):
        _output_size("depthwise_conv2d", x.shape, w.shape[:2], self.stride, self.pads)
        self.x, self.w = x, w
        return kernels.depthwise_forward(x, w, *self.stride, self.pads)

    def backward(self, gy):
        need_dx, need_dw = self.needs_grad
        return kernels.depthwise_backward(gy, self.x, self.w, *self.stride, self.pads, need_dx, need_dw)


def depthwise_conv2d_reference(x, w, stride=(1, 1), pads=(0, 0, 0, 0)):
    """The formula as loops over output positions and channels, to check ``DepthwiseConv2DFunction``:
    y[n, i, j, c·M + m] = Σ_{a,b} x_pad[n, i·sh + a, j·sw + b, c] · W[a, b, c, m], for arrays."""
    kh, kw, C, M = w.shape
    top, bottom, left, right = pads
    x_pad = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    rows = range(0, x_pad.shape[1] - kh + 1, stride[0])
    cols = range(0, x_pad.shape[2] - kw + 1, stride[1])
    y = np.zeros((x.shape[0], len(rows), len(cols), C * M), dtype=np.result_type(x, w))
    for i, r in enumerate(rows):
        for j, s in enumerate(cols):
            for c in range(C):
                window = x_pad[:, r:r + kh, s:s + kw, c]                 # (N, kh, kw)
                y[:, i, j, c * M:(c + 1) * M] = np.tensordot(window, w[:, :, c, :], axes=2)
    return y


def depthwise_conv2d(x, w, stride=1, padding="valid"):
    """Depthwise convolution of x (N, H, W, C) with w (kh, kw, C, M), as Keras' DepthwiseConv2D
    (no bias); 'same' pads as Keras, the extra cell at the bottom/right."""
    x, w = as_tensor(x), as_tensor(w)
    _check_nhwc("depthwise_conv2d", x)
    if w.ndim != 4 or w.shape[2] != x.shape[3]:
        raise ShapeError(f"depthwise_conv2d: kernel must be (kh, kw, C, depth_multiplier) with C = {x.shape[3]} "
                         f"(input shape {x.shape}), got kernel shape {w.shape}")
    stride = _pair(stride, "stride")
    pads = resolve_padding(padding, x.shape[1:3], w.shape[:2], stride)
    return DepthwiseConv2DFunction(stride, pads)(x, w)


class ZeroPadding2DFunction(Function):
    """y = x with zero rows and columns added: (N, top + H + bottom, left + W + right, C);
    dL/dx = gy[:, top:top + H, left:left + W, :] (the padding's gradient is dropped)."""

    def __init__(self, pads):
        self.pads = pads

    def forward(self, x):
        top, bottom, left, right = self.pads
        self.hw = x.shape[1:3]
        return get_array_module(x).pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))

    def backward(self, gy):
        top, _, left, _ = self.pads
        h, w = self.hw
        return gy[:, top:top + h, left:left + w, :]


def zero_padding2d(x, padding=1):
    """Zero padding of x (N, H, W, C) as Keras' ZeroPadding2D: an int, (ph, pw) or ((top, bottom), (left, right))."""
    x = as_tensor(x)
    _check_nhwc("zero_padding2d", x)
    pads = padding_pairs(padding)
    return ZeroPadding2DFunction(pads)(x)


def padding_pairs(padding):
    """(top, bottom, left, right) from Keras' ZeroPadding2D argument: an int, (ph, pw) or ((t, b), (l, r))."""
    if isinstance(padding, int):
        pads = (padding,) * 4
    else:
        p = tuple(padding)
        if len(p) == 2 and all(isinstance(v, int) for v in p):
            pads = (p[0], p[0], p[1], p[1])
        elif len(p) == 2 and all(len(tuple(v)) == 2 for v in p):
            pads = tuple(v for pair in p for v in pair)
        else:
            raise ValueError(f"padding must be an int, (ph, pw) or ((top, bottom), (left, right)), got {padding!r}")
    if any(not isinstance(v, int) or v < 0 for v in pads):
        raise ValueError(f"padding must be non-negative ints, got {padding!r}")
    return tuple(pads)
