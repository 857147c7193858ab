"""Tests of minitl.winograd: F(2×2, 3×3) and F(4×4, 3×3) against a float64 direct
convolution written here with loops, the Numba transforms against their array-module
twins, gradients through the Conv2D op, and the transformed-kernel cache."""
import numpy as np
import pytest

import minitl
import minitl.functional as F
import minitl.nn
from minitl import Tensor, conv, gradcheck, no_grad, winograd
from minitl.errors import ShapeError
from minitl.io import load_weights, save_weights
from minitl.optim import SGD

TILES = [2, 4]
TOL = {2: 1e-5, 4: 1e-4}                    # float32, relative to the largest output
# (N, H, W, C_in, C_out, padding): odd and even sizes, a 1x1 image, sizes below one tile
SHAPES = [(2, 7, 5, 3, 4, "same"), (1, 9, 8, 5, 3, "valid"), (3, 4, 4, 2, 2, "same"),
          (1, 1, 1, 3, 2, "same"), (2, 6, 11, 4, 5, "valid"), (1, 3, 3, 2, 3, "valid"),
          (2, 13, 10, 6, 7, "same")]
PADS = {"same": (1, 1, 1, 1), "valid": (0, 0, 0, 0)}


def direct_conv(x, w, b, pads, relu):
    """Float64 cross-correlation by loops over output cells and kernel cells."""
    x, w = x.astype(np.float64), w.astype(np.float64)
    top, bottom, left, right = pads
    xp = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    n, h, wd, _ = xp.shape
    y = np.zeros((n, h - 2, wd - 2, w.shape[3]))
    for i in range(h - 2):
        for j in range(wd - 2):
            for a in range(3):
                for c in range(3):
                    y[:, i, j] += xp[:, i + a, j + c] @ w[a, c]
    if b is not None:
        y += b
    return np.maximum(y, 0) if relu else y


def rel_err(y, ref):
    return float(np.abs(y - ref).max() / max(np.abs(ref).max(), 1e-30))


def inputs(shape, dtype, rng, bias=True):
    n, h, w, c, o, _ = shape
    x = rng.standard_normal((n, h, w, c)).astype(dtype)
    k = rng.standard_normal((3, 3, c, o)).astype(dtype)
    b = rng.standard_normal(o).astype(dtype) if bias else None
    return x, k, b


@pytest.mark.parametrize("m", TILES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("relu", [False, True])
def test_forward_matches_direct_float64(m, shape, relu, rng):
    pads = PADS[shape[5]]
    for dtype, tol in ((np.float32, TOL[m]), (np.float64, 1e-12)):
        x, k, b = inputs(shape, dtype, rng, bias=relu)
        y = winograd.forward(x, winograd.transform_kernel(k, m), b, pads, relu, m)
        ref = direct_conv(x, k, b, pads, relu)
        assert y.shape == ref.shape and y.dtype == dtype
        assert rel_err(y, ref) < tol


@pytest.mark.parametrize("algorithm", ["winograd", "winograd4"])
@pytest.mark.parametrize("shape", SHAPES)
def test_conv2d_op_with_winograd_matches_direct(algorithm, shape, rng):
    x, k, b = inputs(shape, np.float32, rng)
    with conv.algorithm(algorithm):
        y = F.conv2d(x, k, b, padding=shape[5], activation="relu")
    assert rel_err(y.data, direct_conv(x, k, b, PADS[shape[5]], True)) < TOL[{"winograd": 2, "winograd4": 4}[algorithm]]


@pytest.mark.parametrize("m", TILES)
@pytest.mark.parametrize("shape", SHAPES)
def test_input_tiles_numba_matches_twin(m, shape, rng):
    pads = PADS[shape[5]]
    x, _, _ = inputs(shape, np.float64, rng)
    _, _, th, tw = winograd._tile_grid(x.shape, pads, m)
    bt = winograd.MATRICES[m][0]
    rows = x.shape[0] * th
    for g0, g1 in {(0, rows), (rows // 2, rows), (0, max(1, rows // 3)), (rows - 1, rows)}:
        a = winograd.input_tiles(x, bt, g0, g1, th, tw, m, pads)
        b = winograd.input_tiles_xp(x, bt, g0, g1, th, tw, m, pads)
        assert a.shape == b.shape == ((m + 2) ** 2, (g1 - g0) * tw, x.shape[3])
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("m", TILES)
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("shape", SHAPES)
def test_output_tiles_numba_matches_twin(m, relu, shape, rng):
    n, h, w, _, o, padding = shape
    ho, wo, th, tw = winograd._tile_grid((n, h, w, 1), PADS[padding], m)
    at = winograd.MATRICES[m][2]
    b = rng.standard_normal(o)
    rows = n * th
    for g0, g1 in {(0, rows), (rows // 2, rows), (rows - 1, rows)}:
        mm = rng.standard_normal(((m + 2) ** 2, (g1 - g0) * tw, o))
        a = np.full((n, ho, wo, o), 7.0)
        c = np.full((n, ho, wo, o), 7.0)         # cells outside the chunk stay as they were
        winograd.output_tiles(mm, at, b, relu, a, g0, g1, th, tw, m)
        winograd.output_tiles_xp(mm, at, b, relu, c, g0, g1, th, tw, m)
        np.testing.assert_allclose(a, c, rtol=1e-12, atol=1e-12)


def test_output_tiles_fill_every_cell_once_over_the_chunks(rng):
    y = np.full((2, 9, 7, 3), np.nan)
    x, k, _ = inputs((2, 9, 7, 4, 3, "same"), np.float64, rng)
    winograd.forward(x, winograd.transform_kernel(k, 4), None, (1, 1, 1, 1), False, 4, out=y)
    assert not np.isnan(y).any()


@pytest.mark.parametrize("m", TILES)
def test_small_chunks_match_one_chunk(m, monkeypatch, rng):
    x, k, b = inputs((3, 10, 9, 4, 5, "same"), np.float64, rng)
    u = winograd.transform_kernel(k, m)
    one = winograd.forward(x, u, b, (1, 1, 1, 1), True, m)
    monkeypatch.setattr(winograd, "CHUNK_BYTES", 1)
    monkeypatch.setattr(winograd, "CHUNK_TILES", 1)      # one tile row per chunk
    assert len(winograd._chunks(3 * 5, 5, 1000, False)) == 15
    np.testing.assert_allclose(winograd.forward(x, u, b, (1, 1, 1, 1), True, m), one, rtol=1e-13, atol=1e-13)


def test_chunks_cover_every_tile_row_once():
    for n_rows, tw, row_bytes in [(1, 1, 10), (17, 3, 2**20), (224, 56, 10**5), (5, 100, 1)]:
        chunks = winograd._chunks(n_rows, tw, row_bytes, False)
        assert [g for g0, g1 in chunks for g in range(g0, g1)] == list(range(n_rows))


def test_nan_propagates_through_relu(rng):
    x, k, b = inputs((1, 4, 4, 2, 3, "same"), np.float32, rng)
    x[0, 1, 1, 0] = np.nan
    y = winograd.forward(x, winograd.transform_kernel(k, 2), b, (1, 1, 1, 1), True, 2)
    assert np.isnan(y[0, :3, :3]).all()


# ---------------------------------------------------------------- gradients and the op

@pytest.mark.parametrize("algorithm,padding,relu", [
    ("winograd", "same", True), ("winograd", "valid", False), ("winograd", "same", False),
    ("winograd4", "same", True), ("winograd4", "valid", False), ("winograd4", "same", False),
    ("auto", "same", True)])
def test_conv2d_gradient_through_winograd(algorithm, padding, relu, monkeypatch, rng):
    # 'auto' picks Winograd from 64 input channels and (lowered here) 1 output cell
    monkeypatch.setattr(winograd, "AUTO_MIN_PIXELS", 1)
    c, n = (64, 1) if algorithm == "auto" else (3, 2)
    x = Tensor(rng.standard_normal((n, 5, 4, c)), requires_grad=True)
    k = Tensor(rng.standard_normal((3, 3, c, 2)), requires_grad=True)
    b = Tensor(rng.standard_normal(2), requires_grad=True)
    with conv.algorithm(algorithm):
        assert winograd.choose(x.data, k.data, b.data, (1, 1), PADS[padding]) in (2, 4)
        act = "relu" if relu else None
        assert gradcheck(lambda *t: F.conv2d(*t, padding=padding, activation=act), x, k, b) < 1e-6


@pytest.mark.parametrize("m", TILES)
@pytest.mark.parametrize("shape", SHAPES)
def test_backward_weight_matches_direct_float64(m, shape, rng):
    n, h, w, c, o, padding = shape
    pads = PADS[padding]
    x, _, _ = inputs(shape, np.float64, rng)
    ho, wo = h + pads[0] + pads[1] - 2, w + pads[2] + pads[3] - 2
    gy = rng.standard_normal((n, ho, wo, o))
    xp = np.pad(x, ((0, 0), pads[:2], pads[2:], (0, 0)))
    ref = np.zeros((3, 3, c, o))                         # dW[a, b] = Σ over outputs of x window ⊗ gY
    for a in range(3):
        for b in range(3):
            ref[a, b] = np.einsum("nijc,nijo->co", xp[:, a:a + ho, b:b + wo], gy)
    for dtype, tol in ((np.float64, 1e-12), (np.float32, TOL[m])):
        dw = winograd.backward_weight(x.astype(dtype), gy.astype(dtype), pads, m)
        assert dw.shape == (3, 3, c, o) and dw.dtype == dtype
        assert rel_err(dw, ref) < tol


@pytest.mark.parametrize("m", TILES)
def test_gy_tiles_numba_matches_twin(m, rng):
    gy = rng.standard_normal((2, 7, 5, 3))
    _, _, th, tw = winograd._tile_grid((2, 7, 5, 1), (1, 1, 1, 1), m)
    a_mat = winograd.MATRICES[m][2].T.copy()
    for g0, g1 in ((0, 2 * th), (1, 2 * th)):
        np.testing.assert_allclose(winograd.input_tiles(gy, a_mat, g0, g1, th, tw, m, (0, 0, 0, 0)),
                                   winograd.input_tiles_xp(gy, a_mat, g0, g1, th, tw, m, (0, 0, 0, 0)),
                                   rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("m", TILES)
def test_backward_input_matches_im2col(m, rng):
    for padding in ("same", "valid"):
        x, k, b = inputs((2, 7, 6, 5, 4, padding), np.float64, rng)
        gy = rng.standard_normal((2, 7, 6, 4) if padding == "same" else (2, 5, 4, 4))
        grads = []
        for name in ("im2col", {2: "winograd", 4: "winograd4"}[m]):
            xt, kt, bt = Tensor(x, requires_grad=True), Tensor(k, requires_grad=True), Tensor(b, requires_grad=True)
            with conv.algorithm(name):
                F.conv2d(xt, kt, bt, padding=padding, activation="relu").backward(gy)
            grads.append((xt.grad, kt.grad, bt.grad))
        for a, c in zip(*grads):
            np.testing.assert_allclose(a, c, rtol=1e-11, atol=1e-11)


def test_choose_rule():
    x64 = np.zeros((1, 10, 10, 64), np.float32)
    x3 = np.zeros((1, 10, 10, 3), np.float32)
    w64, w3 = np.zeros((3, 3, 64, 8), np.float32), np.zeros((3, 3, 3, 8), np.float32)
    same = (1, 1, 1, 1)
    assert conv.get_algorithm() == "auto"
    assert winograd.choose(x64, w64, None, (1, 1), same) == winograd.AUTO_TILE
    assert winograd.choose(x3, w3, None, (1, 1), same) is None               # block1_conv1: im2col
    assert winograd.choose(x64[:, :9], w64, None, (1, 1), same) is None      # 9x10 outputs: too few
    assert winograd.choose(x64, w64, None, (2, 2), same) is None             # stride 2
    assert winograd.choose(x64, np.zeros((5, 5, 64, 8), np.float32), None, (1, 1), same) is None
    assert winograd.choose(x64, w64, None, (1, 1), (3, 3, 3, 3)) is None     # dX would need pads < 0
    assert winograd.choose(x64, w64.astype(np.float64), None, (1, 1), same) is None   # mixed dtypes
    with conv.algorithm("winograd"):
        assert winograd.choose(x3, w3, None, (1, 1), same) == 2
        with conv.algorithm("im2col"):
            assert winograd.choose(x64, w64, None, (1, 1), same) is None
        assert conv.get_algorithm() == "winograd"
    assert conv.get_algorithm() == "auto"


def test_auto_takes_the_smaller_tile_where_a_gradient_flows_back():
    """F(4×4) for inference (and frozen layers), F(2×2) in a recorded graph, through conv2d itself."""
    rng = np.random.default_rng(3)
    x = Tensor(rng.standard_normal((1, 12, 12, 64)).astype(np.float32))
    w = Tensor(rng.standard_normal((3, 3, 64, 8)).astype(np.float32))
    tiles = []
    real_choose = winograd.choose

    def spy(*args):
        tiles.append(real_choose(*args))
        return tiles[-1]
    winograd.choose = spy
    try:
        F.conv2d(x, w, padding="same")                            # nothing requires grad
        w.requires_grad = True
        F.conv2d(x, w, padding="same")                            # trains
        with no_grad():
            F.conv2d(x, w, padding="same")
    finally:
        winograd.choose = real_choose
    assert tiles == [winograd.AUTO_TILE, winograd.AUTO_TRAINING_TILE, winograd.AUTO_TILE] == [4, 2, 4]
    assert winograd.choose(x.data, w.data, None, (1, 1), (1, 1, 1, 1), training=True) == 2
    with conv.algorithm("winograd4"):                             # a tile asked for by name is kept
        assert winograd.choose(x.data, w.data, None, (1, 1), (1, 1, 1, 1), training=True) == 4


def test_set_algorithm_refuses_unknown_names():
    with pytest.raises(ValueError, match="im2col"):
        conv.set_algorithm("fft")
    assert conv.set_algorithm("winograd") == "auto"
    assert conv.set_algorithm("auto") == "winograd"


def test_out_of_the_wrong_shape_is_refused(rng):
    x, k, _ = inputs((1, 4, 4, 2, 3, "same"), np.float32, rng)
    with pytest.raises(ShapeError, match="out must be"):
        winograd.forward(x, winograd.transform_kernel(k, 2), None, (1, 1, 1, 1), False, 2,
                         out=np.empty((1, 3, 3, 3), np.float32))


# ---------------------------------------------------------------- the transformed-kernel cache

def counting_transforms(monkeypatch):
    calls = []
    real = winograd.transform_kernel

    def counted(w, m):
        calls.append(w.shape)
        return real(w, m)
    monkeypatch.setattr(winograd, "transform_kernel", counted)
    return calls


def small_model():
    return minitl.nn.Sequential([minitl.nn.Conv2D(4, 3, padding="same", activation="relu", input_channels=3)])


def first_conv(model):
    return next(layer for layer in model.layers() if isinstance(layer, minitl.nn.Conv2D))


def test_kernel_is_transformed_once_for_inference(monkeypatch, rng):
    calls = counting_transforms(monkeypatch)
    model = small_model()
    x = rng.standard_normal((1, 6, 6, 3)).astype(np.float32)
    with conv.algorithm("winograd"), no_grad():
        first = model(x).data
        second = model(x).data
    assert len(calls) == 1
    np.testing.assert_array_equal(first, second)


def test_cache_is_dropped_after_an_optimizer_step(monkeypatch, rng):
    calls = counting_transforms(monkeypatch)
    model = small_model()
    layer = first_conv(model)
    x = rng.standard_normal((2, 6, 6, 3)).astype(np.float32)
    opt = SGD(model.parameters(), lr=0.1)
    with conv.algorithm("winograd"):
        with no_grad():
            before = model(x).data
        assert len(calls) == 1
        model(x).sum().backward()
        opt.step()
        with no_grad():
            after = model(x).data
        with conv.algorithm("im2col"), no_grad():
            expected = model(x).data
    assert not np.allclose(before, after)
    np.testing.assert_allclose(after, expected, rtol=1e-5, atol=1e-5)
    assert layer.kernel.version > 1


def test_trained_kernels_are_not_kept(rng):
    model = small_model()
    x = rng.standard_normal((2, 6, 6, 3)).astype(np.float32)
    with conv.algorithm("winograd"):
        model(x).sum().backward()
    assert first_conv(model).kernel.__dict__.get("_winograd_kernels", {}) == {}


def test_cache_is_dropped_after_loading_weights(tmp_path, rng):
    source, target = small_model(), small_model()
    path = tmp_path / "w.h5"
    save_weights(source, path)
    x = rng.standard_normal((1, 5, 7, 3)).astype(np.float32)
    with conv.algorithm("winograd"), no_grad():
        stale = target(x).data
        load_weights(target, path, by_name=False)
        loaded = target(x).data
        expected = source(x).data
    assert not np.allclose(stale, loaded)
    np.testing.assert_allclose(loaded, expected, rtol=1e-6, atol=1e-6)


def test_in_place_write_with_version_bump_is_seen(rng):
    model = small_model()
    k = first_conv(model).kernel
    x = rng.standard_normal((1, 5, 5, 3)).astype(np.float32)
    with conv.algorithm("winograd"), no_grad():
        model(x)
        k.data[:] = 0
        k.version += 1
        y = model(x).data
    np.testing.assert_allclose(y, np.maximum(first_conv(model).bias.data, 0) + 0 * y, atol=1e-7)


@pytest.mark.parametrize("m", TILES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_transform_kernel_numba_matches_twin_and_definition(m, dtype, rng):
    w = rng.standard_normal((3, 3, 5, 7)).astype(dtype)
    u = winograd.transform_kernel(w, m)
    _, g, _ = winograd.MATRICES[m]
    t = m + 2
    by_definition = np.stack([[g @ w[:, :, c, o].astype(np.float64) @ g.T for o in range(7)] for c in range(5)])
    assert u.shape == (t * t, 5, 7) and u.dtype == dtype
    np.testing.assert_allclose(u, by_definition.transpose(2, 3, 0, 1).reshape(t * t, 5, 7), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(u, winograd.transform_kernel_xp(w, m), rtol=1e-6 if dtype == np.float32 else 1e-14,
                               atol=1e-6 if dtype == np.float32 else 1e-14)
    flipped = winograd.flipped_kernel(w)
    np.testing.assert_array_equal(winograd.transform_kernel(flipped, m),
                                  winograd.transform_kernel(np.ascontiguousarray(flipped), m))


@pytest.mark.gpu
@pytest.mark.parametrize("algorithm", ["winograd", "winograd4"])
def test_winograd_on_gpu_matches_cpu(algorithm, rng):
    x, k, b = inputs((2, 9, 7, 64, 8, "same"), np.float32, rng)
    gy = rng.standard_normal((2, 9, 7, 8)).astype(np.float32)
    results = []
    for device in ("cpu", "gpu"):
        xt, kt, bt = (Tensor(a, requires_grad=True).to(device) for a in (x, k, b))
        with conv.algorithm(algorithm):
            y = F.conv2d(xt, kt, bt, padding="same", activation="relu")
            y.backward(Tensor(gy).to(device).data)
        results.append([minitl.backend.to_numpy(a) for a in (y.data, xt.grad, kt.grad, bt.grad)])
    for g, c in zip(*results):
        np.testing.assert_allclose(g, c, rtol=1e-4, atol=1e-4)
