"""Winograd's minimal filtering for 3x3, stride-1 convolutions (channels-last).

F(m×m, 3×3) computes an m×m block of outputs from a t×t block of inputs, t = m + 2
(Lavin & Gray, 2016; docs/math.md derives F(2×2, 3×3)). For one input channel and one
filter, with d the t×t input tile and g the 3×3 kernel,

    Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A                  Y is m×m

and the channel sum moves inside: for tile p, output channel o and each of the t²
positions k = (i, j) of the transformed tile,

    M[k, p, o] = Σ_c V[k, p, c] · U[k, c, o]          V = Bᵀ d B,  U = G g Gᵀ

i.e. t² matrix products (tiles × C_in) @ (C_in × C_out). That costs t² products per m²
outputs against 9 for the direct form: 16/4 = 4 for F(2×2, 3×3) (2.25× fewer) and
36/16 = 2.25 for F(4×4, 3×3) (4× fewer), at the price of float32 round-off that grows
with m (F(4×4, 3×3)'s matrices hold 1/4, 1/6, 1/12 and 1/24).

Arrays
    x   (N, H, W, C) input; w (3, 3, C, O) kernel (HWIO); y (N, Ho, Wo, O)
    pads (top, bottom, left, right); Ho = H + top + bottom - 2, Wo likewise
    th, tw = ceil(Ho / m), ceil(Wo / m): tile rows and tile columns per image
    tile rows are numbered g = n·th + ti across the batch; a chunk is the tile rows
    g0 <= g < g1, its tiles numbered (g - g0)·tw + tj
    V   (t², tiles, C) transformed input tiles;  U (t², C, O) transformed kernel
    M   (t², tiles, O) = V @ U, transformed output tiles

The input and output transforms are Numba kernels (``_*_nb`` parallel over tile
rows, ``_*_serial`` the same code on one thread) with array-module twins (``*_xp``,
written with ``xp`` slicing and einsum, so they also run on CuPy); the tests check
that they agree. The output transform adds the bias and applies the ReLU in the same
pass. On the CPU the tiles go in chunks of about CHUNK_BYTES of V and M, and each
worker thread (one per Numba thread) takes the next chunk and runs its input
transform, its t² products (BLAS on one thread) and its output transform on its own
core, so the products read V from the cache the transform just wrote it to, and no
thread waits for the other between the small products.

Backward: dX is the convolution of gY with the flipped, transposed kernel
(``backward_input``); dW is the adjoint of the forward (``backward_weight``):
dU[k] = Σ_p V[k, p]ᵀ (A gY_p Aᵀ)[k], dW = Gᵀ dU G.

``minitl.conv.Conv2DFunction`` calls ``conv_forward``, ``backward_weight`` and ``backward_input``
when ``choose`` says so; ``set_algorithm`` and ``algorithm`` pick the algorithm for
every convolution.
"""
import contextlib
import ctypes
import threading
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
from numba import prange

from minitl import kernels  # noqa: F401  (sets OMP_WAIT_POLICY before Numba starts its threads)
from minitl.backend import get_array_module
from minitl.errors import ShapeError
from minitl.tensor import is_grad_enabled

_jit = numba.njit(parallel=True, cache=True)
_serial = numba.njit(nogil=True, cache=True)    # one thread's chunk, without the GIL

# Bᵀ, G and Aᵀ for F(2×2, 3×3) (interpolation points 0, 1, -1 and ∞) ...
BT2 = np.array([[1, 0, -1, 0],
                   [0, 1, 1, 0],
                   [0, -1, 1, 0],
                   [0, 1, 0, -1]], dtype=np.float64)
G2 = np.array([[1, 0, 0],
                  [0.5, 0.5, 0.5],
                  [0.5, -0.5, 0.5],
                  [0, 0, 1]], dtype=np.float64)
AT2 = np.array([[1, 1, 1, 0],
                   [0, 1, -1, -1]], dtype=np.float64)

# ... and for F(4×4, 3×3) (points 0, ±1, ±2 and ∞), as in Lavin & Gray.
BT4 = np.array([[4, 0, -5, 0, 1, 0],
                   [0, -4, -4, 1, 1, 0],
                   [0, 4, -4, -1, 1, 0],
                   [0, -2, -1, 2, 1, 0],
                   [0, 2, -1, -2, 1, 0],
                   [0, 4, 0, -5, 0, 1]], dtype=np.float64)
G4 = np.array([[1 / 4, 0, 0],
                  [-1 / 6, -1 / 6, -1 / 6],
                  [-1 / 6, 1 / 6, -1 / 6],
                  [1 / 24, 1 / 12, 1 / 6],
                  [1 / 24, -1 / 12, 1 / 6],
                  [0, 0, 1]], dtype=np.float64)
AT4 = np.array([[1, 1, 1, 1, 1, 0],
                   [0, 1, -1, 2, -2, 0],
                   [0, 1, 1, 4, 4, 0],
                   [0, 1, -1, 8, -8, 1]], dtype=np.float64)

MATRICES = {2: (BT2, G2, AT2), 4: (BT4, G4, AT4)}

# Tiles per chunk: about CHUNK_BYTES of V and M together, at least CHUNK_TILES tiles
# (shorter matrix products run slower). On CuPy, one chunk of up to GPU_CHUNK_BYTES.
CHUNK_BYTES = 4 * 2**20
CHUNK_TILES = 256
GPU_CHUNK_BYTES = 256 * 2**20


# ---------------------------------------------------------------- choosing the algorithm

ALGORITHMS = ("auto", "im2col", "winograd", "winograd4", "reference")
_algorithm = "auto"


def set_algorithm(name):
    """Selects how conv2d computes 3x3, stride-1 convolutions from now on:
    'im2col' (im2col + one matrix product), 'winograd' (F(2×2, 3×3)), 'winograd4'
    (F(4×4, 3×3)) or 'auto' (the default: per layer shape, see ``choose``).
    Other convolutions always use im2col. 'reference' sends every conv2d, forward and
    backward, through the formulas as loops (``minitl.conv.conv2d_reference`` and
    ``minitl.conv.conv2d_backward_reference``): slow, for students who compare.
    Returns the previous setting."""
    global _algorithm
    if name not in ALGORITHMS:
        raise ValueError(f"conv algorithm must be one of {', '.join(ALGORITHMS)}, got {name!r}")
    previous, _algorithm = _algorithm, name
    return previous


def get_algorithm():
    return _algorithm


@contextlib.contextmanager
def algorithm(name):
    """``with minitl.conv.algorithm('im2col'): ...`` uses that algorithm inside the block."""
    previous = set_algorithm(name)
    try:
        yield
    finally:
        set_algorithm(previous)


# The 'auto' rule, from benchmarks/bench_winograd.py on 2 cores (float32, VGG16 shapes):
# F(4×4, 3×3) was the fastest from C_in = AUTO_MIN_CHANNELS up (0.2-0.45x im2col's
# forward time at batch 8 x 224). Below (block1_conv1, C_in = 3) both Winograd forms
# were slower than im2col: with K = 3 the t² products are all overhead. (A direct
# Numba kernel for it, the sum over the 27 kernel cells, measured no faster than im2col.)
# On small images the products are too short: forward+backward at batch 32 x 64 took
# 1.0x im2col's time on 8x8 outputs (block4) and 1.5-2.3x on 4x4 (block5), so 'auto'
# also asks for at least AUTO_MIN_PIXELS output cells per image (14x14 measured 0.4x).
AUTO_MIN_CHANNELS = 64
AUTO_MIN_PIXELS = 100
AUTO_TILE = 4
# When a gradient will flow back through the layer (training), 'auto' takes F(2×2, 3×3):
# the forward's round-off moves activations across ReLU's kink, and the gradient follows.
# A whole training step, float32 against float64 (benchmarks/bench_train.py --parts
# accuracy, batch 4 x 96, medians of 3 seeds), relative error of all the gradients with
# F(4×4) / F(2×2) / PyTorch: VGG16 2.7e-4 / 3.9e-7 / 9.3e-5, ResNet50 0.032 / 0.019 / 0.020,
# InceptionV3 0.091 / 0.062 / 0.10 (batch norm over 4 images amplifies every error there).
AUTO_TRAINING_TILE = 2


def applies(w_shape, stride, pads):
    """Whether Winograd can compute this convolution: a 3x3 kernel, stride 1, pads <= 2
    (so that dX, a convolution with pads 2 - p, is one as well)."""
    return tuple(w_shape[:2]) == (3, 3) and tuple(stride) == (1, 1) and max(pads) <= 2


def choose(x, w, b, stride, pads, training=False):
    """How to compute conv2d(x, w, b): the Winograd output tile size m (2 or 4), or None
    for im2col. ``training``: a gradient will flow back through it (see AUTO_TRAINING_TILE)."""
    if _algorithm in ("im2col", "reference") or not applies(w.shape, stride, pads):
        return None
    if x.dtype != w.dtype or x.dtype.kind != "f" or (b is not None and b.dtype != x.dtype):
        return None                                     # mixed dtypes: im2col's NumPy promotion
    if _algorithm == "winograd":
        return 2
    if _algorithm == "winograd4":
        return 4
    ho, wo = x.shape[1] + pads[0] + pads[1] - 2, x.shape[2] + pads[2] + pads[3] - 2
    if w.shape[2] < AUTO_MIN_CHANNELS or ho * wo < AUTO_MIN_PIXELS:
        return None
    return AUTO_TRAINING_TILE if training else AUTO_TILE


def conv_forward(x, w, b, pads, relu, m, weight=None):
    """conv2d forward by F(m×m, 3×3), m as ``choose`` said; weight: the kernel's tensor,
    on which the transformed kernel is cached."""
    return forward(x, cached_kernel(weight, w, m), b, pads, relu, m)


def backward_kernel(weight, w, m):
    """The transformed flipped kernel for backward_input."""
    return cached_kernel(weight, w, m, flip=True)


# ---------------------------------------------------------------- the kernel transform

def transform_kernel(w, m):
    """U (t², C, O) = G g Gᵀ for every (c, o), from w (3, 3, C, O); the sums in float64,
    the result in w's dtype."""
    c, o = w.shape[2], w.shape[3]
    t = m + 2
    g = MATRICES[m][1]
    if not isinstance(w, np.ndarray):
        return transform_kernel_xp(w, m)
    u = np.empty((t * t, c, o), dtype=w.dtype)
    _transform_kernel_nb(np.ascontiguousarray(w), g, u)
    return u


@_jit
def _transform_kernel_nb(w, g, u):
    _, _, C, O = w.shape
    t = g.shape[0]
    for c in prange(C):
        gw = np.zeros((t, 3, O))                     # (G g)[i, b, o], float64
        for i in range(t):
            for a in range(3):
                f = g[i, a]
                if f != 0:
                    for b in range(3):
                        for o in range(O):
                            gw[i, b, o] += f * w[a, b, c, o]
        acc = np.empty(O)
        for i in range(t):
            for j in range(t):
                acc[:] = 0
                for b in range(3):
                    f = g[j, b]
                    if f != 0:
                        for o in range(O):
                            acc[o] += f * gw[i, b, o]
                for o in range(O):
                    u[i * t + j, c, o] = acc[o]


def transform_kernel_xp(w, m):
    """Array-module twin of transform_kernel: two matrix products in float64."""
    xp = get_array_module(w)
    t = m + 2
    g = xp.asarray(MATRICES[m][1])
    c, o = w.shape[2], w.shape[3]
    gw = (g @ w.astype(xp.float64).reshape(3, 3 * c * o)).reshape(t, 3, c * o)    # (G g)[i, b]
    u = g @ gw                                                                   # [i, j] = Σ_b G[j, b] (G g)[i, b]
    return xp.ascontiguousarray(u.reshape(t * t, c, o).astype(w.dtype))


def flipped_kernel(w):
    """The kernel of dX = conv(gY, w'): w'[a, b, o, c] = w[2 - a, 2 - b, c, o]."""
    return w[::-1, ::-1].transpose(0, 1, 3, 2)


def cached_kernel(tensor, w, m, flip=False):
    """transform_kernel(w, m), or of flipped_kernel(w) with flip=True, where w is the data
    of the weight tensor ``tensor`` (None: no tensor to cache on).

    The result is kept on the tensor with its ``version`` (bumped whenever its data is
    assigned: an optimizer step, loading weights) and reused while the version holds:
    inference and frozen layers transform each kernel once. A kernel that is being
    trained (requires_grad under grad mode) changes every step, so nothing is kept for
    it (the memory would only hold stale copies)."""
    if flip:
        w = flipped_kernel(w)
    if tensor is None:
        return transform_kernel(w, m)
    cache = tensor.__dict__.setdefault("_winograd_kernels", {})
    key = (m, flip)
    hit = cache.pop(key, None)
    if hit is not None and hit[0] == tensor.version:
        u = hit[1]
    else:
        u = transform_kernel(w, m)
    if not (tensor.requires_grad and is_grad_enabled()):
        cache[key] = (tensor.version, u)
    return u


# ---------------------------------------------------------------- the convolution

def _tile_grid(x_shape, pads, m):
    _, h, w, _ = x_shape
    ho, wo = h + pads[0] + pads[1] - 2, w + pads[2] + pads[3] - 2
    if ho < 1 or wo < 1:
        raise ShapeError(f"winograd: a 3x3 kernel does not fit input {tuple(x_shape)} padded by {tuple(pads)}")
    return ho, wo, -(-ho // m), -(-wo // m)


def _chunks(n_rows, tw, row_bytes, gpu, workers=1):
    """(g0, g1) ranges of tile rows, each about CHUNK_BYTES (GPU_CHUNK_BYTES on CuPy),
    and at least as many as workers when there are that many rows."""
    limit = GPU_CHUNK_BYTES if gpu else CHUNK_BYTES
    rows = max(limit // max(row_bytes, 1), 1 if gpu else -(-CHUNK_TILES // tw))
    parts = min(max(-(-n_rows // rows), workers), n_rows)
    step = -(-n_rows // parts)                          # equal chunks
    return [(g0, min(n_rows, g0 + step)) for g0 in range(0, n_rows, step)]


def forward(x, u, b, pads, relu, m, out=None):
    """y = conv2d(x, w, pads) + b, then max(·, 0) if relu, by F(m×m, 3×3).

    x (N, H, W, C); u = transform_kernel(w, m), (t², C, O); b (O,) or None; all of one
    float dtype. out: an (N, Ho, Wo, O) C-contiguous array to write into. Returns y."""
    xp = get_array_module(x)
    n, _, _, c = x.shape
    o = u.shape[2]
    t = m + 2
    ho, wo, th, tw = _tile_grid(x.shape, pads, m)
    if out is not None and (tuple(out.shape) != (n, ho, wo, o) or out.dtype != x.dtype
                            or not out.flags.c_contiguous):
        raise ShapeError(f"winograd: out must be a C-contiguous {x.dtype} array of shape {(n, ho, wo, o)}, "
                         f"got {out.dtype} {tuple(out.shape)}")
    y = xp.empty((n, ho, wo, o), dtype=x.dtype) if out is None else out
    gpu = xp is not np
    if not gpu:
        x = np.ascontiguousarray(x)
    bias = xp.zeros(o, dtype=x.dtype) if b is None else b
    bt, _, at = (xp.asarray(a, dtype=x.dtype) for a in MATRICES[m])
    workers = 1 if gpu else numba.get_num_threads()
    chunks = _chunks(n * th, tw, tw * t * t * (c + o) * x.itemsize, gpu, workers)
    most = max(g1 - g0 for g0, g1 in chunks) * tw

    def run(chunks, parallel):
        v_buf = xp.empty((t * t, most, c), dtype=x.dtype)
        m_buf = xp.empty((t * t, most, o), dtype=x.dtype)
        for g0, g1 in chunks:
            tiles = (g1 - g0) * tw
            v, mm = v_buf[:, :tiles], m_buf[:, :tiles]
            input_tiles(x, bt, g0, g1, th, tw, m, pads, out=v, parallel=parallel)
            xp.matmul(v, u, out=mm)
            output_tiles(mm, at, bias, relu, y, g0, g1, th, tw, m, parallel=parallel)

    blas = _blas_threads()
    if workers == 1 or blas is None or len(chunks) == 1:
        run(chunks, True)                               # threads inside each kernel and product
        return y
    # Each worker thread takes the next chunk and runs its transforms and products on
    # its own core, BLAS single-threaded: no barrier between the t² small products
    # (on a loaded machine, a 2-thread BLAS waits for its slower thread at each one).
    queue = iter(chunks)
    lock = threading.Lock()

    def next_chunk():
        with lock:
            return next(queue, None)

    def worker():
        run(iter(next_chunk, None), False)

    previous = blas[1]()
    blas[0](1)
    try:
        futures = [_pool(workers).submit(worker) for _ in range(workers)]
        for f in futures:
            f.result()
    finally:
        blas[0](previous)
    return y


def backward_weight(x, gy, pads, m):
    """dW (3, 3, C, O) of y = conv2d(x, w, pads) for gY = dL/dy, by the adjoint of
    F(m×m, 3×3): with V the input tiles as in forward and dM = A gY_tile Aᵀ (the adjoint
    of the output transform; gY cells past Ho, Wo are zero),

        dU[k] = Σ_p V[k, p]ᵀ dM[k, p]        (t² products (C × tiles) @ (tiles × O))
        dW    = Gᵀ dU G                       (the adjoint of U = G g Gᵀ), in float64
    """
    xp = get_array_module(x)
    n, _, _, c = x.shape
    o = gy.shape[3]
    t = m + 2
    ho, wo, th, tw = _tile_grid(x.shape, pads, m)
    if tuple(gy.shape) != (n, ho, wo, o):
        raise ShapeError(f"winograd: gY shape {tuple(gy.shape)} does not fit input {tuple(x.shape)} "
                         f"padded by {tuple(pads)}")
    gpu = xp is not np
    if not gpu:
        x, gy = np.ascontiguousarray(x), np.ascontiguousarray(gy)
    bt, _, at = (xp.asarray(a, dtype=x.dtype) for a in MATRICES[m])
    a_mat = xp.ascontiguousarray(at.T)                  # A, t × m
    workers = 1 if gpu else numba.get_num_threads()
    chunks = _chunks(n * th, tw, tw * t * t * (c + o) * x.itemsize, gpu, workers)
    most = max(g1 - g0 for g0, g1 in chunks) * tw

    def run(chunks, parallel):
        v_buf = xp.empty((t * t, most, c), dtype=x.dtype)
        dm_buf = xp.empty((t * t, most, o), dtype=x.dtype)
        du = xp.zeros((t * t, c, o), dtype=x.dtype)
        part = xp.empty_like(du)
        for g0, g1 in chunks:
            tiles = (g1 - g0) * tw
            v, dm = v_buf[:, :tiles], dm_buf[:, :tiles]
            input_tiles(x, bt, g0, g1, th, tw, m, pads, out=v, parallel=parallel)
            input_tiles(gy, a_mat, g0, g1, th, tw, m, (0, 0, 0, 0), out=dm, parallel=parallel)
            xp.matmul(v.transpose(0, 2, 1), dm, out=part)
            du += part
        return du

    blas = _blas_threads()
    if workers == 1 or blas is None or len(chunks) == 1:
        du = run(chunks, True)
    else:                                               # as in forward: a chunk per worker at a time
        queue = iter(chunks)
        lock = threading.Lock()

        def next_chunk():
            with lock:
                return next(queue, None)

        previous = blas[1]()
        blas[0](1)
        try:
            futures = [_pool(workers).submit(lambda: run(iter(next_chunk, None), False)) for _ in range(workers)]
            du = futures[0].result()
            for f in futures[1:]:
                du += f.result()
        finally:
            blas[0](previous)
    g64 = xp.asarray(MATRICES[m][1])
    du = du.astype(xp.float64).reshape(t, t, c * o)
    dw = xp.einsum("ia,ijk,jb->abk", g64, du, g64)
    return dw.reshape(3, 3, c, o).astype(x.dtype)


_pools = {}


def _pool(workers):
    if workers not in _pools:
        _pools[workers] = ThreadPoolExecutor(workers, thread_name_prefix="winograd")
    return _pools[workers]


_blas = []


def _blas_threads():
    """(set, get) of the thread count of the OpenBLAS that NumPy loaded, or None when
    there is none to find (then the products use BLAS threads as they are)."""
    if not _blas:
        found = None
        try:
            with open("/proc/self/maps") as f:
                paths = sorted({line.split()[-1] for line in f if "openblas" in line.lower() and ".so" in line})
        except OSError:
            paths = []
        for path in paths:
            lib = ctypes.CDLL(path)
            for prefix, suffix in (("scipy_openblas", "64_"), ("scipy_openblas", ""), ("openblas", "64_"),
                                   ("openblas", "")):
                setter = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
                getter = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
                if setter is not None and getter is not None:
                    setter.argtypes, setter.restype, getter.restype = [ctypes.c_int], None, ctypes.c_int
                    found = (setter, getter)
                    break
            if found:
                break
        _blas.append(found)
    return _blas[0]


def backward_input(gy, u, x_shape, pads, m, out=None):
    """dX (x_shape) of y = conv2d(x, w, pads) for gY = dL/dy (N, Ho, Wo, O): the convolution
    of gY with the flipped, transposed kernel, padding 2 - p on each side, by F(m×m, 3×3).
    u = transform_kernel(flipped_kernel(w), m), (t², O, C)."""
    top, bottom, left, right = pads
    dx = forward(gy, u, None, (2 - top, 2 - bottom, 2 - left, 2 - right), False, m, out=out)
    if tuple(dx.shape) != tuple(x_shape):
        raise ShapeError(f"winograd: dX came out {tuple(dx.shape)}, expected {tuple(x_shape)} (pads {pads})")
    return dx


# ---------------------------------------------------------------- input transform

def input_tiles(x, bt, g0, g1, th, tw, m, pads, out=None, parallel=True):
    """V (t², (g1-g0)·tw, C): Bᵀ d B for every input tile d of tile rows g0 <= g < g1
    (see the module notation), cells outside x read as zero. bt is t × s for tiles d of
    s × s cells at a stride of m: Bᵀ (s = t) for input tiles, A = (Aᵀ)ᵀ (s = m) for the
    adjoint of the output transform on gY."""
    t = bt.shape[0]
    shape = (t * t, (g1 - g0) * tw, x.shape[3])
    if out is not None and (tuple(out.shape) != shape or out.dtype != x.dtype):
        raise ShapeError(f"input_tiles: out must be a {x.dtype} array of shape {shape}, "
                         f"got {out.dtype} {tuple(out.shape)}")
    if not isinstance(x, np.ndarray):
        v = input_tiles_xp(x, bt, g0, g1, th, tw, m, pads)
        if out is None:
            return v
        out[...] = v
        return out
    v = np.empty(shape, dtype=x.dtype) if out is None else out
    kernel = _input_tiles_nb if parallel else _input_tiles_serial
    kernel(np.ascontiguousarray(x), np.asarray(bt, dtype=x.dtype), v, g0, th, tw, m, pads[0], pads[2])
    return v


def _input_tiles(x, bt, v, g0, th, tw, m, top, left):
    _, H, W, C = x.shape
    t, s = bt.shape
    rows = v.shape[1] // tw
    for r in prange(rows):
        g = g0 + r
        n = g // th
        ti = g % th
        tmp = np.empty((t, s, C), dtype=x.dtype)        # (Bᵀ d)[i, b, c]
        acc = np.empty(C, dtype=x.dtype)
        for tj in range(tw):
            tmp[:] = 0
            for a in range(s):
                yy = ti * m + a - top
                if yy < 0 or yy >= H:
                    continue
                for bb in range(s):
                    xx = tj * m + bb - left
                    if xx < 0 or xx >= W:
                        continue
                    for i in range(t):
                        f = bt[i, a]
                        if f != 0:
                            for c in range(C):
                                tmp[i, bb, c] += f * x[n, yy, xx, c]
            p = r * tw + tj
            for i in range(t):
                for j in range(t):
                    acc[:] = 0
                    for bb in range(s):
                        f = bt[j, bb]
                        if f != 0:
                            for c in range(C):
                                acc[c] += f * tmp[i, bb, c]
                    k = i * t + j
                    for c in range(C):
                        v[k, p, c] = acc[c]


_input_tiles_nb = _jit(_input_tiles)
_input_tiles_serial = _serial(_input_tiles)          # prange is range there


def input_tiles_xp(x, bt, g0, g1, th, tw, m, pads):
    """Array-module twin of input_tiles: strided slices of a zero-padded x, then einsum."""
    xp = get_array_module(x)
    t, s = bt.shape
    n0, n1 = g0 // th, -(-g1 // th)                     # the images the chunk touches
    _, h, w, c = x.shape
    top, left = pads[0], pads[2]
    hp, wp = (th - 1) * m + s, (tw - 1) * m + s          # every tile's cells, zeros outside x
    xpad = xp.zeros((n1 - n0, hp, wp, c), dtype=x.dtype)
    rows, cols = min(h, hp - top), min(w, wp - left)
    xpad[:, top:top + rows, left:left + cols] = x[n0:n1, :rows, :cols]
    d = xp.stack([xp.stack([xpad[:, a:a + th * m:m, b:b + tw * m:m] for b in range(s)]) for a in range(s)])
    v = xp.einsum("ia,jb,abnpqc->ijnpqc", bt, bt, d)     # (t, t, images, th, tw, C)
    v = v.reshape(t * t, (n1 - n0) * th * tw, c)
    first = (g0 - n0 * th) * tw
    return v[:, first:first + (g1 - g0) * tw]


# ---------------------------------------------------------------- output transform

def output_tiles(mm, at, b, relu, y, g0, g1, th, tw, m, parallel=True):
    """Writes Aᵀ M A + b (then max(·, 0) if relu) of every tile of tile rows g0 <= g < g1
    into y (N, Ho, Wo, O), dropping the cells past Ho and Wo. mm (t², (g1-g0)·tw, O)."""
    if not isinstance(mm, np.ndarray):
        return output_tiles_xp(mm, at, b, relu, y, g0, g1, th, tw, m)
    if not y.flags.c_contiguous:
        raise ShapeError("output_tiles: y must be C-contiguous")
    kernel = _output_tiles_nb if parallel else _output_tiles_serial
    kernel(mm, np.asarray(at, dtype=mm.dtype), b, relu, y, g0, th, tw, m)
    return y


def _output_tiles(mm, at, b, relu, y, g0, th, tw, m):
    _, Ho, Wo, O = y.shape
    t = at.shape[1]
    rows = mm.shape[1] // tw
    for r in prange(rows):
        g = g0 + r
        n = g // th
        ti = g % th
        tmp = np.empty((m, t, O), dtype=mm.dtype)       # (Aᵀ M)[p, j, o]
        acc = np.empty(O, dtype=mm.dtype)
        for tj in range(tw):
            p = r * tw + tj
            tmp[:] = 0
            for i in range(m):
                for k in range(t):
                    f = at[i, k]
                    if f != 0:
                        for j in range(t):
                            for o in range(O):
                                tmp[i, j, o] += f * mm[k * t + j, p, o]
            for i in range(m):
                yy = ti * m + i
                if yy >= Ho:
                    break
                for q in range(m):
                    xx = tj * m + q
                    if xx >= Wo:
                        break
                    acc[:] = 0
                    for j in range(t):
                        f = at[q, j]
                        if f != 0:
                            for o in range(O):
                                acc[o] += f * tmp[i, j, o]
                    if relu:
                        for o in range(O):
                            s = acc[o] + b[o]
                            y[n, yy, xx, o] = max(s, 0)
                    else:
                        for o in range(O):
                            y[n, yy, xx, o] = acc[o] + b[o]


_output_tiles_nb = _jit(_output_tiles)
_output_tiles_serial = _serial(_output_tiles)


def output_tiles_xp(mm, at, b, relu, y, g0, g1, th, tw, m):
    """Array-module twin of output_tiles: einsum, then one slice assignment per image."""
    xp = get_array_module(mm)
    t = m + 2
    _, ho, wo, o = y.shape
    rows = g1 - g0
    z = xp.einsum("ik,jl,klrso->risjo", at, at, mm.reshape(t, t, rows, tw, o))
    z = z.reshape(rows, m, tw * m, o) + b                # (tile rows, m, Wo rounded up, O)
    if relu:
        z = xp.maximum(z, 0)
    if g0 % th == 0 and g1 % th == 0:                   # whole images: one assignment
        y[g0 // th:g1 // th] = z.reshape(-1, th * m, tw * m, o)[:, :ho, :wo]
        return y
    for g in range(g0, g1):
        n, ti = divmod(g, th)
        i0 = ti * m
        i1 = min(ho, i0 + m)
        y[n, i0:i1] = z[g - g0, :i1 - i0, :wo]
    return y

