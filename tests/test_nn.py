"""Layers and modules: parameters, modes, freezing, state dicts, building, initialisers,
activations, summary; the dense, flatten and dropout functions."""
import math

import numpy as np
import pytest

import minitl.functional as F
from minitl import ShapeError, Tensor, WeightsError, gradcheck, nn
from minitl.optim import SGD
from minitl.tensor import _topological_order

# tests here reseed minitl.nn's generator; later test modules get it back as it was
pytestmark = pytest.mark.usefixtures("keep_global_rng")


def small_model(input_shape=(8, 8, 3)):
    return nn.Sequential([
        nn.Conv2D(4, 3, padding="same", activation="relu", name="conv_a"),
        nn.MaxPool2D(2, name="pool_a"),
        nn.Conv2D(6, 3, padding="valid", use_bias=False, name="conv_b"),
        nn.Flatten(name="flat"),
        nn.Dropout(0.5, name="drop"),
        nn.Dense(5, name="head"),
    ], name="small", input_shape=input_shape)


def x_batch(shape=(2, 8, 8, 3), seed=0):
    return Tensor(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))


# ---- dense, flatten and dropout as functions ----------------------------------------

@pytest.mark.parametrize("bias", [True, False])
def test_dense_gradient(bias, rng):
    inputs = [Tensor(rng.standard_normal((3, 5)), requires_grad=True),
              Tensor(rng.standard_normal((5, 4)), requires_grad=True)]
    if bias:
        inputs.append(Tensor(rng.standard_normal(4), requires_grad=True))
    assert gradcheck(F.dense, *inputs) < 1e-6
    y = F.dense(*inputs).data
    ref = inputs[0].data @ inputs[1].data + (inputs[2].data if bias else 0)
    np.testing.assert_allclose(y, ref, rtol=1e-12)


def test_dense_shape_error():
    with pytest.raises(ShapeError, match=r"dense: input has 6 features \(shape \(2, 6\)\).*"
                                         r"expects 5 \(kernel shape \(5, 4\)\)"):
        F.dense(np.ones((2, 6), np.float32), np.ones((5, 4), np.float32))


def test_flatten_is_hwc_row_major():
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    y = F.flatten(Tensor(x)).data
    assert y.shape == (2, 60)
    for n in range(2):
        for h in range(3):
            for w in range(4):
                for c in range(5):
                    assert y[n, (h * 4 + w) * 5 + c] == x[n, h, w, c]


def test_flatten_gradient(rng):
    assert gradcheck(F.flatten, Tensor(rng.standard_normal((2, 3, 2, 2)), requires_grad=True)) < 1e-6


def test_dropout_scales_survivors_and_keeps_the_mean(rng):
    rate = 0.3
    x = rng.uniform(1, 2, (200, 100)).astype(np.float32)
    y = F.dropout(Tensor(x), rate, training=True, rng=np.random.default_rng(1)).data
    kept = y != 0
    np.testing.assert_allclose(y[kept], x[kept] / (1 - rate), rtol=1e-6)
    assert abs(1 - kept.mean() - rate) < 0.02                 # 20,000 draws: std ≈ 0.003
    assert abs(y.mean() / x.mean() - 1) < 0.02


def test_dropout_gradient_is_the_scaled_mask(rng):
    x = Tensor(rng.standard_normal((50, 40)), requires_grad=True)
    y = F.dropout(x, 0.5, training=True, rng=np.random.default_rng(2))
    y.sum().backward()
    expected = np.where(y.data != 0, 2.0, 0.0)
    np.testing.assert_array_equal(x.grad, expected)


def test_dropout_identity_when_not_training(rng):
    x = Tensor(rng.standard_normal((4, 5)).astype(np.float32))
    np.testing.assert_array_equal(F.dropout(x, 0.5, training=False).data, x.data)
    np.testing.assert_array_equal(F.dropout(x, 0.0, training=True).data, x.data)
    with pytest.raises(ValueError, match=r"dropout rate must be in \[0, 1\)"):
        F.dropout(x, 1.0, training=True)


# ---- traversal -----------------------------------------------------------------------

def test_named_parameters_order_and_names():
    m = small_model()
    names = [k for k, _ in m.named_parameters()]
    assert names == ["conv_a.kernel", "conv_a.bias", "conv_b.kernel", "head.kernel", "head.bias"]
    shapes = [p.shape for _, p in m.named_parameters()]
    # conv_b: 8x8 -> pool 4x4 -> valid 3x3 conv 2x2x6 = 24 features
    assert shapes == [(3, 3, 3, 4), (4,), (3, 3, 4, 6), (24, 5), (5,)]
    params = m.parameters()
    assert [id(p) for p in params] == [id(p) for _, p in m.named_parameters()]
    assert all(isinstance(p, nn.Parameter) and p.requires_grad for p in params)
    assert m.count_params() == 3 * 3 * 3 * 4 + 4 + 3 * 3 * 4 * 6 + 24 * 5 + 5


def test_nested_module_names_are_prefixed():
    inner = nn.Sequential([nn.Dense(3, name="d", input_dim=2)], name="inner")
    outer = nn.Sequential([inner, nn.Dense(1, name="out")], name="outer", input_shape=(2,))
    assert [k for k, _ in outer.named_parameters()] == ["inner.d.kernel", "inner.d.bias", "out.kernel", "out.bias"]
    assert [layer.name for layer in outer.layers()] == ["d", "out"]


def test_layers_and_get_layer():
    m = small_model()
    assert [layer.name for layer in m.layers()] == ["conv_a", "pool_a", "conv_b", "flat", "drop", "head"]
    assert m.get_layer("conv_b") is m[2]
    assert m.get_layer("small") is m
    with pytest.raises(KeyError, match="no layer named 'conv_c'.*conv_a"):
        m.get_layer("conv_c")


def test_train_and_eval_propagate():
    m = small_model()
    assert all(layer.training for layer in m.modules())
    assert m.eval() is m
    assert not any(layer.training for layer in m.modules())
    m.train()
    assert all(layer.training for layer in m.modules())


def test_freeze_and_unfreeze_and_sgd_skips_frozen():
    m = small_model()
    m.get_layer("conv_a").freeze()
    assert [p.requires_grad for p in m.parameters()] == [False, False, True, True, True]
    assert len(m.trainable_parameters()) == 3
    before = m.state_dict()
    loss = F.softmax_cross_entropy(m(x_batch()), np.array([0, 3]))
    loss.backward()
    assert m.get_layer("conv_a").kernel.grad is None
    assert m.get_layer("head").kernel.grad is not None
    SGD(m.parameters(), lr=0.1).step()
    after = m.state_dict()
    for k in before:
        changed = not np.array_equal(before[k], after[k])
        assert changed == (not k.startswith("conv_a")), k
    m.unfreeze()
    assert all(p.requires_grad for p in m.parameters())


def test_backward_stops_at_the_lowest_trainable_layer():
    m = small_model()
    m.get_layer("conv_a").freeze()
    x = x_batch()
    below = m.get_layer("pool_a")(m.get_layer("conv_a")(x))
    assert not below.requires_grad and below.is_leaf      # no graph is recorded under conv_b
    loss = F.softmax_cross_entropy(m(x), np.array([0, 3]))
    walked = _topological_order(loss._graph_node())
    assert any(node is m.get_layer("conv_b").kernel for node in walked)
    assert not any(node is p for node in walked for p in m.get_layer("conv_a").parameters())


# ---- state dicts -----------------------------------------------------------------------

def test_state_dict_round_trip():
    nn.manual_seed(1)
    a = small_model().eval()
    nn.manual_seed(2)
    b = small_model().eval()
    x = x_batch()
    assert not np.allclose(a(x).data, b(x).data)
    state = a.state_dict()
    assert list(state) == [k for k, _ in a.named_parameters()]
    assert b.load_state_dict(state) == ([], [])
    np.testing.assert_array_equal(a(x).data, b(x).data)
    state["head.bias"][:] = 7                 # a copy: the model does not change
    assert not (a.get_layer("head").bias.data == 7).any()


@pytest.mark.parametrize("change,pattern", [
    (lambda s: s.pop("conv_b.kernel"), r"missing \['conv_b.kernel'\]"),
    (lambda s: s.__setitem__("extra.kernel", np.zeros(3, np.float32)), r"unexpected \['extra.kernel'\]"),
    (lambda s: s.__setitem__("head.kernel", np.zeros((25, 5), np.float32)),
     r"head.kernel has shape \(25, 5\), the model expects \(24, 5\)"),
])
def test_load_state_dict_errors_change_nothing(change, pattern):
    nn.manual_seed(3)
    m = small_model()
    original = m.state_dict()
    state = {k: np.full_like(v, 0.5) for k, v in original.items()}
    change(state)
    with pytest.raises(WeightsError, match=pattern):
        m.load_state_dict(state)
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v, original[k])


def test_load_state_dict_not_strict_reports_and_loads_the_rest():
    m = small_model()
    state = {k: np.full_like(v, 0.5) for k, v in m.state_dict().items()}
    del state["head.bias"]
    state["other"] = np.zeros(2, np.float32)
    assert m.load_state_dict(state, strict=False) == (["head.bias"], ["other"])
    assert (m.get_layer("conv_a").kernel.data == 0.5).all()
    assert (m.get_layer("head").bias.data == 0).all()


# ---- building ------------------------------------------------------------------------

def test_layers_infer_input_channels_at_first_call():
    conv = nn.Conv2D(4, 3, padding="same")
    dense = nn.Dense(2)
    assert not conv.built and not dense.built and conv.parameters() == []
    y = conv(x_batch((1, 5, 5, 7)))
    assert conv.built and conv.kernel.shape == (3, 3, 7, 4) and conv.bias.shape == (4,)
    assert y.shape == (1, 5, 5, 4)
    z = dense(F.flatten(y))
    assert dense.kernel.shape == (100, 2)
    assert z.shape == (1, 2)


def test_sequential_input_shape_builds_every_layer():
    m = small_model(input_shape=(12, 10, 2))
    assert all(layer.built for layer in m.layers())
    assert m.get_layer("conv_a").kernel.shape == (3, 3, 2, 4)
    # 12x10 -> pool 6x5 -> valid 3x3: 4x3x6 = 72 features
    assert m.get_layer("head").kernel.shape == (72, 5)
    assert m.build((12, 10, 2)) == (None, 5)
    assert m.eval()(x_batch((3, 12, 10, 2))).shape == (3, 5)


def test_lazy_layers_build_from_plain_arrays():
    dense, conv = nn.Dense(2), nn.Conv2D(3, name="c")
    assert dense(np.ones((4, 5), np.float32)).shape == (4, 2) and dense.kernel.device == "cpu"
    assert conv(np.ones((1, 4, 4, 2), np.float32)).shape == (1, 2, 2, 3) and conv.bias.device == "cpu"


def test_conv_layer_rejects_a_flat_input():
    with pytest.raises(ShapeError, match=r"layer c: input must be \(N, H, W, C\), got shape \(2, 5\)"):
        nn.Conv2D(3, name="c")(x_batch((2, 5)))


def test_duplicate_layer_names_are_rejected():
    with pytest.raises(ValueError, match="two layers are named 'dup'"):
        nn.Sequential([nn.Dense(2, name="dup"), nn.Dense(2, name="dup")])


def test_layers_named_by_default_get_keras_suffixes_and_a_name_given_twice_is_rejected():
    class MLP(nn.Module):
        def __init__(self, names=(None, None, None)):
            super().__init__()
            self.fc1 = nn.Dense(3, input_dim=2, name=names[0])
            self.fc2 = nn.Dense(3, input_dim=3, name=names[1])
            self.fc3 = nn.Dense(1, input_dim=3, name=names[2])

    m = MLP()
    assert [layer.name for layer in (m.fc1, m.fc2, m.fc3)] == ["dense", "dense_1", "dense_2"]
    assert len(m.state_dict()) == 6
    seq = nn.Sequential([nn.Dense(2), nn.ReLU(), nn.Dense(2), nn.Sequential([nn.Dense(1)]), nn.Sequential()])
    assert [layer.name for layer in seq] == ["dense", "re_lu", "dense_1", "sequential", "sequential_1"]
    assert seq[3][0].name == "dense_2"  # unique across the model, nested layers too
    with pytest.raises(ValueError, match=r"mlp: two layers are named 'fc' \(the second in fc2\)"):
        MLP(("fc", "fc", "out"))
    m = MLP(("fc1", "fc2", "out"))
    assert list(m.state_dict())[:2] == ["fc1.kernel", "fc1.bias"]
    m.fc1 = nn.Dense(3, input_dim=2, name="fc1")  # replacing a layer is fine


def test_nested_default_named_layers_save_and_load_by_name(tmp_path):
    from minitl import io
    nn.manual_seed(0)
    model = nn.Sequential([nn.Sequential([nn.Dense(4, input_dim=3), nn.Dense(4)]), nn.Sequential([nn.Dense(2)])],
                          input_shape=(3,))
    assert [m.name for m in model.layers()] == ["dense", "dense_1", "dense_2"]
    io.save_weights(model, tmp_path / "w.h5")
    nn.manual_seed(1)
    other = nn.Sequential([nn.Sequential([nn.Dense(4, input_dim=3), nn.Dense(4)]), nn.Sequential([nn.Dense(2)])],
                          input_shape=(3,))
    io.load_weights(other, tmp_path / "w.h5")
    for (k, a), b in zip(model.state_dict().items(), other.state_dict().values()):
        np.testing.assert_array_equal(a, b, err_msg=k)


def test_load_state_dict_takes_tensors_and_lists():
    m = nn.Sequential([nn.Dense(2, input_dim=3, name="fc")])
    kernel = np.arange(6.0).reshape(3, 2)
    m.load_state_dict({"fc.kernel": Tensor(kernel), "fc.bias": [1.0, 2.0]})
    np.testing.assert_array_equal(m.get_layer("fc").kernel.data, kernel)
    assert m.get_layer("fc").kernel.dtype == np.float32
    np.testing.assert_array_equal(m.get_layer("fc").bias.data, [1.0, 2.0])


def test_module_repr_shows_layers_and_weight_shapes():
    m = nn.Sequential([nn.Dense(4, input_dim=5, name="fc1"), nn.ReLU(name="act")], name="mlp")
    assert repr(m) == ("Sequential(name='mlp')\n"
                       "  Dense(name='fc1', kernel (5, 4), bias (4,))\n"
                       "  ReLU(name='act')")


# ---- initialisers ----------------------------------------------------------------------

def test_he_normal_std():
    nn.manual_seed(0)
    conv = nn.Conv2D(256, 3, kernel_initializer="he_normal", input_channels=128)
    w = conv.kernel.data
    fan_in = 3 * 3 * 128
    std = math.sqrt(2 / fan_in)
    assert abs(w.std() / std - 1) < 0.03
    assert abs(w.mean()) < 0.01 * std
    # truncated at two standard deviations of the underlying normal
    assert np.abs(w).max() <= 2 * std / 0.87962566103423978 * (1 + 1e-6)
    assert (conv.bias.data == 0).all()


def test_he_normal_is_keras_truncated_normal_with_variance_2_over_fan_in():
    # the standard deviation of N(0, 1) truncated to [-2, 2], from the normal's density and mass
    density, mass = math.exp(-2) / math.sqrt(2 * math.pi), math.erf(2 / math.sqrt(2))
    c = math.sqrt(1 - 2 * 2 * density / mass)
    assert abs(c - 0.87962566103423978) < 1e-15
    fan_in = 50
    sigma = math.sqrt(2 / fan_in)
    w = nn.he_normal((1_000_000,), fan_in, np.random.default_rng(1)).astype(np.float64)
    bound = 2 * sigma / c                              # two standard deviations of N(0, (σ/c)²)
    assert np.abs(w).max() <= bound * (1 + 1e-6) and np.abs(w).max() > 0.999 * bound
    assert abs(w.var() / sigma ** 2 - 1) < 0.01        # the variance is 2 / fan_in (0.77 without 1/c)
    assert abs(w.mean()) < 0.005 * sigma


def test_glorot_uniform_bounds():
    nn.manual_seed(0)
    dense = nn.Dense(300, input_dim=500)
    w = dense.kernel.data
    a = math.sqrt(6 / (500 + 300))
    assert np.abs(w).max() <= a
    assert w.max() > 0.99 * a and w.min() < -0.99 * a
    assert abs(w.var() / (a * a / 3) - 1) < 0.03
    conv = nn.Conv2D(16, 3, input_channels=8)
    bound = math.sqrt(6 / (9 * 8 + 9 * 16))
    assert np.abs(conv.kernel.data).max() <= bound and np.abs(conv.kernel.data).max() > 0.95 * bound


def test_manual_seed_gives_identical_weights():
    nn.manual_seed(42)
    a = small_model().state_dict()
    nn.manual_seed(42)
    b = small_model().state_dict()
    nn.manual_seed(43)
    c = small_model().state_dict()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["conv_a.kernel"], c["conv_a.kernel"])


# ---- activations and dropout ---------------------------------------------------------------

@pytest.mark.parametrize("name,fn", [
    ("relu", lambda z: np.maximum(z, 0)),
    ("sigmoid", lambda z: 1 / (1 + np.exp(-z))),
    ("tanh", np.tanh),
    ("softmax", lambda z: np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)),
    ("linear", lambda z: z),
    (None, lambda z: z),
])
def test_activation_by_name(name, fn):
    nn.manual_seed(0)
    x = x_batch((4, 6)).astype(np.float64)
    layer = nn.Dense(3, activation=name, input_dim=6)
    z = x.data @ layer.kernel.data + layer.bias.data
    np.testing.assert_allclose(layer(x).data, fn(z), rtol=1e-6, atol=1e-7)


def test_sigmoid_keeps_its_relative_precision_on_both_tails():
    x = np.array([-700.0, -100.0, -20.0, -1.0, 0.0, 1.0, 20.0, 100.0, 700.0])
    reference = np.array([1 / (1 + math.exp(-v)) for v in x])            # float64, fine for |x| <= 700
    slope = np.array([1 / (1 + math.exp(-v)) / (1 + math.exp(v)) for v in x])  # σ(x) σ(-x)
    xt = Tensor(x, requires_grad=True)
    y = F.sigmoid(xt)
    np.testing.assert_allclose(y.data, reference, rtol=1e-14)
    assert y.data[0] > 0                                              # σ(-700) = 9.86e-305, not 0
    y.sum().backward()
    np.testing.assert_allclose(xt.grad, slope, rtol=1e-14)
    x32 = Tensor(np.array([-80.0, 0.0, 80.0], np.float32))
    y32 = F.sigmoid(x32).data
    assert y32.dtype == np.float32
    np.testing.assert_allclose(y32, [math.exp(-80), 0.5, 1.0], rtol=1e-6)


def test_unknown_activation_is_a_clear_error():
    with pytest.raises(ValueError, match=r"unknown activation 'gelu'; use one of \[.*'relu'"):
        nn.Dense(3, activation="gelu")
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        nn.Conv2D(3, activation="swish")


def test_dropout_layer_train_and_eval():
    layer = nn.Dropout(0.5, seed=0)
    x = Tensor(np.ones((50, 40), np.float32))
    y = layer(x).data
    assert set(np.unique(y)) == {0.0, 2.0}
    assert 0.4 < (y == 0).mean() < 0.6
    layer.eval()
    np.testing.assert_array_equal(layer(x).data, x.data)
    m = small_model().eval()
    x = x_batch()
    np.testing.assert_array_equal(m(x).data, m(x).data)     # no dropout in eval mode
    m.train()
    assert not np.array_equal(m(x).data, m(x).data)


# ---- summary ----------------------------------------------------------------------------

def test_summary_lists_layers_shapes_and_totals():
    m = small_model()
    text = m.summary(print_fn=lambda s: None)
    for name, shape in [("conv_a", "(None, 8, 8, 4)"), ("pool_a", "(None, 4, 4, 4)"),
                        ("conv_b", "(None, 2, 2, 6)"), ("flat", "(None, 24)"), ("head", "(None, 5)")]:
        line = next(row for row in text.splitlines() if row.startswith(name + " "))
        assert shape in line
    total = m.count_params()
    assert f"Total params: {total:,}" in text
    assert f"Trainable params: {total:,}" in text and "Non-trainable params: 0" in text
    m.get_layer("conv_b").freeze()
    text = m.summary(print_fn=lambda s: None)
    assert f"Trainable params: {total - 216:,}" in text and "Non-trainable params: 216" in text


def test_summary_needs_an_input_shape():
    m = nn.Sequential([nn.Dense(2)])
    with pytest.raises(ShapeError, match="summary\\(\\) needs an input shape"):
        m.summary(print_fn=lambda s: None)
    assert "(None, 2)" in m.summary(input_shape=(3,), print_fn=lambda s: None)


def test_a_slice_of_a_sequential_is_a_sequential_of_the_same_layers():
    nn.manual_seed(0)
    model = nn.Sequential([nn.Dense(4, input_dim=3, activation="relu", name="a"), nn.Dense(2, name="b"),
                           nn.Dense(1, name="c")], input_shape=(3,))
    first = model[:2]
    assert isinstance(first, nn.Sequential) and [layer.name for layer in first] == ["a", "b"]
    assert first[0] is model[0] and model[-1].name == "c"
    x = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    np.testing.assert_array_equal(model[2](first(Tensor(x))).data, model(Tensor(x)).data)
