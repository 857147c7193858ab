"""Tests of minitl.kernels: each Numba kernel against its array-module twin and
against a naive loop reference written here."""

import itertools
import os
import subprocess
import sys

import numpy as np
import pytest

from minitl import kernels as K
from minitl.errors import ShapeError

PADS = [(0, 0, 0, 0), (1, 1, 1, 1), (0, 1, 0, 1)]
DTYPES = [np.float32, np.float64]
LAYOUTS = ["contiguous", "flipped", "transposed"]


def make_cases(sizes):
    """(k, s, pads, dtype) over the full product; N, H/W and memory layout cycle along."""
    cases = []
    for t, (k, s, pads, dtype) in enumerate(itertools.product(sizes, [1, 2], PADS, DTYPES)):
        n = [1, 3][t % 2]
        hw = [(7, 6), (6, 7), (8, 5)][t % 3]
        layout = LAYOUTS[(t // 2) % 3]
        cases.append((n, hw, k, s, pads, dtype, layout))
    return cases


CONV_CASES = make_cases([1, 2, 3, 5])
POOL_CASES = [c for c in make_cases([1, 2, 3, 5]) if c[2] > 1 or c[4] == (0, 0, 0, 0)]


def case_id(c):
    n, hw, k, s, pads, dtype, layout = c
    return f"n{n}-{hw[0]}x{hw[1]}-k{k}-s{s}-p{''.join(map(str, pads))}-{np.dtype(dtype).name}-{layout}"


def make_x(rng, shape, dtype, layout):
    """A random (N, H, W, C) array, possibly a non-contiguous view."""
    n, h, w, c = shape
    if layout == "flipped":
        x = rng.standard_normal((n, h, w, c)).astype(dtype)[:, ::-1]
    elif layout == "transposed":
        x = rng.standard_normal((n, w, h, c)).astype(dtype).swapaxes(1, 2)
    else:
        x = rng.standard_normal((n, h, w, c)).astype(dtype)
    assert x.shape == shape
    assert x.flags.c_contiguous == (layout == "contiguous") or min(h, w) == 1
    return x


def tol(dtype):
    return {"rtol": 1e-5, "atol": 1e-5} if dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-12}


# ---------------------------------------------------------------- naive references

def conv_ref(x, w, s, pads):
    """Direct convolution by loops, zero padding."""
    N, H, W, _C = x.shape
    kh, kw, _, O = w.shape
    top, bottom, left, right = pads
    Ho, Wo = (H + top + bottom - kh) // s + 1, (W + left + right - kw) // s + 1
    out = np.zeros((N, Ho, Wo, O))
    for n, i, j, a, b in itertools.product(range(N), range(Ho), range(Wo), range(kh), range(kw)):
        y, xx = i * s + a - top, j * s + b - left
        if 0 <= y < H and 0 <= xx < W:
            out[n, i, j] += x[n, y, xx].astype(np.float64) @ w[a, b].astype(np.float64)
    return out


def real_cells(H, W, i, j, ph, pw, s, pads):
    """(window index, row, col) of the non-padded cells of window (i, j), row-major."""
    top, _, left, _ = pads
    for a, b in itertools.product(range(ph), range(pw)):
        y, xx = i * s + a - top, j * s + b - left
        if 0 <= y < H and 0 <= xx < W:
            yield a * pw + b, y, xx


def max_pool_ref(x, p, s, pads):
    N, H, W, C = x.shape
    Ho, Wo = K.output_size(H, p, s, pads[0], pads[1]), K.output_size(W, p, s, pads[2], pads[3])
    y = np.zeros((N, Ho, Wo, C), x.dtype)
    arg = np.zeros((N, Ho, Wo, C), np.int64)
    for n, i, j, c in itertools.product(range(N), range(Ho), range(Wo), range(C)):
        best = None
        for k, yy, xx in real_cells(H, W, i, j, p, p, s, pads):
            if best is None or x[n, yy, xx, c] > best:
                best, arg[n, i, j, c] = x[n, yy, xx, c], k
        y[n, i, j, c] = best
    return y, arg


def max_pool_backward_ref(gy, arg, x_shape, p, s, pads):
    dx = np.zeros(x_shape, gy.dtype)
    for n, i, j, c in np.ndindex(*gy.shape):
        a, b = divmod(int(arg[n, i, j, c]), p)
        dx[n, i * s + a - pads[0], j * s + b - pads[2], c] += gy[n, i, j, c]
    return dx


def avg_pool_ref(x, p, s, pads):
    N, H, W, C = x.shape
    Ho, Wo = K.output_size(H, p, s, pads[0], pads[1]), K.output_size(W, p, s, pads[2], pads[3])
    y = np.zeros((N, Ho, Wo, C))
    for n, i, j in itertools.product(range(N), range(Ho), range(Wo)):
        cells = [x[n, yy, xx] for _, yy, xx in real_cells(H, W, i, j, p, p, s, pads)]
        y[n, i, j] = np.mean(cells, axis=0)
    return y


# ---------------------------------------------------------------- im2col / col2im

@pytest.mark.parametrize("case", CONV_CASES, ids=case_id)
def test_im2col_matches_twin_and_direct_conv(case):
    n, (h, w), k, s, pads, dtype, layout = case
    rng = np.random.default_rng(0)
    C, O = 3, 5
    x = make_x(rng, (n, h, w, C), dtype, layout)
    x_copy = x.copy()
    wt = rng.standard_normal((k, k, C, O)).astype(dtype)
    cols = K.im2col(x, k, k, s, s, pads)
    twin = K.im2col_xp(x, k, k, s, s, pads)
    assert cols.dtype == dtype and cols.flags.c_contiguous
    np.testing.assert_array_equal(cols, twin)
    np.testing.assert_array_equal(x, x_copy)
    ref = conv_ref(x, wt, s, pads)
    out = (cols @ wt.reshape(k * k * C, O)).reshape(ref.shape)
    np.testing.assert_allclose(out, ref, **tol(dtype))


@pytest.mark.parametrize("rows", [(0, 1), (1, 3), (2, 4)])
@pytest.mark.parametrize("impl", ["numba", "twin"])
def test_im2col_rows_are_rows_of_the_full_matrix(rows, impl):
    rng = np.random.default_rng(8)
    x = make_x(rng, (2, 7, 6, 3), np.float32, "flipped")
    im2col = K.im2col if impl == "numba" else K.im2col_xp
    args = (3, 2, 2, 1, (1, 1, 0, 1))                    # Ho = 4, Wo = 6
    full = im2col(x, *args).reshape(2, 4, 6, -1)
    part = im2col(x, *args, rows=rows)
    i0, i1 = rows
    np.testing.assert_array_equal(part, full[:, i0:i1].reshape(2 * (i1 - i0) * 6, -1))
    with pytest.raises(ShapeError, match="rows"):
        im2col(x, *args, rows=(3, 5))


@pytest.mark.parametrize("case", CONV_CASES, ids=case_id)
def test_col2im_matches_twin(case):
    n, (h, w), k, s, pads, dtype, layout = case
    rng = np.random.default_rng(1)
    C = 2
    Ho, Wo = K.output_size(h, k, s, pads[0], pads[1]), K.output_size(w, k, s, pads[2], pads[3])
    cols = rng.standard_normal((n * Ho * Wo, k * k * C)).astype(dtype)
    if layout != "contiguous":
        cols = np.asfortranarray(cols)
    dx = K.col2im(cols, (n, h, w, C), k, k, s, s, pads)
    assert dx.shape == (n, h, w, C) and dx.dtype == dtype
    np.testing.assert_array_equal(dx, K.col2im_xp(cols, (n, h, w, C), k, k, s, s, pads))


@pytest.mark.parametrize("k,s,pads", [(3, 1, (1, 1, 1, 1)), (3, 2, (0, 1, 0, 1)), (2, 2, (0, 0, 0, 0)),
                                      (5, 2, (2, 1, 0, 2))])
@pytest.mark.parametrize("impl", ["numba", "twin"])
def test_col2im_is_adjoint_of_im2col(k, s, pads, impl):
    rng = np.random.default_rng(2)
    shape = (2, 7, 6, 3)
    x = rng.standard_normal(shape)
    fwd, bwd = (K.im2col, K.col2im) if impl == "numba" else (K.im2col_xp, K.col2im_xp)
    cols = fwd(x, k, k, s, s, pads)
    c = rng.standard_normal(cols.shape)
    lhs = np.vdot(cols, c)
    rhs = np.vdot(x, bwd(c, shape, k, k, s, s, pads))
    assert lhs == pytest.approx(rhs, rel=1e-12, abs=1e-12)


# ---------------------------------------------------------------- max pooling

@pytest.mark.parametrize("case", POOL_CASES, ids=case_id)
def test_max_pool_matches_twin_and_loops(case):
    n, (h, w), p, s, pads, dtype, layout = case
    rng = np.random.default_rng(3)
    x = make_x(rng, (n, h, w, 2), dtype, layout)
    x_copy = x.copy()
    y, arg = K.max_pool_forward(x, p, p, s, s, pads)
    y2, arg2 = K.max_pool_forward_xp(x, p, p, s, s, pads)
    y_ref, arg_ref = max_pool_ref(x, p, s, pads)
    for yy, aa in [(y, arg), (y2, arg2)]:
        assert yy.dtype == dtype and np.issubdtype(aa.dtype, np.integer)
        np.testing.assert_array_equal(yy, y_ref)
        np.testing.assert_array_equal(aa, arg_ref)
    y3, none = K.max_pool_forward(x, p, p, s, s, pads, with_arg=False)     # inference: values only
    assert none is None and y3.dtype == dtype
    np.testing.assert_array_equal(y3, y_ref)

    gy = make_x(rng, y.shape, dtype, layout)
    if layout != "contiguous":
        arg = np.asfortranarray(arg)
    dx = K.max_pool_backward(gy, arg, x.shape, p, p, s, s, pads)
    assert dx.dtype == dtype
    np.testing.assert_array_equal(dx, K.max_pool_backward_xp(gy, arg, x.shape, p, p, s, s, pads))
    np.testing.assert_allclose(dx, max_pool_backward_ref(gy, arg, x.shape, p, s, pads), **tol(dtype))
    np.testing.assert_array_equal(x, x_copy)


FWD = {"numba": K.max_pool_forward, "twin": K.max_pool_forward_xp}
BWD = {"numba": K.max_pool_backward, "twin": K.max_pool_backward_xp}


@pytest.mark.parametrize("impl", ["numba", "twin"])
def test_max_pool_ties_route_to_first_cell(impl):
    x = np.ones((1, 4, 6, 2), np.float32)
    y, arg = FWD[impl](x, 2, 2, 2, 2, (0, 0, 0, 0))
    assert (arg == 0).all()
    dx = BWD[impl](np.ones_like(y), arg, x.shape, 2, 2, 2, 2, (0, 0, 0, 0))
    expect = np.zeros_like(x)
    expect[:, ::2, ::2, :] = 1
    np.testing.assert_array_equal(dx, expect)


def test_max_pool_without_arg_keeps_nan_and_padding_rules():
    x = np.full((1, 4, 5, 3), -2.0, np.float32)
    x[0, 1, 1, 0] = np.nan
    for pads in [(1, 1, 1, 1), (0, 1, 0, 1)]:
        y, _ = K.max_pool_forward(x, 3, 3, 2, 2, pads)
        y_values, _ = K.max_pool_forward(x, 3, 3, 2, 2, pads, with_arg=False)
        np.testing.assert_array_equal(y_values, y)            # NaN where y has NaN, no zero from the padding
        assert np.isnan(y_values[0, 0, 0, 0]) and (y_values[..., 1:] == -2).all()


@pytest.mark.parametrize("impl", ["numba", "twin"])
def test_max_pool_padding_never_wins(impl):
    # 'same' 3x3 pooling of an all-negative, all-equal input: a zero pad would win
    # if padded cells were real; the first real cell must win instead.
    x = np.full((2, 4, 5, 3), -2.0)
    y, arg = FWD[impl](x, 3, 3, 1, 1, (1, 1, 1, 1))
    np.testing.assert_array_equal(y, x)
    assert (arg[:, 0, 0] == 4).all()        # window (0, 0): cells 0-3 and 6 are padding
    assert (arg[:, 1:, 1:] == 0).all()      # interior windows: first cell is real
    assert (arg[:, 0, 1:] == 3).all()       # top row: first real cell is (1, 0)
    dx = BWD[impl](np.ones_like(y), arg, x.shape, 3, 3, 1, 1, (1, 1, 1, 1))
    assert dx.sum() == y.size               # nothing is lost to the padded border


@pytest.mark.parametrize("impl", ["numba", "twin"])
def test_max_pool_backward_accumulates_overlaps(impl):
    # pool 3 stride 2 on 5x5: cell (2, 2) lies in all four windows.
    x = np.zeros((1, 5, 5, 1))
    x[0, 2, 2, 0] = 1.0
    y, arg = FWD[impl](x, 3, 3, 2, 2, (0, 0, 0, 0))
    np.testing.assert_array_equal(y[0, :, :, 0], np.ones((2, 2)))
    gy = np.arange(1.0, 5.0).reshape(1, 2, 2, 1)
    dx = BWD[impl](gy, arg, x.shape, 3, 3, 2, 2, (0, 0, 0, 0))
    assert dx[0, 2, 2, 0] == 10.0
    assert dx.sum() == 10.0


@pytest.mark.parametrize("impl", ["numba", "twin"])
def test_max_pool_propagates_nan(impl):
    x = np.arange(16.0).reshape(1, 4, 4, 1)
    x[0, 0, 1, 0] = np.nan
    y, arg = FWD[impl](x, 2, 2, 2, 2, (0, 0, 0, 0))
    assert np.isnan(y[0, 0, 0, 0]) and arg[0, 0, 0, 0] == 1
    assert not np.isnan(y[0, 1:, :]).any() and not np.isnan(y[0, :, 1:]).any()


# ---------------------------------------------------------------- average pooling

@pytest.mark.parametrize("case", POOL_CASES[::2], ids=case_id)
def test_avg_pool_matches_twin_and_loops(case):
    n, (h, w), p, s, pads, dtype, layout = case
    rng = np.random.default_rng(4)
    x = make_x(rng, (n, h, w, 2), dtype, layout)
    y = K.avg_pool_forward(x, p, p, s, s, pads)
    assert y.dtype == dtype
    np.testing.assert_array_equal(y, K.avg_pool_forward_xp(x, p, p, s, s, pads))
    np.testing.assert_allclose(y, avg_pool_ref(x, p, s, pads), **tol(dtype))
    gy = rng.standard_normal(y.shape).astype(dtype)
    dx = K.avg_pool_backward(gy, x.shape, p, p, s, s, pads)
    assert dx.dtype == dtype
    np.testing.assert_array_equal(dx, K.avg_pool_backward_xp(gy, x.shape, p, p, s, s, pads))


@pytest.mark.parametrize("p,s,pads", [(3, 1, (1, 1, 1, 1)), (3, 2, (0, 1, 0, 1)), (2, 2, (0, 0, 0, 0))])
def test_avg_pool_backward_is_adjoint(p, s, pads):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 7, 6, 3))
    y = K.avg_pool_forward(x, p, p, s, s, pads)
    g = rng.standard_normal(y.shape)
    assert np.vdot(y, g) == pytest.approx(np.vdot(x, K.avg_pool_backward(g, x.shape, p, p, s, s, pads)),
                                          rel=1e-12, abs=1e-12)


def test_avg_pool_does_not_count_padding():
    x = np.ones((1, 3, 3, 1), np.float32)
    y = K.avg_pool_forward(x, 3, 3, 1, 1, (1, 1, 1, 1))
    np.testing.assert_array_equal(y, np.ones_like(x))


# ---------------------------------------------------------------- ReLU

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_relu_matches_numpy(dtype, layout):
    rng = np.random.default_rng(6)
    x = make_x(rng, (2, 5, 4, 3), dtype, layout)
    x[0, 0, 0, 0] = 0.0
    gy = make_x(rng, (2, 5, 4, 3), dtype, layout)
    y = K.relu_forward(x)
    assert y.dtype == dtype
    np.testing.assert_array_equal(y, np.maximum(x, 0))
    np.testing.assert_array_equal(y, K.relu_forward_xp(x))
    dx = K.relu_backward(gy, x)
    assert dx.dtype == dtype and dx[0, 0, 0, 0] == 0
    np.testing.assert_array_equal(dx, gy * (x > 0))
    np.testing.assert_array_equal(dx, K.relu_backward_xp(gy, x))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("max_value", [6.0, 0.5])
def test_clipped_relu_matches_loops_and_twin(dtype, layout, max_value):
    rng = np.random.default_rng(10)
    x = make_x(rng, (2, 5, 4, 3), dtype, layout) * 4
    x[0, 0, 0, :] = [np.nan, 0.0, max_value]
    ref = np.empty_like(x)
    for i in itertools.product(*map(range, x.shape)):
        ref[i] = x[i] if np.isnan(x[i]) else min(max(x[i], 0), max_value)
    y = K.clipped_relu_forward(x, max_value)
    assert y.dtype == dtype and y is not x
    np.testing.assert_array_equal(y, ref)
    np.testing.assert_array_equal(y, K.clipped_relu_forward_xp(x, max_value))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_clipped_relu_backward_matches_loops_and_twin(dtype, layout):
    rng = np.random.default_rng(11)
    y = np.clip(make_x(rng, (2, 5, 4, 3), dtype, layout) * 4, 0, 6)
    y[0, 0, 0, :] = [np.nan, 0.0, 6.0]
    gy = make_x(rng, (2, 5, 4, 3), dtype, layout)
    ref = np.empty_like(gy)
    for i in itertools.product(*map(range, y.shape)):
        ref[i] = gy[i] if 0 < y[i] < 6 else 0
    dx = K.clipped_relu_backward(gy, y, 6.0)
    assert dx.dtype == dtype
    np.testing.assert_array_equal(dx, ref)
    np.testing.assert_array_equal(dx, K.clipped_relu_backward_xp(gy, y, 6.0))
    with pytest.raises(ShapeError, match="clipped_relu_backward: gy"):
        K.clipped_relu_backward(gy, y[:1], 6.0)


# ---------------------------------------------------------------- batch norm in training

def batch_norm_loops(x, gamma, beta, epsilon):
    """y, μ, σ² of training-mode batch norm of x (M, C) as loops in float64."""
    m, c = x.shape
    mean, var, y = np.zeros(c), np.zeros(c), np.empty((m, c))
    for j in range(c):
        mean[j] = sum(float(v) for v in x[:, j]) / m
        var[j] = sum((float(v) - mean[j]) ** 2 for v in x[:, j]) / m
        for i in range(m):
            y[i, j] = (float(x[i, j]) - mean[j]) / np.sqrt(var[j] + epsilon) * (1 if gamma is None else gamma[j]) \
                + (0 if beta is None else beta[j])
    return y, mean, var


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("m", [1, 7, 300])
def test_batch_norm_kernels_match_loops_and_twin(dtype, affine, m):
    rng = np.random.default_rng(13)
    x = (rng.standard_normal((m, 5)) * 3 + 2).astype(dtype)
    gy = rng.standard_normal((m, 5)).astype(dtype)
    gamma, beta = (rng.standard_normal(5).astype(dtype) for _ in range(2)) if affine else (None, None)
    y_ref, mean_ref, var_ref = batch_norm_loops(x, gamma, beta, 1e-3)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    y, mean, var = K.batch_norm_forward(x, gamma, beta, 1e-3)
    y2, mean2, var2 = K.batch_norm_forward_xp(x, gamma, beta, 1e-3)
    assert y.dtype == y2.dtype == dtype and mean.dtype == var.dtype == np.float64
    for a, b, ref in ((y, y2, y_ref), (mean, mean2, mean_ref), (var, var2, var_ref)):
        np.testing.assert_allclose(a, ref, rtol=tol, atol=tol)
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
    # backward against the loops of dx = γ/σ' (gy − Σgy/m − x̂ Σgy x̂/m), x̂ = (x − μ)/σ'
    inv_std = 1 / np.sqrt(var_ref + 1e-3)
    x_hat = (x - mean_ref) * inv_std
    g64 = gy.astype(np.float64)
    sum_gy, sum_gy_x_hat = g64.sum(axis=0), (g64 * x_hat).sum(axis=0)
    dx_ref = (1 if gamma is None else gamma) * inv_std * (g64 - sum_gy / m - x_hat * sum_gy_x_hat / m)
    for f in (K.batch_norm_backward, K.batch_norm_backward_xp):
        dx, dgamma, dbeta = f(gy, x, mean, inv_std, gamma)
        assert dx.dtype == dtype
        np.testing.assert_allclose(dx, dx_ref, rtol=tol, atol=tol * np.abs(dx_ref).max())
        np.testing.assert_allclose(dgamma, sum_gy_x_hat, rtol=tol, atol=tol)
        np.testing.assert_allclose(dbeta, sum_gy, rtol=tol, atol=tol)
        assert f(gy, x, mean, inv_std, gamma, need_dx=False)[0] is None
        assert f(gy, x, mean, inv_std, gamma, need_params=False)[1:] == (None, None)


def test_batch_norm_statistics_hold_for_a_large_mean():
    """Shifted float64 sums: a channel at 1e4 ± 1e-2 keeps its variance, where float32
    arithmetic on E[x²] − μ² would lose it all."""
    rng = np.random.default_rng(14)
    x = (1e4 + 1e-2 * rng.standard_normal((5000, 3))).astype(np.float32)
    var_ref = x.astype(np.float64).var(axis=0)
    for f in (K.batch_norm_forward, K.batch_norm_forward_xp):
        y, _, var = f(x, None, None, 0.0)
        np.testing.assert_allclose(var, var_ref, rtol=1e-9)
        np.testing.assert_allclose(y.std(axis=0, dtype=np.float64), 1, rtol=1e-3)
    with pytest.raises(ShapeError, match="no values"):
        K.batch_norm_forward(x[:0], None, None, 1e-3)


@pytest.mark.parametrize("dtype", DTYPES)
def test_elementwise_kernels_write_into_out(dtype):
    """relu, clipped ReLU and the channel affine map of batch norm give the same numbers in place
    (out=x) as into a new array, on both versions."""
    rng = np.random.default_rng(12)
    x = rng.standard_normal((3, 4, 5, 6)).astype(dtype) * 5
    mean, scale, shift = (rng.standard_normal(6).astype(dtype) for _ in range(3))
    runs = [(K.relu_forward, K.relu_forward_xp, ()), (K.clipped_relu_forward, K.clipped_relu_forward_xp, (6.0,)),
            (K.channel_affine, K.channel_affine_xp, (mean, scale, shift))]
    for kernel, twin, args in runs:
        fresh = kernel(x, *args)
        for f in (kernel, twin):
            a = x.copy()
            assert f(a, *args, out=a) is a
            np.testing.assert_array_equal(a, fresh)
    with pytest.raises(ShapeError, match="out must be a C-contiguous"):
        K.relu_forward(x, out=np.empty((3, 4, 5, 6), np.float16))
    with pytest.raises(ShapeError, match="out must be a C-contiguous"):
        K.channel_affine(x, mean, scale, shift, out=np.empty((3, 4, 6, 5), dtype).transpose(0, 1, 3, 2))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bias", [True, False])
def test_bias_relu_matches_twin_and_loops(dtype, bias):
    rng = np.random.default_rng(9)
    y = rng.standard_normal((7, 5)).astype(dtype)
    y[0, 0] = np.nan
    b = rng.standard_normal(5).astype(dtype) if bias else None
    ref = np.empty_like(y)
    for r, o in itertools.product(range(7), range(5)):
        v = y[r, o] + (b[o] if bias else 0)
        ref[r, o] = v if np.isnan(v) else max(v, 0)
    twin = K.bias_relu_xp(y.copy(), b)
    out = y.copy()
    assert K.bias_relu(out, b) is out                    # in place
    np.testing.assert_array_equal(out, twin)
    np.testing.assert_array_equal(out, ref)
    assert np.isnan(out[0, 0])


def test_bias_relu_checks_its_arguments():
    y = np.zeros((4, 3), np.float32)
    with pytest.raises(ShapeError, match="bias_relu: b must be a float32 array of shape"):
        K.bias_relu(y, np.zeros(3))
    with pytest.raises(ShapeError, match="bias_relu: y must be"):
        K.bias_relu(y.T, np.zeros(4, np.float32))


# ---------------------------------------------------------------- errors

def test_bad_shapes_raise():
    x = np.zeros((1, 4, 4, 2))
    with pytest.raises(ShapeError):
        K.im2col(x, 5, 5, 1, 1, (0, 0, 0, 0))           # kernel larger than input
    with pytest.raises(ShapeError):
        K.im2col(x[0], 3, 3, 1, 1, (0, 0, 0, 0))        # not 4-D
    with pytest.raises(ShapeError):
        K.im2col(x, 3, 3, 1, 1, (1, 1, 1))              # three pads
    with pytest.raises(ShapeError):
        K.col2im(np.zeros((5, 18)), x.shape, 3, 3, 1, 1, (0, 0, 0, 0))
    with pytest.raises(ShapeError):
        K.max_pool_forward(x, 2, 2, 2, 2, (2, 0, 0, 0))  # first window all padding
    with pytest.raises(ShapeError):
        K.max_pool_backward(np.zeros((1, 3, 3, 2)), np.zeros((1, 3, 3, 2), np.int32), x.shape,
                            2, 2, 2, 2, (0, 0, 0, 0))
    with pytest.raises(ShapeError):
        K.relu_backward(np.zeros(3), np.zeros(4))


# ---------------------------------------------------------------- CuPy (twins on the GPU)

@pytest.mark.gpu
def test_twins_on_cupy_match_numba():
    cp = pytest.importorskip("cupy")
    try:
        cp.zeros(1)
    except Exception as e:  # CuPy installed without a usable GPU
        pytest.skip(f"no usable GPU: {e}")
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 7, 6, 3)).astype(np.float32)
    args = (3, 3, 2, 2, (0, 1, 0, 1))
    cols = K.im2col(cp.asarray(x), *args)
    assert isinstance(cols, cp.ndarray)
    np.testing.assert_array_equal(cp.asnumpy(cols), K.im2col(x, *args))
    np.testing.assert_array_equal(cp.asnumpy(K.col2im(cols, x.shape, *args)),
                                  K.col2im(cp.asnumpy(cols), x.shape, *args))
    y, arg = K.max_pool_forward(cp.asarray(x), *args)
    y_np, arg_np = K.max_pool_forward(x, *args)
    np.testing.assert_array_equal(cp.asnumpy(y), y_np)
    np.testing.assert_array_equal(cp.asnumpy(arg), arg_np)
    np.testing.assert_array_equal(cp.asnumpy(K.max_pool_backward(y, arg, x.shape, *args)),
                                  K.max_pool_backward(y_np, arg_np, x.shape, *args))
    np.testing.assert_allclose(cp.asnumpy(K.avg_pool_forward(cp.asarray(x), *args)),
                               K.avg_pool_forward(x, *args), rtol=1e-6)
    np.testing.assert_array_equal(cp.asnumpy(K.relu_forward(cp.asarray(x))), K.relu_forward(x))
    y2, b = x.reshape(-1, 3), x[0, 0, :3, 0].copy()
    np.testing.assert_array_equal(cp.asnumpy(K.bias_relu(cp.asarray(y2), cp.asarray(b))),
                                  K.bias_relu(y2.copy(), b))
    np.testing.assert_array_equal(cp.asnumpy(K.im2col(cp.asarray(x), *args, rows=(1, 3))),
                                  K.im2col(x, *args, rows=(1, 3)))


# ---------------------------------------------------------------- process settings

def _run_python(code, **env):
    environ = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_THREAD_TIMEOUT", "MINITL_KEEP_FREED_MEMORY")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**environ, **env},
                         check=True)
    return out.stdout.split()


TIMEOUT_CODE = """
import numpy                      # loads OpenBLAS before minitl sets its thread timeout
import minitl.kernels as K
paths = K._reread_blas_thread_timeout()
import ctypes
print(len(paths), *(ctypes.CDLL(p).openblas_thread_timeout() for p in paths))
"""


def _openblas_loaded():
    try:
        with open("/proc/self/maps") as f:
            return "openblas" in f.read()
    except OSError:
        return False


@pytest.mark.skipif(not _openblas_loaded(), reason="NumPy without OpenBLAS, or no /proc")
def test_openblas_threads_stop_spinning_soon_even_when_numpy_came_first():
    count, *timeouts = _run_python(TIMEOUT_CODE)
    assert int(count) >= 1 and set(timeouts) == {"16"}
    _, *timeouts = _run_python(TIMEOUT_CODE, OPENBLAS_THREAD_TIMEOUT="20")    # the user's value wins
    assert set(timeouts) == {"20"}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc settings")
def test_freed_memory_is_kept_unless_turned_off():
    code = "import minitl.kernels as K; print(K.KEEPS_FREED_MEMORY)"
    assert _run_python(code) == ["True"]
    assert _run_python(code, MINITL_KEEP_FREED_MEMORY="0") == ["False"]
