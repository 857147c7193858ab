"""The three small Keras models of tests/data/backbones, rebuilt from minitl.nn layers
(tests/backbone_minis.py), loaded from each of Keras' three layouts, against Keras' own
outputs, moving statistics, loss and gradients in both BatchNormalization modes."""
import json
from pathlib import Path

import numpy as np
import pytest
from backbone_minis import ENTRIES, build

from minitl import Tensor
from minitl.errors import WeightsError
from minitl.io import _weight_name, load_weights, read_keras_weights, save_weights

DATA = Path(__file__).parent / "data" / "backbones"
MANIFEST = json.loads((DATA / "fixtures_manifest.json").read_text())["fixtures"]
LAYOUTS = ("keras2.h5", "keras3_legacy.h5", "weights.h5")


def close(got, want, what, rel=2e-5, scale=None):
    """Equal to float32 round-off: |got − want| ≤ rel · scale elementwise, scale = max|want| unless given."""
    want = np.asarray(want, np.float64)
    scale = np.abs(want).max() if scale is None else scale
    np.testing.assert_allclose(got, want, rtol=rel, atol=rel * max(scale, 1e-30), err_msg=what)


def keras_weight_name(param, i):
    """Keras 3's name of a weight (the npz gradient keys): DepthwiseConv2D's kernel is 'kernel'."""
    name = _weight_name(param, i)
    return "kernel" if name == "depthwise_kernel" else name


@pytest.mark.parametrize("fixture", ENTRIES)
def test_layers_and_weights_are_keras_ones_in_keras_order(fixture):
    model = build(fixture)
    keras_layers = [r for r in MANIFEST[fixture]["layers"] if r["class"] != "InputLayer"]
    assert [layer.name for layer in model.layers()] == [r["name"] for r in keras_layers]
    for layer, rec in zip(model.layers(), keras_layers):
        names = [_weight_name(p, i) for i, p in enumerate(layer.weights)]
        keras_names = [{"kernel": "depthwise_kernel"}.get(w, w) if rec["class"] == "DepthwiseConv2D" else w
                       for w, _ in rec["weights"]]
        assert names == keras_names, layer.name
        assert [list(p.shape) for p in layer.weights] == [s for _, s in rec["weights"]], layer.name
        assert sum(p.requires_grad for p in layer.weights) == rec["trainable_weights"], layer.name
    assert model.count_params() == MANIFEST[fixture]["count_params"]


def run(model, data, mode):
    """Taps, loss and gradients of one call in ``mode`` ('inference' or 'training')."""
    model.train() if mode == "training" else model.eval()
    model.zero_grad()
    model.taps = {}
    y = model(Tensor(data["x"]))
    loss = (y * Tensor(data["loss_weights"])).sum()
    loss.backward()
    taps, model.taps = model.taps, None
    return taps, loss


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("fixture", ENTRIES)
def test_outputs_statistics_and_gradients_match_keras_in_both_modes(fixture, layout):
    data = np.load(DATA / f"{fixture}.npz")
    for by_name in (True, False):
        model = build(fixture)
        report = load_weights(model, DATA / f"{fixture}.{layout}", by_name=by_name)
        assert report.untouched == [] and len(report.loaded) == sum(1 for m in model.layers() if m.weights)
        for mode in ("inference", "training"):
            taps, loss = run(model, data, mode)
            outputs = [k.split(".", 1)[1] for k in data.files
                       if k.startswith(mode + ".") and k.count(".") == 1 and k != f"{mode}.loss"]
            assert outputs and MANIFEST[fixture]["output"] in outputs
            for name in outputs:
                close(taps[name].data, data[f"{mode}.{name}"], f"{mode} output of {name} ({layout})")
            close(loss.data, data[f"{mode}.loss"], f"{mode} loss", rel=1e-4)
            checked = 0
            for layer in model.layers():
                keys = {i: f"{mode}.grad.{layer.name}.{keras_weight_name(p, i)}"
                        for i, p in enumerate(layer.weights) if p.requires_grad}
                # a layer's gradients on one scale: the bias of a conv before a training-mode BN
                # has a zero gradient in exact arithmetic, so Keras' value is round-off of the kernel's
                scale = max((np.abs(data[k]).max() for k in keys.values()), default=0.0)
                for i, key in keys.items():
                    close(layer.weights[i].grad, data[key], key, rel=1e-4, scale=scale)
                    checked += 1
            assert checked == sum(1 for k in data.files if k.startswith(f"{mode}.grad."))
            if mode == "training":                   # one training-mode call moved the statistics once
                for layer in model.layers():
                    for stat in ("moving_mean", "moving_variance"):
                        if hasattr(layer, stat):
                            close(getattr(layer, stat).data, data[f"training.{stat}.{layer.name}"],
                                  f"{stat} of {layer.name}", rel=1e-6)


@pytest.mark.parametrize("fixture", ENTRIES)
def test_inference_mode_leaves_the_moving_statistics_and_a_frozen_model_runs_in_it(fixture):
    data = np.load(DATA / f"{fixture}.npz")
    model = build(fixture)
    load_weights(model, DATA / f"{fixture}.keras2.h5")
    before = model.state_dict()
    model.train().freeze()                        # trainable=False: inference mode, as Keras
    model.taps = {}
    y = model(Tensor(data["x"]))
    close(y.data, data[f"inference.{MANIFEST[fixture]['output']}"], "frozen model's output")
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)


@pytest.mark.parametrize("fixture", ENTRIES)
def test_save_weights_loads_back_bit_identically(fixture, tmp_path):
    data = np.load(DATA / f"{fixture}.npz")
    model = build(fixture)
    load_weights(model, DATA / f"{fixture}.weights.h5")
    path = tmp_path / f"{fixture}.h5"
    save_weights(model, path)
    entries = {e.name: e for e in read_keras_weights(path)}
    keras2 = {e.name: e for e in read_keras_weights(DATA / f"{fixture}.keras2.h5")}
    assert list(entries) == list(keras2)                              # Keras 2's layout, names and order
    for name, e in entries.items():
        assert e.weight_names == keras2[name].weight_names, name
        for a, b in zip(e.arrays, keras2[name].arrays, strict=True):
            assert a.dtype == b.dtype and np.array_equal(a, b), name
    again = build(fixture)
    load_weights(again, path)
    for (k, a), (k2, b) in zip(model.state_dict().items(), again.state_dict().items(), strict=True):
        assert k == k2 and np.array_equal(a, b), k
    model.eval(), again.eval()
    np.testing.assert_array_equal(model(Tensor(data["x"])).data, again(Tensor(data["x"])).data)


def test_a_batchnorm_without_gamma_refuses_a_file_with_gamma(tmp_path):
    """InceptionV3's BN has no gamma: a ResNet-style file (gamma, beta, ...) does not fit, and nothing loads."""
    model = build("inceptionmini_32")
    before = model.state_dict()
    path = tmp_path / "with_gamma.h5"
    layers = []
    for layer in model.layers():
        weights = [(_weight_name(p, i), p.data) for i, p in enumerate(layer.weights)]
        if layer.name == "batch_normalization_4":
            weights = [("gamma", np.ones(weights[0][1].shape, np.float32))] + weights
        layers.append((layer.name, weights))
    from minitl.io import write_keras_weights
    write_keras_weights(path, layers)
    with pytest.raises(WeightsError, match=r"batch_normalization_4.*model has 3 weights, the file has 4"):
        load_weights(model, path)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def test_beta_is_never_loaded_into_gamma(tmp_path):
    """center=False and scale=False BNs both have 3 weights of one shape: the names must agree."""
    from minitl import nn
    from minitl.io import write_keras_weights
    model = nn.Sequential([nn.BatchNormalization(center=False, name="bn")])
    model.build((2, 2, 3))
    path = tmp_path / "scale_false.h5"
    write_keras_weights(path, [("bn", [("beta", np.ones(3)), ("moving_mean", np.ones(3)),
                                       ("moving_variance", np.ones(3))])])
    with pytest.raises(WeightsError, match=r"layer 'bn'.*'bn/beta:0'.*expects 'gamma'"):
        load_weights(model, path)
    np.testing.assert_array_equal(model.get_layer("bn").gamma.data, 1.0)


def test_shape_errors_name_the_layer_and_the_shapes(tmp_path):
    model = build("mobilenetv2mini_32", input_shape=(32, 32, 3))
    path = tmp_path / "wide.h5"
    layers = []
    for layer in model.layers():
        weights = [(_weight_name(p, i), p.data) for i, p in enumerate(layer.weights)]
        if layer.name == "block_1_depthwise":
            weights = [("depthwise_kernel", np.zeros((3, 3, 12, 2), np.float32))]
        layers.append((layer.name, weights))
    from minitl.io import write_keras_weights
    write_keras_weights(path, layers)
    with pytest.raises(WeightsError, match=r"block_1_depthwise.*depthwise_kernel:0.*\(3, 3, 12, 1\).*\(3, 3, 12, 2\)"):
        load_weights(model, path)
