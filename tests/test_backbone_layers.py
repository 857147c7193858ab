"""The layers of ResNet50, InceptionV3 and MobileNetV2: BatchNormalization, DepthwiseConv2D,
ZeroPadding2D, ReLU(max_value), Add, Concatenate, 1×1 convolutions as one matrix product, and
the pooling windows these models use; each against a plain-loop or NumPy reference written here
(their gradients are checked in minitl.check.op_cases)."""
import itertools

import numpy as np
import pytest

import minitl.functional as F
from minitl import Tensor, nn, no_grad
from minitl import kernels as K
from minitl.conv import Conv2DFunction, depthwise_conv2d_reference, resolve_padding
from minitl.errors import ShapeError
from minitl.ops import add
from minitl.optim import SGD

# ---------------------------------------------------------------- BatchNormalization

def bn_reference(x, gamma, beta, mean, var, eps):
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def test_batchnorm_training_mode_uses_batch_statistics_and_updates_the_moving_ones():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 5, 6)).astype(np.float32) * 2 + 1
    bn = nn.BatchNormalization(momentum=0.9, epsilon=1e-3)
    bn.build(6)
    bn.gamma.data[:] = rng.uniform(0.5, 2, 6)
    bn.beta.data[:] = rng.standard_normal(6)
    m0, v0 = rng.standard_normal(6).astype(np.float32), rng.uniform(0.5, 2, 6).astype(np.float32)
    bn.moving_mean.data[:], bn.moving_variance.data[:] = m0, v0
    y = bn(Tensor(x))
    x64 = x.astype(np.float64)
    mean, var = x64.mean(axis=(0, 1, 2)), x64.var(axis=(0, 1, 2))     # biased variance
    np.testing.assert_allclose(y.data, bn_reference(x64, bn.gamma.data, bn.beta.data, mean, var, 1e-3),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(bn.moving_mean.data, m0 * 0.9 + mean * 0.1, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(bn.moving_variance.data, v0 * 0.9 + var * 0.1, rtol=1e-6, atol=1e-6)
    assert bn.moving_mean.dtype == np.float32


@pytest.mark.parametrize("how", ["eval", "frozen"])
def test_batchnorm_inference_mode_uses_the_moving_statistics_and_leaves_them(how):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 3, 4)).astype(np.float32)
    bn = nn.BatchNormalization(epsilon=1.001e-5)
    bn.build(4)
    bn.moving_mean.data[:] = rng.standard_normal(4)
    bn.moving_variance.data[:] = rng.uniform(0.5, 2, 4)
    before = bn.state_dict()
    if how == "eval":
        bn.eval()
    else:
        bn.freeze()                        # trainable=False: inference mode even in train()
        assert bn.training and not bn.trainable
    y = bn(Tensor(x))
    np.testing.assert_allclose(y.data, bn_reference(x, 1, 0, bn.moving_mean.data, bn.moving_variance.data, 1.001e-5),
                               rtol=1e-5, atol=1e-6)
    for k, v in bn.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
    bn.unfreeze().train()
    bn(Tensor(x))
    assert not np.array_equal(bn.moving_mean.data, before["moving_mean"])


def test_batchnorm_without_scale_or_center_has_fewer_weights():
    bn = nn.BatchNormalization(scale=False)
    bn.build(3)
    assert [w.name for w in bn.weights] == ["beta", "moving_mean", "moving_variance"]
    assert [p.name for p in bn.parameters()] == ["beta"]
    bn = nn.BatchNormalization(center=False, scale=False)
    x = Tensor(np.random.default_rng(2).standard_normal((3, 2, 2, 3)))
    y = bn(x)
    assert bn.parameters() == [] and len(bn.weights) == 2
    np.testing.assert_allclose(y.data.mean(axis=(0, 1, 2)), 0, atol=1e-12)


def test_moving_statistics_are_saved_but_never_trained():
    model = nn.Sequential([nn.Conv2D(4, 3, name="c"), nn.BatchNormalization(name="bn")], input_shape=(5, 5, 2))
    bn = model.get_layer("bn")
    assert {id(p) for p in model.parameters()} == {id(p) for p in (*model.get_layer("c").weights, bn.gamma, bn.beta)}
    assert [k for k in model.state_dict()][-2:] == ["bn.moving_mean", "bn.moving_variance"]
    assert model.count_params() == 3 * 3 * 2 * 4 + 4 + 4 * 4
    model.freeze()
    model.unfreeze()
    assert not bn.moving_mean.requires_grad and not bn.moving_variance.requires_grad
    opt = SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1)
    x = Tensor(np.random.default_rng(3).standard_normal((2, 5, 5, 2)).astype(np.float32))
    with np.errstate(all="raise"):
        loss = (model(x) * model(x)).mean()
    after_forward = bn.moving_mean.data.copy()
    loss.backward()
    opt.step()
    np.testing.assert_array_equal(bn.moving_mean.data, after_forward)   # the step does not touch them
    state = model.state_dict()
    other = nn.Sequential([nn.Conv2D(4, 3, name="c"), nn.BatchNormalization(name="bn")], input_shape=(5, 5, 2))
    other.load_state_dict(state)
    np.testing.assert_array_equal(other.get_layer("bn").moving_variance.data, bn.moving_variance.data)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_channel_affine_matches_twin_and_numpy(dtype):
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 5, 4, 7)).astype(dtype)[:, ::-1]          # a non-contiguous view
    mean, scale, shift = (rng.standard_normal(7).astype(dtype) for _ in range(3))
    y = K.channel_affine(x, mean, scale, shift)
    assert y.dtype == dtype and y.shape == x.shape
    np.testing.assert_array_equal(y, K.channel_affine_xp(x, mean, scale, shift))
    ref = (x.astype(np.float64) - mean) * scale + shift
    np.testing.assert_allclose(y, ref, rtol=1e-6 if dtype == np.float32 else 1e-14, atol=1e-6)
    with pytest.raises(ShapeError, match="scale"):
        K.channel_affine(x, mean, scale[:3], shift)


def test_batch_norm_checks_shapes():
    x = Tensor(np.zeros((2, 3, 3, 4)))
    with pytest.raises(ShapeError, match="gamma has shape"):
        F.batch_norm(x, np.ones(3), None, np.zeros(4), np.ones(4))
    with pytest.raises(ShapeError, match="axis"):
        F.batch_norm(x, None, None, np.zeros(4), np.ones(4), axis=4)


# ---------------------------------------------------------------- depthwise convolution

def depthwise_loops(x, w, s, pads):
    """Plain loops over every output cell, channel and multiplier, in float64."""
    N, H, W, C = x.shape
    kh, kw, _, M = w.shape
    top, bottom, left, right = pads
    Ho, Wo = (H + top + bottom - kh) // s[0] + 1, (W + left + right - kw) // s[1] + 1
    y = np.zeros((N, Ho, Wo, C * M))
    for n, i, j, c, m in itertools.product(range(N), range(Ho), range(Wo), range(C), range(M)):
        for a, b in itertools.product(range(kh), range(kw)):
            r, q = i * s[0] + a - top, j * s[1] + b - left
            if 0 <= r < H and 0 <= q < W:
                y[n, i, j, c * M + m] += float(x[n, r, q, c]) * float(w[a, b, c, m])
    return y


DEPTHWISE = [  # (x shape, kernel shape, stride, padding)
    ((2, 7, 6, 3), (3, 3, 3, 1), 1, "same"),
    ((2, 7, 6, 3), (3, 3, 3, 1), 2, "same"),
    ((1, 8, 8, 2), (3, 3, 2, 2), 2, "valid"),
    ((1, 6, 7, 2), (3, 3, 2, 3), 1, "valid"),
    ((2, 5, 5, 3), (3, 3, 3, 1), 2, ((0, 1), (0, 1))),   # MobileNetV2's block_1_pad done by the op
    ((1, 6, 5, 2), (2, 3, 2, 2), (2, 1), ((1, 0), (2, 1))),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("x_shape,w_shape,stride,padding", DEPTHWISE)
def test_depthwise_matches_loops_and_twin(x_shape, w_shape, stride, padding, dtype):
    rng = np.random.default_rng(4)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    s = (stride, stride) if isinstance(stride, int) else stride
    pads = resolve_padding(padding, x_shape[1:3], w_shape[:2], s)
    tol = {"rtol": 1e-5, "atol": 1e-5} if dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-12}
    ref = depthwise_loops(x, w, s, pads)
    np.testing.assert_allclose(depthwise_conv2d_reference(x, w, s, pads), ref, **tol)
    y = K.depthwise_forward(x, w, *s, pads)
    assert y.dtype == dtype
    np.testing.assert_allclose(y, ref, **tol)
    np.testing.assert_allclose(K.depthwise_forward_xp(x, w, *s, pads), y, **tol)
    np.testing.assert_allclose(F.depthwise_conv2d(Tensor(x), Tensor(w), stride, padding).data, ref, **tol)
    # backward: the adjoint of forward, <y(x), g> = <x, dx(g)> and <y(w), g> = <w, dw(g)>
    g = rng.standard_normal(y.shape).astype(dtype)
    dx, dw = K.depthwise_backward(g, x, w, *s, pads)
    dx2, dw2 = K.depthwise_backward_xp(g, x, w, *s, pads)
    np.testing.assert_allclose(dx, dx2, **tol)
    np.testing.assert_allclose(dw, dw2, **tol)
    assert np.vdot(ref, g) == pytest.approx(np.vdot(x, dx), rel=1e-4 if dtype == np.float32 else 1e-11)
    assert np.vdot(ref, g) == pytest.approx(np.vdot(w, dw), rel=1e-4 if dtype == np.float32 else 1e-11)
    none_dx, only_dw = K.depthwise_backward(g, x, w, *s, pads, need_dx=False)
    assert none_dx is None and np.array_equal(only_dw, dw)


def test_same_padding_of_depthwise_puts_the_extra_cell_bottom_right():
    # 6x6, 3x3, stride 2, 'same': total padding 1, all of it at the bottom and right (Keras/TF)
    x = np.arange(36.0).reshape(1, 6, 6, 1)
    w = np.zeros((3, 3, 1, 1))
    w[0, 0] = 1                                  # picks the window's top-left cell
    y = F.depthwise_conv2d(Tensor(x), Tensor(w), 2, "same").data
    np.testing.assert_array_equal(y[0, :, :, 0], x[0, ::2, ::2, 0])


def test_depthwise_layer_as_keras():
    layer = nn.DepthwiseConv2D(3, strides=2, padding="same", depth_multiplier=2, activation="relu", name="dw")
    x = Tensor(np.random.default_rng(5).standard_normal((2, 6, 6, 3)).astype(np.float32))
    y = layer(x)
    assert layer.kernel.shape == (3, 3, 3, 2) and layer.bias.shape == (6,) and y.shape == (2, 3, 3, 6)
    assert layer.output_shape((None, 6, 6, 3)) == (None, 3, 3, 6)
    layer.bias.data[:] = np.arange(6)
    ref = depthwise_conv2d_reference(x.data, layer.kernel.data, (2, 2), (0, 1, 0, 1)) + np.arange(6)
    np.testing.assert_allclose(layer(x).data, np.maximum(ref, 0), rtol=1e-5, atol=1e-6)
    with pytest.raises(ShapeError, match="depthwise_conv2d"):
        F.depthwise_conv2d(x, np.zeros((3, 3, 2, 1)))


# ---------------------------------------------------------------- padding, ReLU6, Add, Concatenate

@pytest.mark.parametrize("padding,pads", [(3, (3, 3, 3, 3)), ((1, 2), (1, 1, 2, 2)),
                                          (((0, 1), (0, 1)), (0, 1, 0, 1)), (((2, 0), (1, 3)), (2, 0, 1, 3))])
def test_zero_padding2d(padding, pads):
    x = np.random.default_rng(6).standard_normal((2, 3, 4, 2))
    layer = nn.ZeroPadding2D(padding)
    y = layer(Tensor(x)).data
    np.testing.assert_array_equal(y, np.pad(x, ((0, 0), pads[:2], pads[2:], (0, 0))))
    assert layer.output_shape((None, 3, 4, 2)) == (None, *y.shape[1:])
    with pytest.raises(ValueError):
        nn.ZeroPadding2D((1, -1))


def test_relu_with_max_value_is_relu6():
    x = Tensor(np.array([-2.0, 0.0, 0.5, 5.9, 6.0, 7.5, np.nan]))
    expected = [0, 0, 0.5, 5.9, 6, 6, np.nan]
    np.testing.assert_array_equal(nn.ReLU(6.0)(x).data, expected)
    np.testing.assert_array_equal(F.relu6(x).data, expected)
    np.testing.assert_array_equal(nn.ReLU()(x).data, [0, 0, 0.5, 5.9, 6, 7.5, np.nan])
    x = Tensor(np.array([-1.0, 3.0, 7.0]), requires_grad=True)
    F.relu6(x).sum().backward()
    np.testing.assert_array_equal(x.grad, [0, 1, 0])
    with pytest.raises(ValueError):
        nn.ReLU(0)


def _bn_layer(rng, channels, **kwargs):
    bn = nn.BatchNormalization(epsilon=1e-3, **kwargs)
    bn.build(channels)
    bn.gamma.data[:] = rng.uniform(0.5, 2, channels)
    bn.beta.data[:] = rng.standard_normal(channels)
    bn.moving_mean.data[:] = rng.standard_normal(channels)
    bn.moving_variance.data[:] = rng.uniform(0.5, 2, channels)
    return bn.eval()


@pytest.mark.parametrize("axis", [-1, 1])
def test_inplace_layers_overwrite_their_input_only_when_no_graph_is_recorded(axis):
    """BatchNormalization (inference), ReLU, ReLU6 and Add with inplace=True: the numbers of the
    ordinary layers, written into the input's array under no_grad or for a frozen layer on an
    input without gradient; while a graph is recorded nothing is overwritten and the gradients
    are those of the ordinary layers."""
    rng = np.random.default_rng(13)
    x = (rng.standard_normal((2, 6, 5, 4)) * 4).astype(np.float32)
    channels = x.shape[axis]
    bn = _bn_layer(np.random.default_rng(1), channels, axis=axis)
    bn_inplace = _bn_layer(np.random.default_rng(1), channels, axis=axis, inplace=True)
    pairs = [(bn, bn_inplace), (nn.ReLU(), nn.ReLU(inplace=True)), (nn.ReLU(6.0), nn.ReLU(6.0, inplace=True))]
    for plain, inplace in pairs:
        expected = plain(Tensor(x)).data
        np.testing.assert_array_equal(expected, plain(Tensor(x)).data)
        with no_grad():
            a = Tensor(x.copy())
            y = inplace(a)
        assert y.data is a.data
        np.testing.assert_array_equal(y.data, expected)
        # a graph is recorded: a new array and the same gradients
        for layer in (plain, inplace):
            layer.unfreeze()
        a, b = Tensor(x.copy(), requires_grad=True), Tensor(x.copy(), requires_grad=True)
        y_plain, y_inplace = plain(a), inplace(b)
        assert y_inplace.data is not b.data
        np.testing.assert_array_equal(b.data, x)
        np.testing.assert_array_equal(y_inplace.data, y_plain.data)
        (y_plain * y_plain).sum().backward()
        (y_inplace * y_inplace).sum().backward()
        np.testing.assert_array_equal(b.grad, a.grad)
        for p, q in zip(plain.parameters(), inplace.parameters()):
            np.testing.assert_array_equal(q.grad, p.grad)
        # frozen, on an input without gradient: in place again
        inplace.freeze()
        a = Tensor(x.copy())
        assert inplace(a).data is a.data
        np.testing.assert_array_equal(a.data, expected)
    # Add: the sum in the second input's array, Keras' order of additions
    s, t, u = (Tensor(rng.standard_normal((2, 3, 3, 4)).astype(np.float32)) for _ in range(3))
    expected = ((s.data + t.data) + u.data).copy()
    with no_grad():
        t_data = t.data
        y = nn.Add(inplace=True)([s, t, u])
    assert y.data is t_data
    np.testing.assert_array_equal(y.data, expected)
    a, b = Tensor(s.data.copy(), requires_grad=True), Tensor(u.data.copy(), requires_grad=True)
    y = nn.Add(inplace=True)([a, b])
    assert y.data is not b.data and y.data is not a.data
    y.sum().backward()
    np.testing.assert_array_equal(b.grad, np.ones_like(b.data))


def test_inplace_ops_leave_inputs_they_cannot_take():
    """inplace=True falls back to a new array for inputs that cannot hold the result: a
    non-contiguous view, and for add a broadcast or a dtype change."""
    x = np.arange(-12, 12, dtype=np.float32).reshape(2, 3, 4)
    view = Tensor(x[:, ::-1])
    with no_grad():
        y = F.relu(view, inplace=True)
        assert y.data is not view.data
        np.testing.assert_array_equal(y.data, np.maximum(x[:, ::-1], 0))
        a, b = Tensor(np.ones((2, 3, 4), np.float32)), Tensor(np.ones(4, np.float32))
        assert add(a, b, inplace=True).data is not b.data
        c = Tensor(np.ones((2, 3, 4), np.float64))
        for p, q in ((a, c), (c, a)):
            y = add(p, q, inplace=True)
            assert y.data is not q.data and y.dtype == np.float64
        np.testing.assert_array_equal(c.data, 1)
    np.testing.assert_array_equal(x, np.arange(-12, 12, dtype=np.float32).reshape(2, 3, 4))


def test_add_and_concatenate_on_lists():
    rng = np.random.default_rng(7)
    a, b, c = (Tensor(rng.standard_normal((2, 3, 3, k)), requires_grad=True) for k in (4, 4, 2))
    y = nn.Add(name="block_2_add")([a, b])
    np.testing.assert_array_equal(y.data, a.data + b.data)
    z = nn.Concatenate(axis=3, name="mixed0")([a, b, c])
    np.testing.assert_array_equal(z.data, np.concatenate([a.data, b.data, c.data], axis=3))
    (y.sum() + (z * z).sum()).backward()
    np.testing.assert_allclose(c.grad, 2 * c.data)
    np.testing.assert_allclose(a.grad, 1 + 2 * a.data)
    assert nn.Concatenate().output_shape([(None, 3, 3, 4), (None, 3, 3, 2)]) == (None, 3, 3, 6)
    assert nn.Add().output_shape([(None, 3, 3, 4), (None, 3, 3, 4)]) == (None, 3, 3, 4)
    with pytest.raises(ShapeError):
        nn.Add()(a)
    with pytest.raises(ShapeError):
        nn.Add().output_shape([(None, 3, 3, 4), (None, 3, 3, 2)])


# ---------------------------------------------------------------- 1×1 convolutions as a plain matrix product

@pytest.mark.parametrize("stride,relu,bias", [(1, False, True), (1, True, True), (2, False, False), (2, True, True),
                                              ((1, 2), False, True)])
def test_pointwise_conv_equals_the_im2col_path(stride, relu, bias, monkeypatch):
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 7, 6, 5)).astype(np.float32)
    w = rng.standard_normal((1, 1, 5, 4)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32) if bias else None
    g = None

    def run():
        xt, wt = Tensor(x, requires_grad=True), Tensor(w, requires_grad=True)
        bt = Tensor(b, requires_grad=True) if bias else None
        y = F.conv2d(xt, wt, bt, stride, activation="relu" if relu else None)
        y.backward(g if g is not None else np.ones(y.shape, np.float32))
        return [y.data, xt.grad, wt.grad] + ([bt.grad] if bias else [])

    g = rng.standard_normal(F.conv2d(Tensor(x), Tensor(w), None, stride).shape).astype(np.float32)
    calls = []
    original = Conv2DFunction._pointwise_forward
    monkeypatch.setattr(Conv2DFunction, "_pointwise_forward", lambda self, *a: calls.append(1) or original(self, *a))
    fast = run()
    assert calls                                  # the matrix-product path ran
    monkeypatch.setattr(Conv2DFunction, "_pointwise", lambda self, w: False)
    slow = run()
    for a, r in zip(fast, slow, strict=True):
        assert a.shape == r.shape and a.dtype == r.dtype
        np.testing.assert_allclose(a, r, rtol=2e-6, atol=2e-6 * np.abs(r).max())


def test_padded_1x1_conv_still_uses_im2col(monkeypatch):
    monkeypatch.setattr(Conv2DFunction, "_pointwise_forward", lambda *a: pytest.fail("padded 1x1 took the GEMM"))
    x = np.ones((1, 3, 3, 2), np.float32)
    y = F.conv2d(Tensor(x), Tensor(np.ones((1, 1, 2, 1), np.float32)), padding=((1, 0), (0, 0)))
    assert y.shape == (1, 4, 3, 1) and y.data[0, 0].sum() == 0


# ---------------------------------------------------------------- the pooling windows of these models

def pool_loops(x, size, stride, pads, reduce):
    """reduce(real cells of each window), by loops: the padded cells are not part of the window."""
    N, H, W, C = x.shape
    top, bottom, left, right = pads
    Ho, Wo = (H + top + bottom - size) // stride + 1, (W + left + right - size) // stride + 1
    y = np.zeros((N, Ho, Wo, C))
    for n, i, j, c in itertools.product(range(N), range(Ho), range(Wo), range(C)):
        cells = [x[n, i * stride + a - top, j * stride + b - left, c] for a in range(size) for b in range(size)
                 if 0 <= i * stride + a - top < H and 0 <= j * stride + b - left < W]
        y[n, i, j, c] = reduce(cells)
    return y


def test_inception_average_pool_3x3_stride_1_same_counts_real_cells():
    x = np.random.default_rng(9).standard_normal((2, 5, 6, 3))
    y = nn.AvgPool2D(3, strides=1, padding="same")(Tensor(x)).data
    np.testing.assert_allclose(y, pool_loops(x, 3, 1, (1, 1, 1, 1), np.mean), rtol=1e-12, atol=1e-12)
    ones = nn.AvgPool2D(3, strides=1, padding="same")(Tensor(np.ones((1, 3, 3, 1)))).data
    np.testing.assert_array_equal(ones, 1.0)      # a corner window has 4 real cells, averaged as 4


@pytest.mark.parametrize("hw", [(7, 7), (8, 9)])
def test_max_pool_3x3_stride_2_valid(hw):
    x = np.random.default_rng(10).standard_normal((2, *hw, 3))
    y = nn.MaxPool2D(3, strides=2)(Tensor(x)).data
    np.testing.assert_array_equal(y, pool_loops(x, 3, 2, (0, 0, 0, 0), np.max))
    assert nn.MaxPool2D(3, strides=2).output_shape((None, *hw, 3)) == (None, *y.shape[1:])


def test_feature_cache_key_follows_the_moving_statistics():
    from minitl.runs import features_key
    base = nn.Sequential([nn.Conv2D(2, 1), nn.BatchNormalization()], input_shape=(3, 3, 1))
    key = features_key(base, {})
    base.layers()[1].moving_variance.data[0] += 1
    assert features_key(base, {}) != key
