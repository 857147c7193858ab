"""Convolution and pooling: gradient checks, an independent
forward reference (einsum over sliding windows), padding rules and shape errors."""
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

import minitl.functional as F
from minitl import ShapeError, Tensor, conv, gradcheck, kernels

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---- an independent reference ------------------------------------------------------

def expected_pads(padding, h, w, kh, kw, sh, sw):
    """(top, bottom, left, right) as Keras pads; 'same' puts the odd cell bottom/right."""
    if padding == "valid":
        return 0, 0, 0, 0
    if padding == "same":
        pads = []
        for n, k, s in ((h, kh, sh), (w, kw, sw)):
            total = max((math.ceil(n / s) - 1) * s + k - n, 0)
            pads += [total // 2, total - total // 2]
        return tuple(pads)
    if isinstance(padding, int):
        return (padding,) * 4
    if isinstance(padding[0], int):
        return padding[0], padding[0], padding[1], padding[1]
    return padding[0] + padding[1]


def pad_nhwc(x, pads, value=0.0):
    t, b, l, r = pads
    return np.pad(x, ((0, 0), (t, b), (l, r), (0, 0)), constant_values=value)


def windows(x, kh, kw, sh, sw):
    """(N, Ho, Wo, C, kh, kw): every window of x at the given strides."""
    return sliding_window_view(x, (kh, kw), axis=(1, 2))[:, ::sh, ::sw]


def reference_conv(x, w, b, stride, pads):
    sh, sw = stride
    kh, kw = w.shape[:2]
    y = np.einsum("nijcab,abco->nijo", windows(pad_nhwc(x, pads), kh, kw, sh, sw), w)
    return y if b is None else y + b


def reference_max_pool(x, pool, stride, pads):
    return windows(pad_nhwc(x, pads, -np.inf), *pool, *stride).max(axis=(4, 5))


def reference_avg_pool(x, pool, stride, pads):
    sums = windows(pad_nhwc(x, pads), *pool, *stride).sum(axis=(4, 5))
    ones = pad_nhwc(np.ones((1,) + x.shape[1:3] + (1,)), pads)
    counts = windows(ones, *pool, *stride).sum(axis=(4, 5))
    return sums / counts


def pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


# ---- convolution cases -------------------------------------------------------------
# (id, N, H, W, C_in, kh, kw, C_out, stride, padding, bias)
CONV_CASES = [
    ("3x3-s1-valid", 1, 5, 5, 2, 3, 3, 3, 1, "valid", True),
    ("3x3-s1-same-nobias", 1, 5, 5, 2, 3, 3, 3, 1, "same", False),
    ("3x3-s2-same-even-batch3", 3, 6, 6, 2, 3, 3, 1, 2, "same", True),
    ("3x3-s2-same-odd", 1, 7, 7, 2, 3, 3, 2, 2, "same", True),
    ("3x3-s2-valid-odd", 1, 7, 6, 2, 3, 3, 2, 2, "valid", False),
    ("5x5-s1-same", 1, 6, 5, 1, 5, 5, 2, 1, "same", True),
    ("5x5-s2-valid", 1, 7, 7, 2, 5, 5, 2, 2, "valid", False),
    ("1x1-s1-valid", 1, 4, 4, 3, 1, 1, 2, 1, "valid", True),
    ("1x1-s2-same-batch3", 3, 5, 5, 2, 1, 1, 4, 2, "same", False),
    ("2x2-s2-same-odd", 1, 5, 5, 2, 2, 2, 3, 2, "same", True),      # pads (0, 1, 0, 1)
    ("4x4-s2-same", 1, 7, 6, 2, 4, 4, 2, 2, "same", False),         # pads (1, 2, 1, 1)
    ("4x4-s1-same", 1, 5, 5, 1, 4, 4, 2, 1, "same", True),          # pads (1, 2, 1, 2)
    ("3x3-s1-int-pad", 1, 5, 5, 2, 3, 3, 2, 1, 1, True),
    ("3x3-s2-pair-pad", 1, 5, 6, 2, 3, 3, 2, 2, (1, 2), False),
    ("3x3-s1-explicit-pads", 1, 5, 5, 2, 3, 3, 2, 1, ((0, 2), (1, 0)), True),
    ("3x2-stride-2x1-same", 1, 6, 5, 2, 3, 2, 2, (2, 1), "same", True),
]
CONV_IDS = [c[0] for c in CONV_CASES]


def conv_inputs(case, dtype, rng):
    _, n, h, w, cin, kh, kw, cout, _stride, _padding, bias = case
    x = rng.standard_normal((n, h, w, cin)).astype(dtype)
    k = rng.standard_normal((kh, kw, cin, cout)).astype(dtype)
    b = rng.standard_normal(cout).astype(dtype) if bias else None
    return x, k, b


@pytest.mark.parametrize("case", CONV_CASES, ids=CONV_IDS)
def test_conv2d_gradient(case, rng):
    stride, padding = case[8], case[9]
    x, k, b = conv_inputs(case, np.float64, rng)
    inputs = [Tensor(x, requires_grad=True), Tensor(k, requires_grad=True)]
    if b is not None:
        inputs.append(Tensor(b, requires_grad=True))
    assert gradcheck(lambda *t: F.conv2d(*t, stride=stride, padding=padding), *inputs) < 1e-6


@pytest.mark.parametrize("view", ["transposed", "reversed"])
def test_conv2d_gradient_of_non_contiguous_input(view, rng):
    if view == "transposed":
        x = rng.standard_normal((2, 5, 6, 3)).transpose(0, 2, 1, 3)   # (2, 6, 5, 3)
    else:
        x = rng.standard_normal((2, 6, 5, 3))[:, ::-1, :, ::-1]
    assert not x.flags.c_contiguous
    k = rng.standard_normal((3, 3, 3, 2))
    b = rng.standard_normal(2)
    xt = Tensor(x, requires_grad=True)
    err = gradcheck(lambda *t: F.conv2d(*t, stride=2, padding="same"),
                    xt, Tensor(k, requires_grad=True), Tensor(b, requires_grad=True))
    assert err < 1e-6
    y = F.conv2d(Tensor(x), Tensor(k), Tensor(b), stride=2, padding="same").data
    pads = expected_pads("same", 6, 5, 3, 3, 2, 2)
    np.testing.assert_allclose(y, reference_conv(x, k, b, (2, 2), pads), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype,rtol", [(np.float32, 1e-5), (np.float64, 1e-12)])
@pytest.mark.parametrize("case", CONV_CASES, ids=CONV_IDS)
def test_conv2d_forward_matches_einsum(case, dtype, rtol, rng):
    _, n, h, w, _cin, kh, kw, cout, stride, padding, _ = case
    sh, sw = pair(stride)
    x, k, b = conv_inputs(case, dtype, rng)
    y = F.conv2d(Tensor(x), Tensor(k), None if b is None else Tensor(b), stride=stride, padding=padding).data
    assert y.dtype == dtype
    pads = expected_pads(padding, h, w, kh, kw, sh, sw)
    ref = reference_conv(x.astype(np.float64), k.astype(np.float64),
                         None if b is None else b.astype(np.float64), (sh, sw), pads)
    assert y.shape == ref.shape
    if padding == "same":
        assert y.shape == (n, math.ceil(h / sh), math.ceil(w / sw), cout)
    err = np.abs(y - ref).max() / np.abs(ref).max()
    assert err <= rtol


@pytest.mark.parametrize("case", CONV_CASES, ids=CONV_IDS)
def test_conv2d_matches_the_plain_loop_reference(case, rng):
    _, _n, h, w, _cin, kh, kw, _cout, stride, padding, _ = case
    sh, sw = pair(stride)
    x, k, b = conv_inputs(case, np.float64, rng)
    pads = expected_pads(padding, h, w, kh, kw, sh, sw)
    loops = conv.conv2d_reference(x, k, b, (sh, sw), pads)
    np.testing.assert_allclose(loops, reference_conv(x, k, b, (sh, sw), pads), rtol=1e-12, atol=1e-12)
    for activation in (None, "relu"):
        fast = F.conv2d(Tensor(x), Tensor(k), None if b is None else Tensor(b), stride=stride, padding=padding,
                        activation=activation).data
        assert fast.shape == loops.shape and fast.dtype == np.float64
        expected = loops if activation is None else np.maximum(loops, 0)
        np.testing.assert_allclose(fast, expected, rtol=1e-12, atol=1e-12)


def test_conv2d_wider_channels_in_float32(rng):
    # Longer dot products (K = 5*5*16 = 400) than the gradient-check cases.
    x = rng.standard_normal((2, 9, 8, 16)).astype(np.float32)
    k = rng.standard_normal((5, 5, 16, 8)).astype(np.float32)
    y = F.conv2d(Tensor(x), Tensor(k), stride=2, padding="same").data
    ref = reference_conv(x.astype(np.float64), k.astype(np.float64), None, (2, 2),
                         expected_pads("same", 9, 8, 5, 5, 2, 2))
    assert np.abs(y - ref).max() <= 1e-5 * np.abs(ref).max()


@pytest.mark.parametrize("n,k,s,top,bottom", [(5, 2, 2, 0, 1), (6, 2, 2, 0, 0), (7, 4, 2, 1, 2),
                                               (6, 4, 2, 1, 1), (5, 4, 1, 1, 2), (5, 3, 1, 1, 1),
                                               (4, 1, 1, 0, 0), (224, 3, 1, 1, 1)])
def test_same_padding_puts_the_extra_cell_bottom_right(n, k, s, top, bottom):
    from minitl.conv import resolve_padding
    assert expected_pads("same", n, n, k, k, s, s) == (top, bottom, top, bottom)
    assert resolve_padding("same", (n, n), (k, k), (s, s)) == (top, bottom, top, bottom)


# ---- image groups, skipped dx, mixed dtypes, reused buffers -------------------------------

def conv_and_grads(x, k, b, gy, **kw):
    xt, kt, bt = (Tensor(a, requires_grad=True) for a in (x, k, b))
    y = F.conv2d(xt, kt, bt, **kw)
    y.backward(gy)
    return y.data, xt.grad, kt.grad, bt.grad


@pytest.mark.parametrize("images_per_group", [1, 2])
def test_conv2d_in_image_groups_matches_one_group(images_per_group, monkeypatch, rng):
    x, k, b = rng.standard_normal((3, 7, 6, 2)), rng.standard_normal((3, 3, 2, 4)), rng.standard_normal(4)
    gy = rng.standard_normal((3, 4, 3, 4))
    whole = conv_and_grads(x, k, b, gy, stride=2, padding="same")
    image_bytes = 4 * 3 * 9 * 2 * 8                  # Ho·Wo rows of kh·kw·C float64 each
    monkeypatch.setattr(conv, "GROUP_BYTES", images_per_group * image_bytes)
    assert conv._group_size(image_bytes) == images_per_group
    grouped = conv_and_grads(x, k, b, gy, stride=2, padding="same")
    for a, g in zip(whole, grouped):
        np.testing.assert_allclose(g, a, rtol=1e-12, atol=1e-12)
    assert gradcheck(lambda *t: F.conv2d(*t, stride=2, padding="same"),
                     *(Tensor(a, requires_grad=True) for a in (x, k, b))) < 1e-6


@pytest.mark.parametrize("tile_bytes, tile_rows", [(1, 1), (1, 40), (1, 100)])   # rows, part or 2 images
def test_conv2d_forward_in_row_tiles_matches_one_tile(tile_bytes, tile_rows, monkeypatch, rng):
    x, k, b = rng.standard_normal((3, 7, 6, 2)), rng.standard_normal((3, 3, 2, 4)), rng.standard_normal(4)
    whole = F.conv2d(x, k, b, padding="same").data
    monkeypatch.setattr(conv, "TILE_BYTES", tile_bytes)
    monkeypatch.setattr(conv, "TILE_ROWS", tile_rows)
    assert len(conv._tiles(3, 7, 6, 9 * 2 * 8, tile_bytes)) > 1
    np.testing.assert_allclose(F.conv2d(x, k, b, padding="same").data, whole, rtol=1e-12, atol=1e-12)


def test_conv2d_tiles_cover_every_row_once():
    for n, ho, wo, row_bytes, tile_bytes in [(3, 7, 6, 144, 1), (8, 224, 224, 2304, 4 << 20),
                                            (8, 14, 14, 18432, 4 << 20), (2, 5, 3, 8, 10 ** 9)]:
        rows = sorted((n_, i) for n0, n1, i0, i1 in conv._tiles(n, ho, wo, row_bytes, tile_bytes)
                      for n_ in range(n0, n1) for i in range(i0, i1))
        assert rows == [(n_, i) for n_ in range(n) for i in range(ho)]


@pytest.mark.parametrize("bias", [True, False])
def test_conv2d_with_relu_is_relu_of_conv2d(bias, rng):
    x, k, b = rng.standard_normal((2, 5, 6, 3)), rng.standard_normal((3, 3, 3, 4)), rng.standard_normal(4)
    gy = rng.standard_normal((2, 5, 6, 4))
    args = [Tensor(a, requires_grad=True) for a in ((x, k, b) if bias else (x, k))]
    fused = F.conv2d(*args, padding="same", activation="relu")
    fused.backward(gy)
    grads = [a.grad for a in args]
    for a in args:
        a.grad = None
    plain = F.relu(F.conv2d(*args, padding="same"))
    plain.backward(gy)
    np.testing.assert_array_equal(fused.data, plain.data)
    for g, a in zip(grads, args):
        np.testing.assert_allclose(g, a.grad, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="activation must be None or 'relu'"):
        F.conv2d(x, k, activation="tanh")


def test_conv2d_skips_dx_when_the_input_needs_no_grad(monkeypatch, rng):
    x = Tensor(rng.standard_normal((2, 5, 5, 3)))
    k = Tensor(rng.standard_normal((3, 3, 3, 2)), requires_grad=True)

    def no_col2im(*args, **kwargs):
        raise AssertionError("col2im called for an input without requires_grad")

    monkeypatch.setattr(conv.kernels, "col2im", no_col2im)
    assert gradcheck(lambda a, w: F.conv2d(a, w, padding="same"), x, k) < 1e-6
    assert x.grad is None and k.grad is not None


@pytest.mark.parametrize("bias", [True, False])
def test_conv2d_skips_dw_when_the_kernel_is_frozen(bias, monkeypatch, rng):
    x = rng.standard_normal((2, 5, 5, 3))
    k, b = rng.standard_normal((3, 3, 3, 2)), rng.standard_normal(2)
    gy = rng.standard_normal((2, 5, 5, 2))
    trained = [Tensor(a, requires_grad=True) for a in (x, k, b)]
    F.conv2d(*trained[:3 if bias else 2], padding="same").backward(gy)
    xt = Tensor(x, requires_grad=True)
    y = F.conv2d(xt, Tensor(k), Tensor(b) if bias else None, padding="same")

    def no_im2col(*args, **kwargs):
        raise AssertionError("im2col called in backward for a kernel without requires_grad")

    monkeypatch.setattr(conv.kernels, "im2col", no_im2col)
    y.backward(gy)
    np.testing.assert_array_equal(xt.grad, trained[0].grad)


def test_conv2d_mixed_dtypes(rng):
    x32 = rng.standard_normal((2, 5, 5, 3)).astype(np.float32)
    k64, b64 = rng.standard_normal((3, 3, 3, 2)), rng.standard_normal(2)
    gy = rng.standard_normal((2, 5, 5, 2))
    y, dx, dk, db = conv_and_grads(x32, k64, b64, gy, padding="same")
    ref = conv_and_grads(x32.astype(np.float64), k64, b64, gy, padding="same")
    assert (y.dtype, dx.dtype, dk.dtype, db.dtype) == (np.float64, np.float32, np.float64, np.float64)
    for a, r in zip((y, dx, dk, db), ref):
        np.testing.assert_allclose(a, r, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("impl", ["numba", "twin"])
def test_im2col_and_col2im_write_into_out(impl, rng):
    im2col = kernels.im2col if impl == "numba" else kernels.im2col_xp
    col2im = kernels.col2im if impl == "numba" else kernels.col2im_xp
    x = rng.standard_normal((2, 5, 4, 3)).astype(np.float32)
    pads = (1, 0, 0, 2)
    expected = im2col(x, 3, 2, 2, 1, pads)
    buf = np.full(expected.shape, 7, np.float32)
    assert im2col(x, 3, 2, 2, 1, pads, out=buf) is buf
    np.testing.assert_array_equal(buf, expected)
    cols = rng.standard_normal(expected.shape).astype(np.float32)
    dx = np.full(x.shape, 7, np.float32)             # overwritten, not added to
    assert col2im(cols, x.shape, 3, 2, 2, 1, pads, out=dx) is dx
    np.testing.assert_allclose(dx, col2im(cols, x.shape, 3, 2, 2, 1, pads), rtol=1e-6, atol=1e-6)


def test_kernels_check_out_buffers(rng):
    x = rng.standard_normal((2, 5, 4, 3)).astype(np.float32)
    pads = (1, 0, 0, 2)
    expected = kernels.im2col(x, 3, 2, 2, 1, pads)
    cols = rng.standard_normal(expected.shape).astype(np.float32)
    with pytest.raises(ShapeError, match="im2col: out must be a C-contiguous float32 array"):
        kernels.im2col(x, 3, 2, 2, 1, pads, out=np.empty((expected.shape[0], 99), np.float32))
    with pytest.raises(ShapeError, match="im2col: out must be"):
        kernels.im2col(x, 3, 2, 2, 1, pads, out=np.empty(expected.shape[::-1], np.float32).T)
    with pytest.raises(ShapeError, match="col2im: out must be"):
        kernels.col2im(cols, x.shape, 3, 2, 2, 1, pads, out=np.empty(x.shape, np.float64))


# ---- pooling -----------------------------------------------------------------------
# (id, x shape, pool, stride, padding)
POOL_CASES = [
    ("2x2-s2-valid", (2, 4, 4, 3), 2, None, "valid"),
    ("2x2-s2-valid-odd", (1, 5, 5, 2), 2, 2, "valid"),
    ("3x3-s1-overlap", (1, 5, 5, 2), 3, 1, "valid"),
    ("3x3-s2-same", (2, 5, 5, 2), 3, 2, "same"),
    ("2x2-s2-same-odd", (1, 5, 7, 2), 2, 2, "same"),
    ("2x3-s1x2-same", (1, 5, 6, 2), (2, 3), (1, 2), "same"),
    ("3x3-s2-pad1", (1, 6, 6, 2), 3, 2, 1),
]
POOL_IDS = [c[0] for c in POOL_CASES]


def distinct(shape, rng):
    """Values with no ties (so max-pool is differentiable), gaps of 0.1."""
    return rng.permutation(int(np.prod(shape))).reshape(shape) * 0.1 + 0.01


@pytest.mark.parametrize("case", POOL_CASES, ids=POOL_IDS)
def test_max_pool_gradient_and_forward(case, rng):
    _, shape, pool, stride, padding = case
    x = distinct(shape, rng)
    assert gradcheck(lambda t: F.max_pool2d(t, pool, stride, padding), Tensor(x, requires_grad=True)) < 1e-6
    p = pair(pool)
    s = p if stride is None else pair(stride)
    pads = expected_pads(padding, shape[1], shape[2], *p, *s)
    y = F.max_pool2d(Tensor(x.astype(np.float32)), pool, stride, padding).data
    np.testing.assert_array_equal(y, reference_max_pool(x.astype(np.float32), p, s, pads))


@pytest.mark.parametrize("case", POOL_CASES, ids=POOL_IDS)
def test_avg_pool_gradient_and_forward(case, rng):
    _, shape, pool, stride, padding = case
    x = rng.standard_normal(shape)
    assert gradcheck(lambda t: F.avg_pool2d(t, pool, stride, padding), Tensor(x, requires_grad=True)) < 1e-6
    p = pair(pool)
    s = p if stride is None else pair(stride)
    pads = expected_pads(padding, shape[1], shape[2], *p, *s)
    y = F.avg_pool2d(Tensor(x), pool, stride, padding).data
    np.testing.assert_allclose(y, reference_avg_pool(x, p, s, pads), rtol=1e-12, atol=1e-12)


def test_global_avg_pool(rng):
    x = rng.standard_normal((3, 4, 5, 2))
    assert gradcheck(F.global_avg_pool2d, Tensor(x, requires_grad=True)) < 1e-6
    y = F.global_avg_pool2d(Tensor(x)).data
    assert y.shape == (3, 2)
    np.testing.assert_allclose(y, x.sum(axis=(1, 2)) / 20, rtol=1e-12)


# ---- shape errors ------------------------------------------------------------------

def test_kernel_larger_than_valid_input():
    with pytest.raises(ShapeError, match=r"conv2d: window \(5, 5\) is larger than the padded input 3x3"):
        F.conv2d(np.ones((1, 3, 3, 2), np.float32), np.ones((5, 5, 2, 1), np.float32))
    # the same kernel fits once padded
    assert F.conv2d(np.ones((1, 3, 3, 2), np.float32), np.ones((5, 5, 2, 1), np.float32),
                    padding="same").shape == (1, 3, 3, 1)


def test_channel_mismatch_names_both_shapes():
    x, w = np.ones((1, 5, 5, 3), np.float32), np.ones((3, 3, 2, 4), np.float32)
    with pytest.raises(ShapeError) as e:
        F.conv2d(x, w)
    msg = str(e.value)
    assert "(1, 5, 5, 3)" in msg and "(3, 3, 2, 4)" in msg and "3 channels" in msg


@pytest.mark.parametrize("x_shape,w_shape,pattern", [
    ((5, 5, 3), (3, 3, 3, 4), r"input must be \(N, H, W, C\), got shape \(5, 5, 3\)"),
    ((1, 1, 5, 5, 3), (3, 3, 3, 4), r"input must be \(N, H, W, C\).*rank 5"),
    ((1, 5, 5, 3), (3, 3, 3), r"kernel must be \(kh, kw, C_in, C_out\), got shape \(3, 3, 3\)"),
])
def test_conv2d_wrong_rank(x_shape, w_shape, pattern):
    with pytest.raises(ShapeError, match=pattern):
        F.conv2d(np.ones(x_shape, np.float32), np.ones(w_shape, np.float32))


@pytest.mark.parametrize("b_shape", [(3,), (4, 1), (1, 4)])
def test_conv2d_bias_of_wrong_shape(b_shape):
    x, w = np.ones((1, 5, 5, 3), np.float32), np.ones((3, 3, 3, 4), np.float32)
    with pytest.raises(ShapeError, match=re.escape(f"bias shape {b_shape} does not match 4 filters")):
        F.conv2d(x, w, np.ones(b_shape, np.float32))


@pytest.mark.parametrize("fn", [F.max_pool2d, F.avg_pool2d, F.global_avg_pool2d])
def test_pooling_wrong_rank(fn):
    with pytest.raises(ShapeError, match=r"must be \(N, H, W, C\), got shape \(4, 4, 2\)"):
        fn(np.ones((4, 4, 2), np.float32))


def test_pool_larger_than_input():
    with pytest.raises(ShapeError, match="max_pool2d: window"):
        F.max_pool2d(np.ones((1, 2, 2, 1), np.float32), 3)


def test_bad_padding_and_stride_arguments():
    x, w = np.ones((1, 5, 5, 1), np.float32), np.ones((3, 3, 1, 1), np.float32)
    with pytest.raises(ValueError, match="padding must be"):
        F.conv2d(x, w, padding="full")
    with pytest.raises(ValueError, match="stride must be an int or a pair"):
        F.conv2d(x, w, stride=(1, 2, 3))


# ---- the same checks with Numba's JIT turned off -----------------------------------

JIT_FREE_TESTS = [
    "tests/test_conv.py::test_conv2d_gradient[3x3-s2-same-odd]",
    "tests/test_conv.py::test_conv2d_gradient[4x4-s2-same]",
    "tests/test_conv.py::test_conv2d_forward_matches_einsum[2x2-s2-same-odd-float64-1e-12]",
    "tests/test_conv.py::test_max_pool_gradient_and_forward[3x3-s2-same]",
    "tests/test_conv.py::test_avg_pool_gradient_and_forward[2x3-s1x2-same]",
]


@pytest.mark.skipif(os.environ.get("NUMBA_DISABLE_JIT") == "1", reason="already running without the JIT")
def test_subset_passes_with_numba_jit_disabled():
    script = ("import sys, types, pytest\n"
              "from minitl import kernels\n"
              "assert isinstance(kernels._im2col_nb, types.FunctionType), 'JIT is still on'\n"
              f"sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider'] + {JIT_FREE_TESTS!r}))\n")
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    run = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert f"{len(JIT_FREE_TESTS)} passed" in run.stdout
