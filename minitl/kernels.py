"""Array kernels behind convolution, depthwise convolution, pooling, ReLU and batch norm (channels-last).

Notation
    x      activations, (N, H, W, C)
    w      convolution kernel, HWIO: (kh, kw, C, O)
    pads   zero padding (top, bottom, left, right)
    sh, sw strides
    Ho     (H + top + bottom - kh) // sh + 1, and Wo likewise
    cols   im2col matrix, (N*Ho*Wo, kh*kw*C);
           cols[(n*Ho + i)*Wo + j, (a*kw + b)*C + c] = x_pad[n, i*sh + a, j*sw + b, c]

Convolution is then one GEMM: ``cols @ w.reshape(kh*kw*C, O)`` is the output
(N*Ho*Wo, O), i.e. (N, Ho, Wo, O) after a reshape.

Each kernel has two versions: a Numba one (``_*_nb``, parallel over rows of
cols, N*Ho or N*H, so both cores are busy even at N=1) used for NumPy arrays, and a
plain array-module twin (``*_xp``) written only with ``xp`` slicing, so it
also runs on CuPy arrays. The public function picks one; the tests check that
both agree. Backward kernels gather into rows of dx, so threads never write the
same cell; a sum over rows (depthwise dW, batch norm's sums) gives each chunk of
rows its own partial sum and adds them up after (``_chunks``).
"""

import os

# Numba's OpenMP workers otherwise spin for a while after each parallel loop, taking
# the cores from the BLAS threads of the matrix product that follows (VGG16's
# block1_conv2 forward at batch 8 x 224 on 2 cores: about 15% faster with passive
# waiting). Read when Numba starts its threads, i.e. at the first kernel call; a value
# already set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import ctypes
import sys

import numba
import numpy as np
from numba import prange


def _keep_freed_memory():
    """Keep freed memory in the process for the next arrays (glibc's malloc on Linux).

    By default glibc gives every allocation above 32 MB its own fresh mapping, returned to the
    system when freed, so each new activation or gradient array of that size has its pages
    faulted in and zeroed by the kernel on first touch. A training step allocates gigabytes of
    such arrays: filling a new (200704, 96) float32 array took 7.8 ms against 2.4 ms for an
    array already mapped. With these two settings a freed array's pages serve the next one;
    the process keeps its peak size (as PyTorch's caching allocators do) instead of shrinking.
    ``MINITL_KEEP_FREED_MEMORY=0`` in the environment turns this off.
    """
    if not sys.platform.startswith("linux") or os.environ.get("MINITL_KEEP_FREED_MEMORY", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, say): its own rules stay
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_mmap_threshold, 1 << 30) and mallopt(m_trim_threshold, 1 << 30))


KEEPS_FREED_MEMORY = _keep_freed_memory()

# OpenBLAS's worker threads spin after each matrix product, by default for 2^28 cycles (about
# a tenth of a second), on the cores that the next Numba kernel's threads need: a parallel
# loop then waits for the scheduler to take a core from a spinning thread, milliseconds even
# for a small array. MobileNetV2's training step at batch 16 x 224 on 2 cores took 1.45 s
# with the default, 0.70 s with 2^16 cycles (ResNet50's 3.10 s and 2.57 s); 2^4 and 2^20
# measured within 10% of 2^16. A value already set wins.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "16")


def _reread_blas_thread_timeout():
    """OpenBLAS reads OPENBLAS_THREAD_TIMEOUT when NumPy loads it, before this module runs: make
    each loaded OpenBLAS read its environment again and restart its threads with the new value."""
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "openblas" in line and ".so" in line}
    except OSError:
        return []
    done = []
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)
            read_env, shutdown = lib.openblas_read_env, lib.blas_thread_shutdown_
        except (OSError, AttributeError):
            continue
        read_env()
        shutdown()        # the next product starts the threads again, reading the timeout
        done.append(path)
    return done


_reread_blas_thread_timeout()

from minitl.backend import get_array_module
from minitl.errors import ShapeError

__all__ = [
    "avg_pool_backward",
    "avg_pool_backward_xp",
    "avg_pool_forward",
    "avg_pool_forward_xp",
    "batch_norm_backward",
    "batch_norm_backward_xp",
    "batch_norm_forward",
    "batch_norm_forward_xp",
    "bias_relu",
    "bias_relu_xp",
    "channel_affine",
    "channel_affine_xp",
    "clipped_relu_backward",
    "clipped_relu_backward_xp",
    "clipped_relu_forward",
    "clipped_relu_forward_xp",
    "col2im",
    "col2im_xp",
    "depthwise_backward",
    "depthwise_backward_xp",
    "depthwise_forward",
    "depthwise_forward_xp",
    "im2col",
    "im2col_xp",
    "max_pool_backward",
    "max_pool_backward_xp",
    "max_pool_forward",
    "max_pool_forward_xp",
    "output_size",
    "relu_backward",
    "relu_backward_xp",
    "relu_forward",
    "relu_forward_xp",
]

_jit = numba.njit(parallel=True, cache=True)
_inline = numba.njit(inline="always")


@_inline
def _window_row(y, a, top, sh, Ho):
    """The output row i whose window has input row y at its row a (i*sh + a - top = y), or -1."""
    t = y + top - a
    if t < 0 or t % sh != 0 or t // sh >= Ho:
        return -1
    return t // sh


@_inline
def _input_cell(i, a, s, lo, size):
    """The input cell that output position i reads at window offset a (i*s + a - lo), or -1 in the padding."""
    v = i * s + a - lo
    return v if 0 <= v < size else -1


def output_size(size, k, s, lo, hi):
    """Output length of a window of length k, stride s, over size + lo + hi cells."""
    return (size + lo + hi - k) // s + 1


def _out_hw(x_shape, kh, kw, sh, sw, pads):
    """Checks the arguments and returns (Ho, Wo)."""
    if len(x_shape) != 4:
        raise ShapeError(f"kernels: expected an (N, H, W, C) array, got shape {tuple(x_shape)}")
    if len(pads) != 4 or min(pads) < 0:
        raise ShapeError(f"kernels: pads must be four non-negative ints (top, bottom, left, right), got {pads}")
    if min(kh, kw, sh, sw) < 1:
        raise ShapeError(f"kernels: window {(kh, kw)} and strides {(sh, sw)} must be positive")
    top, bottom, left, right = pads
    _, H, W, _ = x_shape
    Ho = output_size(H, kh, sh, top, bottom)
    Wo = output_size(W, kw, sw, left, right)
    if Ho < 1 or Wo < 1:
        raise ShapeError(f"kernels: window {(kh, kw)} does not fit input {tuple(x_shape)} padded by {tuple(pads)}")
    return Ho, Wo


def _check_pool(x_shape, ph, pw, sh, sw, pads):
    """Like _out_hw, and refuses padding so wide that a window holds no real cell."""
    Ho, Wo = _out_hw(x_shape, ph, pw, sh, sw, pads)
    top, _, left, _ = pads
    _, H, W, _ = x_shape
    if top >= ph or left >= pw or (Ho - 1) * sh - top >= H or (Wo - 1) * sw - left >= W:
        raise ShapeError(f"pooling: padding {tuple(pads)} leaves a {(ph, pw)} window with no real cell "
                         f"for input {tuple(x_shape)}")
    return Ho, Wo


def _is_numpy(a):
    return isinstance(a, np.ndarray)


# ---------------------------------------------------------------- im2col

def _chunks(m):
    """How many chunks of rows a parallel sum splits m rows into, each with its own partial
    sum (added up after): enough to share out between the threads."""
    return max(1, min(m, 4 * numba.get_num_threads()))


def im2col(x, kh, kw, sh, sw, pads, out=None, rows=None):
    """Unfolds x (N, H, W, C) into cols (N*Ho*Wo, kh*kw*C); see the module notation.

    ``rows=(i0, i1)`` unfolds only output rows i0 <= i < i1 of each image: cols is then
    (N*(i1-i0)*Wo, kh*kw*C), the matching rows of the full matrix. ``out``, if given, is
    a C-contiguous array of that shape and x's dtype to write into (a buffer reused
    across calls)."""
    Ho, Wo = _out_hw(x.shape, kh, kw, sh, sw, pads)
    i0, i1 = _row_range(rows, Ho)
    N, _H, _W, C = x.shape
    shape = (N * (i1 - i0) * Wo, kh * kw * C)
    if out is not None and (tuple(out.shape) != shape or out.dtype != x.dtype or not out.flags.c_contiguous):
        raise ShapeError(f"im2col: out must be a C-contiguous {x.dtype} array of shape {shape}, "
                         f"got {out.dtype} {tuple(out.shape)}")
    if not _is_numpy(x):
        return im2col_xp(x, kh, kw, sh, sw, pads, out=out, rows=rows)
    x = np.ascontiguousarray(x)
    cols = np.empty(shape, dtype=x.dtype) if out is None else out
    _im2col_nb(x, cols, kh, kw, sh, sw, pads[0], pads[2], i0, i1, Wo)
    return cols


def _row_range(rows, Ho):
    i0, i1 = (0, Ho) if rows is None else rows
    if not 0 <= i0 < i1 <= Ho:
        raise ShapeError(f"im2col: rows {tuple(rows)} must satisfy 0 <= i0 < i1 <= Ho = {Ho}")
    return i0, i1


@_jit
def _im2col_nb(x, cols, kh, kw, sh, sw, top, left, i0, i1, Wo):
    # Parallel over rows of cols, so a tile of a few output rows still splits evenly.
    _N, H, W, C = x.shape
    for row in prange(cols.shape[0]):
        r = row // Wo
        j = row % Wo
        n = r // (i1 - i0)
        i = i0 + r % (i1 - i0)
        for a in range(kh):
            y = _input_cell(i, a, sh, top, H)
            for b in range(kw):
                xx = _input_cell(j, b, sw, left, W)
                col = (a * kw + b) * C
                if y >= 0 and xx >= 0:
                    for c in range(C):
                        cols[row, col + c] = x[n, y, xx, c]
                else:
                    for c in range(C):
                        cols[row, col + c] = 0


def im2col_xp(x, kh, kw, sh, sw, pads, out=None, rows=None):
    """Array-module twin of im2col: pad, then copy one strided slice per window cell."""
    xp = get_array_module(x)
    Ho, Wo = _out_hw(x.shape, kh, kw, sh, sw, pads)
    i0, i1 = _row_range(rows, Ho)
    N, _H, _W, C = x.shape
    top, bottom, left, right = pads
    xpad = xp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    shape6 = (N, i1 - i0, Wo, kh, kw, C)
    cols = xp.empty(shape6, dtype=x.dtype) if out is None else out.reshape(shape6)
    for a in range(kh):
        for b in range(kw):
            cols[:, :, :, a, b, :] = xpad[:, a + sh * i0:a + sh * (i1 - 1) + 1:sh, b:b + sw * (Wo - 1) + 1:sw, :]
    return cols.reshape(N * (i1 - i0) * Wo, kh * kw * C) if out is None else out


# ---------------------------------------------------------------- col2im

def col2im(cols, x_shape, kh, kw, sh, sw, pads, out=None):
    """Adjoint of im2col: folds cols (N*Ho*Wo, kh*kw*C) back into dx (N, H, W, C),
    summing overlapping cells and dropping the padded border.

    ``out``, if given, is a C-contiguous array of shape x_shape and cols' dtype that
    receives dx (it is overwritten, not added to)."""
    Ho, Wo = _out_hw(x_shape, kh, kw, sh, sw, pads)
    N, H, W, C = x_shape
    if tuple(cols.shape) != (N * Ho * Wo, kh * kw * C):
        raise ShapeError(f"col2im: cols shape {tuple(cols.shape)} does not fit x shape {tuple(x_shape)}, "
                         f"expected {(N * Ho * Wo, kh * kw * C)}")
    if out is not None and (tuple(out.shape) != (N, H, W, C) or out.dtype != cols.dtype
                            or not out.flags.c_contiguous):
        raise ShapeError(f"col2im: out must be a C-contiguous {cols.dtype} array of shape {(N, H, W, C)}, "
                         f"got {out.dtype} {tuple(out.shape)}")
    if not _is_numpy(cols):
        return col2im_xp(cols, x_shape, kh, kw, sh, sw, pads, out=out)
    cols = np.ascontiguousarray(cols)
    if out is None:
        dx = np.zeros((N, H, W, C), dtype=cols.dtype)
    else:
        dx = out
        dx[...] = 0
    _col2im_nb(cols, dx, kh, kw, sh, sw, pads[0], pads[2], Ho, Wo)
    return dx


@_jit
def _col2im_nb(cols, dx, kh, kw, sh, sw, top, left, Ho, Wo):
    # Parallel over rows of dx: each thread gathers into its own rows, so no races.
    # Each dx cell receives its terms in (a, b) order, the same order as the twin.
    N, H, W, C = dx.shape
    for r in prange(N * H):
        n = r // H
        y = r % H
        for a in range(kh):
            i = _window_row(y, a, top, sh, Ho)
            if i < 0:
                continue
            for b in range(kw):
                col = (a * kw + b) * C
                for j in range(Wo):
                    xx = _input_cell(j, b, sw, left, W)
                    if xx >= 0:
                        row = (n * Ho + i) * Wo + j
                        for c in range(C):
                            dx[n, y, xx, c] += cols[row, col + c]


def col2im_xp(cols, x_shape, kh, kw, sh, sw, pads, out=None):
    """Array-module twin of col2im: one strided slice-add per window cell into a padded dx."""
    xp = get_array_module(cols)
    Ho, Wo = _out_hw(x_shape, kh, kw, sh, sw, pads)
    N, H, W, C = x_shape
    top, bottom, left, right = pads
    c6 = cols.reshape(N, Ho, Wo, kh, kw, C)
    dxp = xp.zeros((N, H + top + bottom, W + left + right, C), dtype=cols.dtype)
    for a in range(kh):
        for b in range(kw):
            dxp[:, a:a + sh * (Ho - 1) + 1:sh, b:b + sw * (Wo - 1) + 1:sw, :] += c6[:, :, :, a, b, :]
    if out is None:
        return dxp[:, top:top + H, left:left + W, :]
    out[...] = dxp[:, top:top + H, left:left + W, :]
    return out


# ---------------------------------------------------------------- max pooling

def _arg_dtype(xp, ph, pw):
    return xp.uint8 if ph * pw <= 256 else xp.int32


def max_pool_forward(x, ph, pw, sh, sw, pads, with_arg=True):
    """Max pooling of x (N, H, W, C) over ph x pw windows.

    Returns y (N, Ho, Wo, C) and arg (N, Ho, Wo, C), the winning cell a*pw + b of each
    window: uint8 when ph*pw <= 256 (a quarter of int32's memory, kept until backward),
    else int32. Padded cells never win; on ties the first cell in row-major order wins;
    a NaN wins over numbers (as in argmax), so NaNs propagate. with_arg=False (no
    backward to come): arg is None, and the Numba version only compares values.
    """
    Ho, Wo = _check_pool(x.shape, ph, pw, sh, sw, pads)
    if not _is_numpy(x):
        y, arg = max_pool_forward_xp(x, ph, pw, sh, sw, pads)
        return y, arg if with_arg else None
    x = np.ascontiguousarray(x)
    N, _H, _W, C = x.shape
    y = np.empty((N, Ho, Wo, C), dtype=x.dtype)
    if not with_arg:
        _max_pool_values_nb(x, y, ph, pw, sh, sw, pads[0], pads[2])
        return y, None
    arg = np.empty((N, Ho, Wo, C), dtype=_arg_dtype(np, ph, pw))
    _max_pool_forward_nb(x, y, arg, ph, pw, sh, sw, pads[0], pads[2])
    return y, arg


@_jit
def _max_pool_values_nb(x, y, ph, pw, sh, sw, top, left):
    # _max_pool_forward_nb without arg, for inference: ResNet50's pool1 on (8, 114, 114, 64)
    # took about 60 ms with arg.
    N, H, W, C = x.shape
    _, Ho, Wo, _ = y.shape
    for r in prange(N * Ho):
        n = r // Ho
        i = r % Ho
        for j in range(Wo):
            first = True
            for a in range(ph):
                yy = _input_cell(i, a, sh, top, H)
                if yy < 0:
                    continue
                for b in range(pw):
                    xx = _input_cell(j, b, sw, left, W)
                    if xx < 0:
                        continue
                    for c in range(C):
                        v = x[n, yy, xx, c]
                        best = y[n, i, j, c]
                        if first or v > best or (v != v and best == best):  # noqa: PLR0124 (a NaN wins)
                            y[n, i, j, c] = v
                    first = False


@_jit
def _max_pool_forward_nb(x, y, arg, ph, pw, sh, sw, top, left):
    N, H, W, C = x.shape
    _, Ho, Wo, _ = y.shape
    for r in prange(N * Ho):
        n = r // Ho
        i = r % Ho
        for j in range(Wo):
            first = True                     # every window has a real cell (_check_pool)
            for a in range(ph):
                yy = _input_cell(i, a, sh, top, H)
                if yy < 0:
                    continue
                for b in range(pw):
                    xx = _input_cell(j, b, sw, left, W)
                    if xx < 0:
                        continue
                    k = a * pw + b
                    for c in range(C):
                        v = x[n, yy, xx, c]
                        best = y[n, i, j, c]
                        if first or v > best or (v != v and best == best):  # noqa: PLR0124 (a NaN wins, as in NumPy)
                            y[n, i, j, c] = v
                            arg[n, i, j, c] = k
                    first = False


def max_pool_forward_xp(x, ph, pw, sh, sw, pads):
    """Array-module twin of max_pool_forward: one strided slice per window cell."""
    xp = get_array_module(x)
    Ho, Wo = _check_pool(x.shape, ph, pw, sh, sw, pads)
    N, H, W, C = x.shape
    top, bottom, left, right = pads
    xpad = xp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    valid = xp.pad(xp.ones((1, H, W, 1), dtype=bool), ((0, 0), (top, bottom), (left, right), (0, 0)))
    y = xp.zeros((N, Ho, Wo, C), dtype=x.dtype)
    arg = xp.zeros((N, Ho, Wo, C), dtype=_arg_dtype(xp, ph, pw))
    taken = xp.zeros((1, Ho, Wo, 1), dtype=bool)   # window already has a real cell
    for a in range(ph):
        for b in range(pw):
            rows, cols = slice(a, a + sh * (Ho - 1) + 1, sh), slice(b, b + sw * (Wo - 1) + 1, sw)
            v = xpad[:, rows, cols, :]
            ok = valid[:, rows, cols, :]
            win = ok & (~taken | (v > y) | (xp.isnan(v) & ~xp.isnan(y)))
            y = xp.where(win, v, y)
            arg = xp.where(win, arg.dtype.type(a * pw + b), arg)
            taken = taken | ok
    return y, arg


def max_pool_backward(gy, arg, x_shape, ph, pw, sh, sw, pads):
    """Routes gy (N, Ho, Wo, C) to the winning cells given by arg; returns dx (x_shape),
    summing where windows overlap."""
    Ho, Wo = _check_pool(x_shape, ph, pw, sh, sw, pads)
    N, H, W, C = x_shape
    if tuple(gy.shape) != (N, Ho, Wo, C) or tuple(arg.shape) != (N, Ho, Wo, C):
        raise ShapeError(f"max_pool_backward: gy {tuple(gy.shape)} and arg {tuple(arg.shape)} "
                         f"must both be {(N, Ho, Wo, C)} for x shape {tuple(x_shape)}")
    if not _is_numpy(gy):
        return max_pool_backward_xp(gy, arg, x_shape, ph, pw, sh, sw, pads)
    gy = np.ascontiguousarray(gy)
    arg = np.ascontiguousarray(arg)
    dx = np.zeros((N, H, W, C), dtype=gy.dtype)
    _max_pool_backward_nb(gy, arg, dx, ph, pw, sh, sw, pads[0], pads[2])
    return dx


@_jit
def _max_pool_backward_nb(gy, arg, dx, ph, pw, sh, sw, top, left):
    # Parallel over rows of dx (gather), so overlapping windows need no atomics.
    N, H, W, C = dx.shape
    _, Ho, Wo, _ = gy.shape
    for r in prange(N * H):
        n = r // H
        y = r % H
        for a in range(ph):
            i = _window_row(y, a, top, sh, Ho)
            if i < 0:
                continue
            for b in range(pw):
                k = a * pw + b
                for j in range(Wo):
                    xx = _input_cell(j, b, sw, left, W)
                    if xx >= 0:
                        for c in range(C):
                            if arg[n, i, j, c] == k:
                                dx[n, y, xx, c] += gy[n, i, j, c]


def max_pool_backward_xp(gy, arg, x_shape, ph, pw, sh, sw, pads):
    """Array-module twin of max_pool_backward: one masked slice-add per window cell."""
    xp = get_array_module(gy)
    Ho, Wo = _check_pool(x_shape, ph, pw, sh, sw, pads)
    N, H, W, C = x_shape
    top, bottom, left, right = pads
    dxp = xp.zeros((N, H + top + bottom, W + left + right, C), dtype=gy.dtype)
    zero = xp.zeros((), dtype=gy.dtype)
    for a in range(ph):
        for b in range(pw):
            rows, cols = slice(a, a + sh * (Ho - 1) + 1, sh), slice(b, b + sw * (Wo - 1) + 1, sw)
            dxp[:, rows, cols, :] += xp.where(arg == a * pw + b, gy, zero)
    return dxp[:, top:top + H, left:left + W, :]


# ---------------------------------------------------------------- average pooling

def _real_counts(xp, H, W, ph, pw, sh, sw, pads, Ho, Wo, dtype):
    """Number of real (non-padded) cells in each window, shape (Ho, Wo)."""
    top, _, left, _ = pads
    r0 = xp.arange(Ho) * sh - top
    c0 = xp.arange(Wo) * sw - left
    rows = xp.minimum(r0 + ph, H) - xp.maximum(r0, 0)
    cols = xp.minimum(c0 + pw, W) - xp.maximum(c0, 0)
    return (rows[:, None] * cols[None, :]).astype(dtype)


def avg_pool_forward(x, ph, pw, sh, sw, pads):
    """Average pooling of x (N, H, W, C) -> y (N, Ho, Wo, C), averaging only the
    real cells of each window (padding is not counted)."""
    Ho, Wo = _check_pool(x.shape, ph, pw, sh, sw, pads)
    if not _is_numpy(x):
        return avg_pool_forward_xp(x, ph, pw, sh, sw, pads)
    x = np.ascontiguousarray(x)
    N, H, W, C = x.shape
    counts = _real_counts(np, H, W, ph, pw, sh, sw, pads, Ho, Wo, x.dtype)
    y = np.empty((N, Ho, Wo, C), dtype=x.dtype)
    _avg_pool_forward_nb(x, counts, y, ph, pw, sh, sw, pads[0], pads[2])
    return y


@_jit
def _avg_pool_forward_nb(x, counts, y, ph, pw, sh, sw, top, left):
    N, H, W, C = x.shape
    _, Ho, Wo, _ = y.shape
    for r in prange(N * Ho):
        n = r // Ho
        i = r % Ho
        for j in range(Wo):
            for c in range(C):
                y[n, i, j, c] = 0
            for a in range(ph):
                yy = _input_cell(i, a, sh, top, H)
                if yy < 0:
                    continue
                for b in range(pw):
                    xx = _input_cell(j, b, sw, left, W)
                    if xx >= 0:
                        for c in range(C):
                            y[n, i, j, c] += x[n, yy, xx, c]
            for c in range(C):
                y[n, i, j, c] /= counts[i, j]


def avg_pool_forward_xp(x, ph, pw, sh, sw, pads):
    """Array-module twin of avg_pool_forward: slice-sum over window cells, then divide."""
    xp = get_array_module(x)
    Ho, Wo = _check_pool(x.shape, ph, pw, sh, sw, pads)
    N, H, W, C = x.shape
    top, bottom, left, right = pads
    xpad = xp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    s = xp.zeros((N, Ho, Wo, C), dtype=x.dtype)
    for a in range(ph):
        for b in range(pw):
            s += xpad[:, a:a + sh * (Ho - 1) + 1:sh, b:b + sw * (Wo - 1) + 1:sw, :]
    return s / _real_counts(xp, H, W, ph, pw, sh, sw, pads, Ho, Wo, x.dtype)[None, :, :, None]


def avg_pool_backward(gy, x_shape, ph, pw, sh, sw, pads):
    """Gradient of avg_pool_forward: spreads gy (N, Ho, Wo, C) / count over each window;
    returns dx (x_shape)."""
    Ho, Wo = _check_pool(x_shape, ph, pw, sh, sw, pads)
    N, H, W, C = x_shape
    if tuple(gy.shape) != (N, Ho, Wo, C):
        raise ShapeError(f"avg_pool_backward: gy {tuple(gy.shape)} must be {(N, Ho, Wo, C)} "
                         f"for x shape {tuple(x_shape)}")
    if not _is_numpy(gy):
        return avg_pool_backward_xp(gy, x_shape, ph, pw, sh, sw, pads)
    gy = np.ascontiguousarray(gy)
    counts = _real_counts(np, H, W, ph, pw, sh, sw, pads, Ho, Wo, gy.dtype)
    dx = np.zeros((N, H, W, C), dtype=gy.dtype)
    _avg_pool_backward_nb(gy, counts, dx, ph, pw, sh, sw, pads[0], pads[2])
    return dx


@_jit
def _avg_pool_backward_nb(gy, counts, dx, ph, pw, sh, sw, top, left):
    # Parallel over rows of dx (gather), in the twin's (a, b) order.
    N, H, W, C = dx.shape
    _, Ho, Wo, _ = gy.shape
    for r in prange(N * H):
        n = r // H
        y = r % H
        for a in range(ph):
            i = _window_row(y, a, top, sh, Ho)
            if i < 0:
                continue
            for b in range(pw):
                for j in range(Wo):
                    xx = _input_cell(j, b, sw, left, W)
                    if xx >= 0:
                        for c in range(C):
                            dx[n, y, xx, c] += gy[n, i, j, c] / counts[i, j]


def avg_pool_backward_xp(gy, x_shape, ph, pw, sh, sw, pads):
    """Array-module twin of avg_pool_backward: one slice-add of gy / count per window cell."""
    xp = get_array_module(gy)
    Ho, Wo = _check_pool(x_shape, ph, pw, sh, sw, pads)
    N, H, W, C = x_shape
    top, bottom, left, right = pads
    g = gy / _real_counts(xp, H, W, ph, pw, sh, sw, pads, Ho, Wo, gy.dtype)[None, :, :, None]
    dxp = xp.zeros((N, H + top + bottom, W + left + right, C), dtype=gy.dtype)
    for a in range(ph):
        for b in range(pw):
            dxp[:, a:a + sh * (Ho - 1) + 1:sh, b:b + sw * (Wo - 1) + 1:sw, :] += g
    return dxp[:, top:top + H, left:left + W, :]


# ---------------------------------------------------------------- ReLU
# Kept in Numba because it measured about 2x faster than NumPy on 2 cores
# for a (8, 224, 224, 64) float32 array (one fused, threaded pass, into a new array).
# In place (out=x) each pass has a kernel of its own that takes one array: given x and y
# as two arguments that are the same array, LLVM's vectorised loop, which checks that
# they do not overlap, falls back to its scalar loop (ReLU6 in place on (16, 112, 112, 96)
# float32: 18.0 ms through the two-array kernel, 2.2 ms through the one-array one).

def relu_forward(x, out=None):
    """y = max(x, 0), any shape; NaN stays NaN. ``out``: the array to write y into (x itself
    for in place; C-contiguous, x's shape and dtype)."""
    out = _check_out("relu_forward", x, out)
    if not _is_numpy(x):
        return relu_forward_xp(x, out)
    if out is x:
        _relu_inplace_nb(x.reshape(-1))
        return x
    x = np.ascontiguousarray(x)
    y = np.empty_like(x) if out is None else out
    _relu_forward_nb(x.reshape(-1), y.reshape(-1))
    return y


@_jit
def _relu_forward_nb(x, y):
    for i in prange(x.size):
        v = x[i]
        y[i] = max(v, 0)


@_jit
def _relu_inplace_nb(x):
    for i in prange(x.size):
        v = x[i]
        x[i] = max(v, 0)


def relu_forward_xp(x, out=None):
    """Array-module twin of relu_forward."""
    return get_array_module(x).maximum(x, 0, out=out)


def clipped_relu_forward(x, max_value, out=None):
    """y = min(max(x, 0), max_value) (ReLU6 for 6), any shape; NaN stays NaN. ``out`` as for
    relu_forward. One pass over x."""
    out = _check_out("clipped_relu_forward", x, out)
    if not _is_numpy(x):
        return clipped_relu_forward_xp(x, max_value, out)
    if out is x:
        _clipped_relu_inplace_nb(x.reshape(-1), x.dtype.type(max_value))
        return x
    x = np.ascontiguousarray(x)
    y = np.empty_like(x) if out is None else out
    _clipped_relu_forward_nb(x.reshape(-1), x.dtype.type(max_value), y.reshape(-1))
    return y


@_jit
def _clipped_relu_forward_nb(x, max_value, y):
    for i in prange(x.size):
        v = x[i]
        y[i] = min(max(v, 0), max_value)


@_jit
def _clipped_relu_inplace_nb(x, max_value):
    for i in prange(x.size):
        v = x[i]
        x[i] = min(max(v, 0), max_value)


def clipped_relu_forward_xp(x, max_value, out=None):
    """Array-module twin of clipped_relu_forward."""
    xp = get_array_module(x)
    y = xp.maximum(x, 0, out=out)
    return xp.minimum(y, x.dtype.type(max_value), out=y)


def _check_out(what, x, out):
    """``out`` if it can take the result of an elementwise kernel on x: C-contiguous, x's shape and dtype."""
    if out is not None and (tuple(out.shape) != tuple(x.shape) or out.dtype != x.dtype
                            or not out.flags.c_contiguous):
        raise ShapeError(f"{what}: out must be a C-contiguous {x.dtype} array of shape {tuple(x.shape)}, "
                         f"got {out.dtype} {tuple(out.shape)}")
    return out


def bias_relu(y, b=None):
    """In place: y = max(y + b, 0) for y (M, O) C-contiguous and b (O,) of y's dtype
    (no add without b); NaN stays NaN. Returns y. One pass over y, for a layer's
    matrix-product output."""
    if y.ndim != 2 or not y.flags.c_contiguous:
        raise ShapeError(f"bias_relu: y must be a C-contiguous (M, O) array, got shape {tuple(y.shape)}")
    if b is not None and (tuple(b.shape) != (y.shape[1],) or b.dtype != y.dtype):
        raise ShapeError(f"bias_relu: b must be a {y.dtype} array of shape {(y.shape[1],)}, "
                         f"got {b.dtype} {tuple(b.shape)}")
    if not _is_numpy(y):
        return bias_relu_xp(y, b)
    if b is None:
        _relu_inplace_nb(y.reshape(-1))
    else:
        _bias_relu_nb(y, np.ascontiguousarray(b))
    return y


@_jit
def _bias_relu_nb(y, b):
    M, O = y.shape
    for r in prange(M):
        for o in range(O):
            v = y[r, o] + b[o]
            y[r, o] = max(v, 0)


def bias_relu_xp(y, b=None):
    """Array-module twin of bias_relu."""
    xp = get_array_module(y)
    if b is not None:
        y += b
    return xp.maximum(y, 0, out=y)


def relu_backward(gy, x):
    """dx = gy where x > 0, else 0; gy and x of the same shape."""
    if tuple(gy.shape) != tuple(x.shape):
        raise ShapeError(f"relu_backward: gy {tuple(gy.shape)} and x {tuple(x.shape)} differ")
    if not _is_numpy(gy):
        return relu_backward_xp(gy, x)
    gy = np.ascontiguousarray(gy)
    x = np.ascontiguousarray(x)
    dx = np.empty_like(gy)
    _relu_backward_nb(gy.reshape(-1), x.reshape(-1), dx.reshape(-1))
    return dx


@_jit
def _relu_backward_nb(gy, x, dx):
    for i in prange(x.size):
        dx[i] = gy[i] if x[i] > 0 else 0


def relu_backward_xp(gy, x):
    """Array-module twin of relu_backward."""
    return get_array_module(gy).where(x > 0, gy, 0).astype(gy.dtype, copy=False)


def clipped_relu_backward(gy, y, max_value):
    """dx = gy where 0 < y < max_value, else 0 (y: the clipped ReLU's output; NaN gives 0)."""
    if tuple(gy.shape) != tuple(y.shape):
        raise ShapeError(f"clipped_relu_backward: gy {tuple(gy.shape)} and y {tuple(y.shape)} differ")
    if not _is_numpy(gy):
        return clipped_relu_backward_xp(gy, y, max_value)
    gy = np.ascontiguousarray(gy)
    y = np.ascontiguousarray(y)
    dx = np.empty_like(gy)
    _clipped_relu_backward_nb(gy.reshape(-1), y.reshape(-1), y.dtype.type(max_value), dx.reshape(-1))
    return dx


@_jit
def _clipped_relu_backward_nb(gy, y, max_value, dx):
    for i in prange(y.size):
        v = y[i]
        dx[i] = gy[i] if v > 0 and v < max_value else 0


def clipped_relu_backward_xp(gy, y, max_value):
    """Array-module twin of clipped_relu_backward."""
    xp = get_array_module(gy)
    return xp.where((y > 0) & (y < max_value), gy, 0).astype(gy.dtype, copy=False)


# ---------------------------------------------------------------- depthwise convolution
# y[n, i, j, c·M + m] = Σ_{a,b} x_pad[n, i·sh + a, j·sw + b, c] · w[a, b, c, m]   (w is (kh, kw, C, M))

def depthwise_forward(x, w, sh, sw, pads):
    """Depthwise convolution of x (N, H, W, C) with w (kh, kw, C, M) -> y (N, Ho, Wo, C·M),
    output channel c·M + m, as Keras' DepthwiseConv2D."""
    kh, kw, C, M = w.shape
    Ho, Wo = _out_hw(x.shape, kh, kw, sh, sw, pads)
    _check_depthwise(x.shape, w.shape)
    if not _is_numpy(x):
        return depthwise_forward_xp(x, w, sh, sw, pads)
    x = np.ascontiguousarray(x)
    w = np.ascontiguousarray(w, dtype=x.dtype)
    y = np.empty((x.shape[0], Ho, Wo, C * M), dtype=x.dtype)
    _depthwise_forward_nb(x, w, y, sh, sw, pads[0], pads[2])
    return y


def _check_depthwise(x_shape, w_shape):
    if len(w_shape) != 4 or w_shape[2] != x_shape[3]:
        raise ShapeError(f"depthwise: kernel {tuple(w_shape)} must be (kh, kw, C, M) with C = {x_shape[3]} "
                         f"for input {tuple(x_shape)}")


@_jit
def _depthwise_forward_nb(x, w, y, sh, sw, top, left):
    N, H, W, C = x.shape
    kh, kw, _, M = w.shape
    _, Ho, Wo, _ = y.shape
    for r in prange(N * Ho):
        n = r // Ho
        i = r % Ho
        for j in range(Wo):
            for k in range(C * M):
                y[n, i, j, k] = 0
            for a in range(kh):
                yy = _input_cell(i, a, sh, top, H)
                if yy < 0:
                    continue
                for b in range(kw):
                    xx = _input_cell(j, b, sw, left, W)
                    if xx < 0:
                        continue
                    if M == 1:                   # MobileNetV2's case: one contiguous loop over channels
                        for c in range(C):
                            y[n, i, j, c] += x[n, yy, xx, c] * w[a, b, c, 0]
                    else:
                        for c in range(C):
                            v = x[n, yy, xx, c]
                            for m in range(M):
                                y[n, i, j, c * M + m] += v * w[a, b, c, m]


def depthwise_forward_xp(x, w, sh, sw, pads):
    """Array-module twin of depthwise_forward: one strided slice times w[a, b] per window cell."""
    xp = get_array_module(x)
    kh, kw, C, M = w.shape
    Ho, Wo = _out_hw(x.shape, kh, kw, sh, sw, pads)
    _check_depthwise(x.shape, w.shape)
    N = x.shape[0]
    top, bottom, left, right = pads
    xpad = xp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    y = xp.zeros((N, Ho, Wo, C, M), dtype=xp.result_type(x, w))
    for a in range(kh):
        for b in range(kw):
            y += xpad[:, a:a + sh * (Ho - 1) + 1:sh, b:b + sw * (Wo - 1) + 1:sw, :, None] * w[a, b]
    return y.reshape(N, Ho, Wo, C * M)


def depthwise_backward(gy, x, w, sh, sw, pads, need_dx=True, need_dw=True):
    """Gradients of depthwise_forward for gy (N, Ho, Wo, C·M): (dx like x, dw like w), None where not needed.

    dx[n, y, x, c] = Σ_{a,b,m} gy[n, i, j, c·M + m] · w[a, b, c, m] over the windows (i, j) that read it;
    dw[a, b, c, m] = Σ_{n,i,j} x_pad[n, i·sh + a, j·sw + b, c] · gy[n, i, j, c·M + m].
    """
    kh, kw, C, M = w.shape
    Ho, Wo = _out_hw(x.shape, kh, kw, sh, sw, pads)
    if tuple(gy.shape) != (x.shape[0], Ho, Wo, C * M):
        raise ShapeError(f"depthwise_backward: gy {tuple(gy.shape)} must be {(x.shape[0], Ho, Wo, C * M)}")
    if not _is_numpy(gy):
        return depthwise_backward_xp(gy, x, w, sh, sw, pads, need_dx, need_dw)
    gy = np.ascontiguousarray(gy)
    x = np.ascontiguousarray(x)
    w = np.ascontiguousarray(w)
    dx = dw = None
    if need_dx:
        dx = np.zeros(x.shape, dtype=np.result_type(gy, w))
        _depthwise_dx_nb(gy, w.astype(dx.dtype, copy=False), dx, sh, sw, pads[0], pads[2])
    if need_dw:
        dtype = np.result_type(gy, x)
        parts = np.zeros((_chunks(gy.shape[0] * gy.shape[1]), *w.shape), dtype=dtype)
        _depthwise_dw_nb(gy, x, parts, sh, sw, pads[0], pads[2])
        dw = parts.sum(axis=0, dtype=dtype)
    return dx, dw


@_jit
def _depthwise_dx_nb(gy, w, dx, sh, sw, top, left):
    # Parallel over rows of dx (gather), in the twin's (a, b) order.
    N, H, W, C = dx.shape
    kh, kw, _, M = w.shape
    _, Ho, Wo, _ = gy.shape
    for r in prange(N * H):
        n = r // H
        y = r % H
        for a in range(kh):
            i = _window_row(y, a, top, sh, Ho)
            if i < 0:
                continue
            for b in range(kw):
                for j in range(Wo):
                    xx = _input_cell(j, b, sw, left, W)
                    if xx < 0:
                        continue
                    if M == 1:
                        for c in range(C):
                            dx[n, y, xx, c] += gy[n, i, j, c] * w[a, b, c, 0]
                    else:
                        for c in range(C):
                            s = gy[n, i, j, c * M] * w[a, b, c, 0]
                            for m in range(1, M):
                                s += gy[n, i, j, c * M + m] * w[a, b, c, m]
                            dx[n, y, xx, c] += s


@_jit
def _depthwise_dw_nb(gy, x, parts, sh, sw, top, left):
    # Parallel over chunks of output rows (n, i), each summing into its own parts[k]; the
    # caller adds the chunks up. Each row of gy is read once per kernel row a, from the cache.
    N, H, W, C = x.shape
    chunks, kh, kw, _, M = parts.shape
    _, Ho, Wo, _ = gy.shape
    for k in prange(chunks):
        dw = parts[k]
        for r in range(k * N * Ho // chunks, (k + 1) * N * Ho // chunks):
            n = r // Ho
            i = r % Ho
            for a in range(kh):
                yy = _input_cell(i, a, sh, top, H)
                if yy < 0:
                    continue
                for j in range(Wo):
                    for b in range(kw):
                        xx = _input_cell(j, b, sw, left, W)
                        if xx < 0:
                            continue
                        if M == 1:
                            for c in range(C):
                                dw[a, b, c, 0] += x[n, yy, xx, c] * gy[n, i, j, c]
                        else:
                            for c in range(C):
                                v = x[n, yy, xx, c]
                                for m in range(M):
                                    dw[a, b, c, m] += v * gy[n, i, j, c * M + m]


def depthwise_backward_xp(gy, x, w, sh, sw, pads, need_dx=True, need_dw=True):
    """Array-module twin of depthwise_backward: one strided slice per window cell."""
    xp = get_array_module(gy)
    kh, kw, C, M = w.shape
    Ho, Wo = _out_hw(x.shape, kh, kw, sh, sw, pads)
    N, H, W, _ = x.shape
    top, bottom, left, right = pads
    g5 = gy.reshape(N, Ho, Wo, C, M)
    dx = dw = None
    if need_dx:
        dxp = xp.zeros((N, H + top + bottom, W + left + right, C), dtype=xp.result_type(gy, w))
        for a in range(kh):
            for b in range(kw):
                dxp[:, a:a + sh * (Ho - 1) + 1:sh, b:b + sw * (Wo - 1) + 1:sw, :] += (g5 * w[a, b]).sum(axis=-1)
        dx = dxp[:, top:top + H, left:left + W, :]
    if need_dw:
        xpad = xp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
        dw = xp.zeros(w.shape, dtype=xp.result_type(gy, x))
        for a in range(kh):
            for b in range(kw):
                xs = xpad[:, a:a + sh * (Ho - 1) + 1:sh, b:b + sw * (Wo - 1) + 1:sw, :, None]
                dw[a, b] = (xs * g5).sum(axis=(0, 1, 2))
    return dx, dw


# ---------------------------------------------------------------- per-channel affine map (batch norm in inference)

def channel_affine(x, mean, scale, shift, out=None):
    """y = (x − mean) · scale + shift per channel, the channels on the last axis of x (..., C);
    mean, scale and shift are (C,). One pass over x: BatchNormalization in inference mode.
    ``out`` as for relu_forward (x itself for in place)."""
    C = x.shape[-1]
    for what, a in (("mean", mean), ("scale", scale), ("shift", shift)):
        if tuple(a.shape) != (C,):
            raise ShapeError(f"channel_affine: {what} has shape {tuple(a.shape)}, x {tuple(x.shape)} has {C} channels")
    out = _check_out("channel_affine", x, out)
    if not _is_numpy(x):
        return channel_affine_xp(x, mean, scale, shift, out)
    args = [np.ascontiguousarray(a, dtype=x.dtype) for a in (mean, scale, shift)]
    if out is x:
        _channel_affine_inplace_nb(x.reshape(-1, C), *args)
        return x
    x = np.ascontiguousarray(x)
    y = np.empty_like(x) if out is None else out
    _channel_affine_nb(x.reshape(-1, C), *args, y.reshape(-1, C))
    return y


@_jit
def _channel_affine_nb(x, mean, scale, shift, y):
    M, C = x.shape
    for r in prange(M):
        for c in range(C):
            y[r, c] = (x[r, c] - mean[c]) * scale[c] + shift[c]


@_jit
def _channel_affine_inplace_nb(x, mean, scale, shift):
    M, C = x.shape
    for r in prange(M):
        for c in range(C):
            x[r, c] = (x[r, c] - mean[c]) * scale[c] + shift[c]


def channel_affine_xp(x, mean, scale, shift, out=None):
    """Array-module twin of channel_affine."""
    xp, dtype = get_array_module(x), x.dtype
    y = xp.subtract(x, mean.astype(dtype, copy=False), out=out)
    y *= scale.astype(dtype, copy=False)
    y += shift.astype(dtype, copy=False)
    return y


# ---------------------------------------------------------------- batch norm in training
# x is (M, C): the M = N·H·W values of each of C channels (channels-last, flattened).
# Sums run in float64 over chunks of rows (in parallel, one partial sum per chunk, added
# up at the end), and the shifted sums Σ(x − K) and Σ(x − K)² with K = x[0] keep the
# variance σ² = Σ(x − K)²/M − (Σ(x − K)/M)² from cancelling when |μ| ≫ σ. The elementwise
# passes compute in float64 too, then round once to x's dtype. Forward reads x twice
# (statistics, then y) and writes y; backward reads gy and x twice (sums, then dx) and
# writes dx; the NumPy formulas take about ten passes each way.

def _moments(s1, s2, shift, m):
    """(μ, σ²) in float64 from the shifted sums s1 = Σ(x − K), s2 = Σ(x − K)²."""
    d = s1 / m
    return shift + d, get_array_module(s1).maximum(s2 / m - d * d, 0)


def _dx_coefficients(mean, inv_std, gamma, sum_gy, sum_gy_d, m):
    """a, b, c of dx = a·gy + b·(x − μ) + c, from Σgy and Σgy·(x − μ):
    dx = γ/σ' · (gy − Σgy/m − x̂ · Σgy·x̂/m), σ' = √(σ² + ε), x̂ = (x − μ)/σ'."""
    a = inv_std if gamma is None else inv_std * gamma.astype(inv_std.dtype)
    return a, -a * inv_std * inv_std * sum_gy_d / m, -a * sum_gy / m


def batch_norm_forward(x, gamma, beta, epsilon):
    """Training-mode batch norm of x (M, C) C-contiguous: y = γ · (x − μ)/√(σ² + ε) + β with the
    batch's mean μ and biased variance σ² per channel (gamma, beta (C,) or None).
    Returns (y, μ, σ²), the last two float64 (C,)."""
    if not _is_numpy(x):
        return batch_norm_forward_xp(x, gamma, beta, epsilon)
    m, c = x.shape
    if m == 0:
        raise ShapeError(f"batch_norm: no values to take statistics of (input of shape {tuple(x.shape)})")
    chunks = _chunks(m)
    s1, s2 = np.zeros((chunks, c)), np.zeros((chunks, c))
    shift = x[0].astype(np.float64)
    _bn_sums_nb(x, shift, s1, s2)
    mean, variance = _moments(s1.sum(axis=0), s2.sum(axis=0), shift, m)
    inv_std = 1 / np.sqrt(variance + epsilon)
    scale = inv_std if gamma is None else inv_std * gamma
    offset = np.zeros(c) if beta is None else beta.astype(np.float64)
    y = np.empty_like(x)
    _channel_affine_nb(x, mean, scale, offset, y)    # float64 parameters: computed in float64
    return y, mean, variance


@_jit
def _bn_sums_nb(x, shift, s1, s2):
    M, C = x.shape
    chunks = s1.shape[0]
    for k in prange(chunks):
        for r in range(k * M // chunks, (k + 1) * M // chunks):
            for c in range(C):
                d = np.float64(x[r, c]) - shift[c]
                s1[k, c] += d
                s2[k, c] += d * d


def batch_norm_forward_xp(x, gamma, beta, epsilon):
    """Array-module twin of batch_norm_forward."""
    xp = get_array_module(x)
    shift = x[0].astype(np.float64)
    d = x.astype(np.float64) - shift
    mean, variance = _moments(d.sum(axis=0), (d * d).sum(axis=0), shift, x.shape[0])
    inv_std = 1 / xp.sqrt(variance + epsilon)
    y = (x.astype(np.float64) - mean) * (inv_std if gamma is None else inv_std * gamma)
    if beta is not None:
        y += beta
    return y.astype(x.dtype), mean, variance


def batch_norm_backward(gy, x, mean, inv_std, gamma, need_dx=True, need_params=True):
    """Gradients of batch_norm_forward for gy (M, C): (dx, Σ gy · x̂, Σ gy), with
    x̂ = (x − μ)·inv_std; dx (None unless need_dx) in gy's dtype, the sums (None unless
    need_params) float64 (C,)."""
    if not _is_numpy(gy):
        return batch_norm_backward_xp(gy, x, mean, inv_std, gamma, need_dx, need_params)
    gy = np.ascontiguousarray(gy)
    m, c = x.shape
    chunks = _chunks(m)
    s1, s2 = np.zeros((chunks, c)), np.zeros((chunks, c))
    _bn_grad_sums_nb(gy, x, mean, s1, s2)
    sum_gy, sum_gy_d = s1.sum(axis=0), s2.sum(axis=0)
    dx = None
    if need_dx:
        dx = np.empty_like(gy)
        _bn_dx_nb(gy, x, mean, *_dx_coefficients(mean, inv_std, gamma, sum_gy, sum_gy_d, m), dx)
    return (dx, sum_gy_d * inv_std, sum_gy) if need_params else (dx, None, None)


@_jit
def _bn_grad_sums_nb(gy, x, mean, s1, s2):
    M, C = x.shape
    chunks = s1.shape[0]
    for k in prange(chunks):
        for r in range(k * M // chunks, (k + 1) * M // chunks):
            for c in range(C):
                g = np.float64(gy[r, c])
                s1[k, c] += g
                s2[k, c] += g * (np.float64(x[r, c]) - mean[c])


@_jit
def _bn_dx_nb(gy, x, mean, a, b, c0, dx):
    M, C = x.shape
    for r in prange(M):
        for c in range(C):
            dx[r, c] = a[c] * gy[r, c] + b[c] * (np.float64(x[r, c]) - mean[c]) + c0[c]


def batch_norm_backward_xp(gy, x, mean, inv_std, gamma, need_dx=True, need_params=True):
    """Array-module twin of batch_norm_backward."""
    g = gy.astype(np.float64)
    d = x.astype(np.float64) - mean
    sum_gy, sum_gy_d = g.sum(axis=0), (g * d).sum(axis=0)
    dx = None
    if need_dx:
        a, b, c0 = _dx_coefficients(mean, inv_std, gamma, sum_gy, sum_gy_d, x.shape[0])
        dx = (a * g + b * d + c0).astype(gy.dtype)
    return (dx, sum_gy_d * inv_std, sum_gy) if need_params else (dx, None, None)
