"""Keras HDF5 weights: reading the three layouts, writing, and model-level loading."""

import json
import shutil

import h5py
import numpy as np
import pytest
from keras_fixtures import CONV_NAMES, DATA, DENSE_NAMES, LAYOUTS, VARIANTS, file_arrays, fixture

from minitl.errors import WeightsError
from minitl.io import (
    KerasLayerWeights,
    keras_class_name,
    load_weights,
    read_keras_weights,
    save_weights,
    write_keras_weights,
)


def all_layer_names(variant):
    """Every layer name (weightless ones too), from the fixtures' manifest."""
    cases = json.loads((DATA / "keras_ref_mini_manifest.json").read_text())["cases"]
    return next(c["layer_names"] for c in cases if c["tag"] == variant)


def weighted_names(variant):
    return CONV_NAMES + (DENSE_NAMES if "_top_" in variant else [])


# ------------------------------------------------------------------ reading


@pytest.mark.parametrize("variant", VARIANTS)
def test_three_layouts_give_identical_arrays(variant):
    official, legacy, native = (read_keras_weights(fixture(variant, lay)) for lay in LAYOUTS)
    names = weighted_names(variant)
    assert [e.name for e in official] == names
    assert [e.name for e in legacy] == names
    assert [e.stored_name for e in native] == names
    for a, b, c in zip(official, legacy, native):
        assert len(a.arrays) == len(b.arrays) == len(c.arrays) == 2
        for x, y, z in zip(a.arrays, b.arrays, c.arrays):
            assert x.dtype == y.dtype == z.dtype == np.float32
            assert np.array_equal(x, y) and np.array_equal(x, z)


def test_layer_order_and_kernel_bias_order_come_from_the_file():
    # Keys are alphabetical (fc1, fc2, flatten, input_1, predictions) and
    # 'bias' < 'kernel'; the reader must follow layer_names and weight_names.
    entries = read_keras_weights(fixture("vgg16mini_top_64_c5", "keras3_legacy.h5"))
    assert [e.name for e in entries][-3:] == ["fc1", "fc2", "predictions"]
    conv = entries[0]
    assert conv.weight_names == ["block1_conv1/kernel", "block1_conv1/bias"]
    assert conv.arrays[0].shape == (3, 3, 3, 4) and conv.arrays[1].shape == (4,)
    fc1 = entries[13]
    assert fc1.arrays[0].shape == (128, 64) and fc1.arrays[1].shape == (64,)


def test_official_layout_uses_byte_strings_and_w_b_names():
    path = fixture("vgg16mini_notop_32", "official_like.h5")
    with h5py.File(path, "r") as f:
        assert f.attrs["layer_names"].dtype.kind == "S"
        assert f["block1_pool"].attrs["weight_names"].dtype == np.float64
    entries = read_keras_weights(path)
    assert entries[0].weight_names == ["block1_conv1_W_1:0", "block1_conv1_b_1:0"]
    assert all(isinstance(w, str) for e in entries for w in e.weight_names)
    assert all(e.class_name is None and not e.native for e in entries)


def test_native_names_sorted_by_numeric_suffix():
    entries = read_keras_weights(fixture("vgg16mini_top_64_c5", "weights.h5"))
    expected = ["conv2d"] + [f"conv2d_{k}" for k in range(1, 13)] + ["dense", "dense_1", "dense_2"]
    assert [e.name for e in entries] == expected
    assert [e.class_name for e in entries] == ["conv2d"] * 13 + ["dense"] * 3
    assert [e.index for e in entries] == list(range(13)) + [0, 1, 2]
    assert entries[10].stored_name == "block5_conv1"  # conv2d_10, not conv2d_2


def write_native(path, layers, names=None):
    """A small Keras 3 `.weights.h5`: layers = {key: [arrays]}."""
    with h5py.File(path, "w") as f:
        f.create_group("vars")
        g = f.create_group("layers")
        for key, arrays in layers.items():
            v = g.create_group(key).create_group("vars")
            if names:
                v.attrs["name"] = names[key]
            for i, a in enumerate(arrays):
                v.create_dataset(str(i), data=a)


def test_native_without_name_attribute(tmp_path):
    path = tmp_path / "m.weights.h5"
    layers = {
        "conv2d_10": [np.full((1,), 10.0)],
        "conv2d": [np.full((1,), 0.0)],
        "conv2d_2": [np.full((1,), 2.0)],
        "max_pooling2d": [],
        "dense": [np.zeros((2, 3)), np.ones(3)],
    }
    write_native(path, layers)
    entries = read_keras_weights(path)
    assert [e.name for e in entries] == ["conv2d", "conv2d_2", "conv2d_10", "dense"]
    assert [float(e.arrays[0][0]) for e in entries[:3]] == [0.0, 2.0, 10.0]
    assert all(e.stored_name is None for e in entries)


def test_native_nested_model(tmp_path):
    path = tmp_path / "nested.weights.h5"
    with h5py.File(path, "w") as f:
        inner = f.create_group("layers/functional/layers")
        for key, value in [("conv2d", 1.0), ("conv2d_1", 2.0)]:
            inner.create_group(f"{key}/vars").create_dataset("0", data=np.full(2, value))
        f.create_group("layers/dense/vars").create_dataset("0", data=np.full(2, 3.0))
    entries = read_keras_weights(path)
    assert [e.name for e in entries] == ["functional/layers/conv2d", "functional/layers/conv2d_1", "dense"]
    assert [e.class_name for e in entries] == ["conv2d", "conv2d", "dense"]


def test_full_model_file_descends_into_model_weights(tmp_path):
    src = fixture("vgg16mini_top_64_c5", "keras3_legacy.h5")
    path = tmp_path / "full.h5"
    with h5py.File(src, "r") as s, h5py.File(path, "w") as f:
        f.attrs["keras_version"] = "3.15.1"
        f.attrs["backend"] = "torch"
        f.attrs["model_config"] = json.dumps({"class_name": "Functional"})
        g = f.create_group("model_weights")
        for k, v in s.attrs.items():
            g.attrs[k] = v
        for key in s:
            s.copy(s[key], g, name=key)
        f.create_group("optimizer_weights")
    got = read_keras_weights(path)
    want = read_keras_weights(src)
    assert [e.name for e in got] == [e.name for e in want]
    for a, b in zip(got, want):
        assert all(np.array_equal(x, y) for x, y in zip(a.arrays, b.arrays))


def test_split_layer_names_attribute(tmp_path):
    path = tmp_path / "split.h5"
    shutil.copy(fixture("vgg16mini_notop_32", "official_like.h5"), path)
    with h5py.File(path, "r+") as f:
        names = f.attrs["layer_names"]
        del f.attrs["layer_names"]
        f.attrs["layer_names0"] = names[:7]
        f.attrs["layer_names1"] = names[7:]
    assert [e.name for e in read_keras_weights(path)] == CONV_NAMES


# ------------------------------------------------------------------ errors


def test_missing_file(tmp_path):
    with pytest.raises(WeightsError, match="no such file"):
        read_keras_weights(tmp_path / "nope.h5")


def test_directory_is_not_a_file(tmp_path):
    with pytest.raises(WeightsError, match="not a file"):
        read_keras_weights(tmp_path)


def test_missing_dataset(tmp_path):
    path = tmp_path / "hole.h5"
    shutil.copy(fixture("vgg16mini_top_64_c5", "official_like.h5"), path)
    with h5py.File(path, "r+") as f:
        del f["fc2/fc2_b_1:0"]
    with pytest.raises(WeightsError) as err:
        read_keras_weights(path)
    msg = str(err.value)
    assert "hole.h5" in msg and "fc2_b_1:0" in msg and "'fc2'" in msg


def test_listed_layer_without_group(tmp_path):
    path = tmp_path / "nogroup.h5"
    shutil.copy(fixture("vgg16mini_notop_32", "keras3_legacy.h5"), path)
    with h5py.File(path, "r+") as f:
        del f["block2_conv1"]
    with pytest.raises(WeightsError, match="block2_conv1"):
        read_keras_weights(path)


def test_unknown_layout(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    with pytest.raises(WeightsError, match="no known weights layout") as err:
        read_keras_weights(path)
    assert "other.h5" in str(err.value)


# ------------------------------------------------------------------ writing


def layers_of(variant):
    """(name, [(weight name, array)]) for every layer, from the official fixture."""
    arrays = {e.name: e.arrays for e in read_keras_weights(fixture(variant, "official_like.h5"))}
    names = ["input_layer"] + all_layer_names(variant)[1:]
    return [(n, list(zip(["kernel", "bias"], arrays.get(n, [])))) for n in names]


@pytest.mark.parametrize("variant", VARIANTS)
def test_write_then_read_round_trip(tmp_path, variant):
    layers = layers_of(variant)
    path = tmp_path / "out.h5"
    write_keras_weights(path, layers)
    got = read_keras_weights(path)
    want = [(n, ws) for n, ws in layers if ws]
    assert [e.name for e in got] == [n for n, _ in want]
    for e, (_, ws) in zip(got, want):
        assert [a.dtype for a in e.arrays] == [a.dtype for _, a in ws]
        assert all(np.array_equal(a, b) for a, (_, b) in zip(e.arrays, ws))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.h5"]  # no temp file left


def test_written_attributes_follow_keras_2(tmp_path):
    path = tmp_path / "k2.h5"
    write_keras_weights(path, layers_of("vgg16mini_top_64_c5"))
    with h5py.File(path, "r") as f:
        names = f.attrs["layer_names"]
        assert names.dtype.kind == "S"
        assert [n.decode() for n in names] == ["input_layer"] + all_layer_names("vgg16mini_top_64_c5")[1:]
        assert f.attrs["backend"] == b"tensorflow"
        assert isinstance(f.attrs["keras_version"], bytes)
        wn = f["fc1"].attrs["weight_names"]
        assert wn.dtype.kind == "S" and list(wn) == [b"fc1/kernel:0", b"fc1/bias:0"]
        empty = f["flatten"].attrs["weight_names"]
        assert empty.dtype == np.float64 and empty.shape == (0,)
        assert f["fc1/fc1/kernel:0"].shape == (128, 64)
        assert "top_level_model_weights" not in f


def test_writer_splits_a_large_layer_names_attribute(tmp_path):
    layers = [(f"layer_{i:05d}_" + "x" * 30, []) for i in range(2000)]
    layers.append(("last", [("kernel", np.arange(6, dtype=np.float32).reshape(2, 3))]))
    path = tmp_path / "many.h5"
    write_keras_weights(path, layers)
    with h5py.File(path, "r") as f:
        assert "layer_names" not in f.attrs
        assert "layer_names0" in f.attrs and "layer_names1" in f.attrs
    entries = read_keras_weights(path)
    assert [e.name for e in entries] == ["last"]
    assert np.array_equal(entries[0].arrays[0], np.arange(6, dtype=np.float32).reshape(2, 3))


def test_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "keep.h5"
    path.write_bytes(b"old contents")

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(h5py.Group, "create_dataset", broken)
    with pytest.raises(WeightsError, match="disk full"):
        write_keras_weights(path, [("d", [("kernel", np.zeros(2))])])
    assert path.read_bytes() == b"old contents"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.h5"]


@pytest.mark.parametrize(
    "layers",
    [
        [("a/b", [])],
        [("", [])],
        [("a", []), ("a", [])],
        [("a", [("kernel", np.zeros(1)), ("kernel", np.zeros(1))])],
        [("a", [("kernel", np.array(["text"]))])],
    ],
)
def test_writer_rejects_bad_input(tmp_path, layers):
    with pytest.raises(WeightsError):
        write_keras_weights(tmp_path / "bad.h5", layers)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------- model level
# A stand-in for minitl.nn: model.layers() yields leaf layers with .name and
# .weights (parameters with .data), kernel then bias.


class Parameter:
    def __init__(self, data):
        self.data = data


class Layer:
    def __init__(self, name, *shapes, dtype=np.float32):
        self.name = name
        self.weights = [Parameter(np.full(s, -1.0, dtype=dtype)) for s in shapes]


class Conv2D(Layer):
    pass


class Dense(Layer):
    pass


class MaxPool2D(Layer):
    pass


class Flatten(Layer):
    pass


class Model:
    def __init__(self, layers):
        self._layers = layers

    def layers(self):
        return iter(self._layers)

    def layer(self, name):
        return next(layer for layer in self._layers if layer.name == name)


CONV_SHAPES = {
    "block1_conv1": (3, 4), "block1_conv2": (4, 4),
    "block2_conv1": (4, 8), "block2_conv2": (8, 8),
    "block3_conv1": (8, 16), "block3_conv2": (16, 16), "block3_conv3": (16, 16),
    "block4_conv1": (16, 32), "block4_conv2": (32, 32), "block4_conv3": (32, 32),
    "block5_conv1": (32, 32), "block5_conv2": (32, 32), "block5_conv3": (32, 32),
}


LAST_IN_BLOCK = {"block1_conv2", "block2_conv2", "block3_conv3", "block4_conv3", "block5_conv3"}


def mini_vgg(top=True, classes=5, dtype=np.float32, rename=False):
    layers = []
    for name, (cin, cout) in CONV_SHAPES.items():
        layers.append(Conv2D(name, (3, 3, cin, cout), (cout,), dtype=dtype))
        if name in LAST_IN_BLOCK:
            layers.append(MaxPool2D(name[:6] + "_pool"))
    if top:
        layers.append(Flatten("flatten"))
        layers.append(Dense("fc1", (128, 64), (64,), dtype=dtype))
        layers.append(Dense("fc2", (64, 32), (32,), dtype=dtype))
        layers.append(Dense("predictions", (32, classes), (classes,), dtype=dtype))
    if rename:
        for i, layer in enumerate(layers):
            layer.name = f"{type(layer).__name__.lower()}_{i}"
    return Model(layers)


def snapshot(model):
    return [p.data.copy() for layer in model.layers() for p in layer.weights]


def assert_unchanged(model, before):
    after = snapshot(model)
    assert len(after) == len(before)
    assert all(np.array_equal(a, b) for a, b in zip(after, before))


def test_stand_in_model_has_vgg16_layer_order():
    names = [layer.name for layer in mini_vgg().layers()]
    assert names == all_layer_names("vgg16mini_top_64_c5")[1:]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_load_every_layout(layout):
    model = mini_vgg()
    report = load_weights(model, fixture("vgg16mini_top_64_c5", layout))
    want = file_arrays("vgg16mini_top_64_c5")
    assert report.loaded == weighted_names("vgg16mini_top_64_c5")
    assert report.untouched == [] and report.skipped == []
    for name, arrays in want.items():
        params = model.layer(name).weights
        assert all(np.array_equal(p.data, a) and p.data.dtype == np.float32 for p, a in zip(params, arrays))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_notop_file_into_model_with_a_new_head(layout):
    model = mini_vgg(classes=7)
    before = snapshot(model)
    missing = r"no weights for 3 of the model's 16 layers[\s\S]*fc1\n  fc2\n  predictions"
    with pytest.raises(WeightsError, match=missing):
        load_weights(model, fixture("vgg16mini_notop_32", layout))
    assert_unchanged(model, before)
    head = [p.data.copy() for n in DENSE_NAMES for p in model.layer(n).weights]
    # The head is new: strict=False loads the base and leaves the head as it is.
    report = load_weights(model, fixture("vgg16mini_notop_32", layout), strict=False)
    assert report.loaded == CONV_NAMES
    assert report.untouched == DENSE_NAMES
    now = [p.data for n in DENSE_NAMES for p in model.layer(n).weights]
    assert all(np.array_equal(a, b) for a, b in zip(head, now))
    want = file_arrays("vgg16mini_notop_32")
    assert np.array_equal(model.layer("block5_conv3").weights[0].data, want["block5_conv3"][0])


@pytest.mark.parametrize("layout", LAYOUTS)
def test_file_layers_without_model_layer(layout):
    model = mini_vgg(top=False)
    before = snapshot(model)
    path = fixture("vgg16mini_top_64_c5", layout)
    with pytest.raises(WeightsError) as err:
        load_weights(model, path)
    msg = str(err.value)
    assert path.name in msg and "no model layer" in msg
    assert_unchanged(model, before)
    with pytest.warns(UserWarning, match="no model layer"):
        report = load_weights(model, path, skip_mismatch=True)
    assert report.loaded == CONV_NAMES and len(report.skipped) == 3


@pytest.mark.parametrize("layout", LAYOUTS)
def test_shape_mismatch_is_all_or_nothing(layout):
    model = mini_vgg(classes=10)
    before = snapshot(model)
    path = fixture("vgg16mini_top_64_c5", layout)
    with pytest.raises(WeightsError) as err:
        load_weights(model, path)
    msg = str(err.value)
    assert path.name in msg and "'predictions'" in msg
    assert "(32, 10)" in msg and "(32, 5)" in msg and "(10,)" in msg and "(5,)" in msg
    assert "nothing was loaded" in msg
    assert_unchanged(model, before)  # the convs that did fit were not loaded either


def test_many_mismatches_are_listed_briefly(tmp_path):
    from minitl.applications import VGG16

    path = tmp_path / "wide.h5"
    save_weights(VGG16(include_top=False, input_shape=(32, 32, 3), width=1 / 8), path)
    with pytest.raises(WeightsError) as err:  # 13 layers x 2 weights of another width
        load_weights(VGG16(include_top=False, input_shape=(32, 32, 3), width=1 / 16), path)
    lines = str(err.value).splitlines()
    assert len(lines) == 9 and "block1_conv1" in lines[1] and lines[-1].strip() == "... and 19 more"


def test_shape_mismatch_names_the_weight():
    model = mini_vgg(classes=10)
    with pytest.raises(
        WeightsError, match=r"weight 0 'predictions_W_1:0': model expects shape \(32, 10\), file has \(32, 5\)"
    ):
        load_weights(model, fixture("vgg16mini_top_64_c5", "official_like.h5"))


def test_skip_mismatch_skips_only_the_bad_layer():
    model = mini_vgg(classes=10)
    path = fixture("vgg16mini_top_64_c5", "keras3_legacy.h5")
    with pytest.warns(UserWarning, match="predictions"):
        report = load_weights(model, path, skip_mismatch=True)
    assert report.loaded == weighted_names("vgg16mini_top_64_c5")[:-1]
    assert report.untouched == ["predictions"]
    assert len(report.skipped) == 2 and all(s.startswith("predictions:") for s in report.skipped)
    assert np.all(model.layer("predictions").weights[0].data == -1.0)
    want = file_arrays("vgg16mini_top_64_c5")
    assert np.array_equal(model.layer("fc2").weights[0].data, want["fc2"][0])


def test_weight_count_mismatch():
    model = mini_vgg()
    layer = model.layer("fc2")
    layer.weights = layer.weights[:1]
    before = snapshot(model)
    with pytest.raises(WeightsError, match="'fc2': the model has 1 weights, the file has 2"):
        load_weights(model, fixture("vgg16mini_top_64_c5", "official_like.h5"))
    assert_unchanged(model, before)


def test_by_name_false_loads_legacy_by_order():
    model = mini_vgg(rename=True)
    with pytest.raises(WeightsError, match="no model layer"):
        load_weights(model, fixture("vgg16mini_top_64_c5", "official_like.h5"))
    report = load_weights(model, fixture("vgg16mini_top_64_c5", "official_like.h5"), by_name=False)
    assert len(report.loaded) == 16
    want = file_arrays("vgg16mini_top_64_c5")
    weighted = [layer for layer in model.layers() if layer.weights]
    for layer, name in zip(weighted, weighted_names("vgg16mini_top_64_c5")):
        assert np.array_equal(layer.weights[0].data, want[name][0])


def test_by_name_false_needs_equal_counts():
    model = mini_vgg()
    before = snapshot(model)
    with pytest.raises(WeightsError, match="13 layers with weights, the model has 16"):
        load_weights(model, fixture("vgg16mini_notop_32", "official_like.h5"), by_name=False)
    assert_unchanged(model, before)


def test_native_cross_checks_the_stored_name():
    model = mini_vgg(rename=True)
    before = snapshot(model)
    path = fixture("vgg16mini_top_64_c5", "weights.h5")
    with pytest.raises(WeightsError, match="stores the name 'block1_conv1'"):
        load_weights(model, path)
    assert_unchanged(model, before)
    report = load_weights(model, path, by_name=False)
    assert len(report.loaded) == 16
    want = file_arrays("vgg16mini_top_64_c5")
    assert np.array_equal(model.layer("conv2d_14").weights[0].data, want["block5_conv1"][0])


def test_native_matches_by_order_within_each_class(tmp_path):
    # No name attributes; conv2d_10 must come after conv2d_9 (not after conv2d_1),
    # and Dense layers count separately from Conv2D layers.
    path = tmp_path / "m.weights.h5"
    groups = {
        ("conv2d" if k == 0 else f"conv2d_{k}"): [np.full((1, 1, 2, 2), float(k)), np.zeros(2)]
        for k in (10, 0, 2, 1, 9, 3, 4, 5, 6, 7, 8)
    }
    groups.update({"dense": [np.full((2, 3), 50.0), np.zeros(3)], "max_pooling2d": []})
    write_native(path, groups)
    names = [f"c{k}" for k in range(11)]
    layers = [Conv2D(n, (1, 1, 2, 2), (2,)) for n in names]
    model = Model(layers[:3] + [Dense("d", (2, 3), (3,)), MaxPool2D("p")] + layers[3:])
    report = load_weights(model, path)
    assert sorted(report.loaded) == sorted(names + ["d"])
    assert [float(model.layer(n).weights[0].data.flat[0]) for n in names + ["d"]] == list(range(11)) + [50.0]


def test_native_gap_in_numbering_is_an_error(tmp_path):
    path = tmp_path / "gap.weights.h5"
    write_native(
        path, {"conv2d": [np.zeros((1, 1, 2, 2)), np.zeros(2)], "conv2d_2": [np.ones((1, 1, 2, 2)), np.zeros(2)]}
    )
    model = Model([Conv2D("a", (1, 1, 2, 2), (2,)), Conv2D("b", (1, 1, 2, 2), (2,))])
    before = [p.data.copy() for layer in model.layers() for p in layer.weights]
    with pytest.raises(WeightsError, match="conv2d_1 is missing"):
        load_weights(model, path)
    after = [p.data for layer in model.layers() for p in layer.weights]
    assert all(np.array_equal(a, b) for a, b in zip(before, after))


def test_loaded_values_take_the_parameter_dtype():
    model = mini_vgg(dtype=np.float64)
    load_weights(model, fixture("vgg16mini_top_64_c5", "weights.h5"))
    want = file_arrays("vgg16mini_top_64_c5")
    got = model.layer("fc1").weights[0].data
    assert got.dtype == np.float64
    assert np.array_equal(got, want["fc1"][0].astype(np.float64))


def test_loaded_arrays_are_copies():
    model_a, model_b = mini_vgg(), mini_vgg()
    path = fixture("vgg16mini_top_64_c5", "official_like.h5")
    load_weights(model_a, path)
    load_weights(model_b, path)
    model_a.layer("fc1").weights[1].data[:] = 0
    assert not np.all(model_b.layer("fc1").weights[1].data == 0)


def test_duplicate_model_layer_names():
    model = mini_vgg()
    model.layer("fc2").name = "fc1"
    with pytest.raises(WeightsError, match="two layers named 'fc1'"):
        load_weights(model, fixture("vgg16mini_top_64_c5", "official_like.h5"))


def test_save_then_load_round_trip(tmp_path):
    src = mini_vgg()
    load_weights(src, fixture("vgg16mini_top_64_c5", "weights.h5"))
    path = tmp_path / "saved.h5"
    save_weights(src, path)
    with h5py.File(path, "r") as f:
        assert [n.decode() for n in f.attrs["layer_names"]] == [layer.name for layer in src.layers()]
        assert list(f["block1_conv1"].attrs["weight_names"]) == [b"block1_conv1/kernel:0", b"block1_conv1/bias:0"]
    dst = mini_vgg()
    load_weights(dst, path)
    assert all(np.array_equal(a, b) for a, b in zip(snapshot(src), snapshot(dst)))


def test_save_refuses_the_native_suffix(tmp_path):
    with pytest.raises(WeightsError, match=r"\.weights\.h5"):
        save_weights(mini_vgg(), tmp_path / "model.weights.h5")
    assert list(tmp_path.iterdir()) == []


def test_keras_class_names():
    assert [keras_class_name(c("x")) for c in (Conv2D, Dense, MaxPool2D, Flatten)] == [
        "conv2d",
        "dense",
        "max_pooling2d",
        "flatten",
    ]

    class BatchNormalization(Layer):
        pass

    assert keras_class_name(BatchNormalization("bn")) == "batch_normalization"


def test_entry_type():
    e = read_keras_weights(fixture("vgg16mini_notop_32", "weights.h5"))[0]
    assert isinstance(e, KerasLayerWeights) and e.native
    assert e.weight_names == ["0", "1"]


# ------------------------------------------------- a Keras-written transfer model
# tests/data/vgg16mini_transfer_32.*: Keras' Sequential([vgg16 base, head]) with nested
# models, block5 trainable (TRANSFER_MINI.md); the head has build_head's names.

TRANSFER = "vgg16mini_transfer_32"
TRANSFER_CONFIG = {
    "arch": "vgg16",
    "input_shape": [32, 32, 3],
    "width": 1 / 32,
    "num_classes": 3,
    "hidden": [16, 8],
    "dropout": 0.0,
    "pooling": "flatten",
}
HEAD_NAMES = ["head_dense1", "head_dense2", "head_predictions"]


def test_nested_legacy_groups_split_by_layer():
    entries = read_keras_weights(DATA / f"{TRANSFER}.keras3_legacy.h5")
    # Keras lists the nested base's trainable layers (block5) first.
    assert [e.name for e in entries] == CONV_NAMES[10:] + CONV_NAMES[:10] + HEAD_NAMES
    assert entries[0].weight_names == ["block5_conv1/kernel", "block5_conv1/bias"]
    assert entries[-1].weight_names == ["transfer/head/head_predictions/kernel", "transfer/head/head_predictions/bias"]
    assert entries[3].arrays[0].shape == (3, 3, 3, 2) and entries[-1].arrays[0].shape == (8, 3)


@pytest.mark.parametrize("layout", ["keras3_legacy.h5", "weights.h5", "full.h5"])
def test_keras_transfer_model_reproduces_keras_logits(tmp_path, layout):
    from minitl.tensor import Tensor, no_grad
    from minitl.transfer import build_model

    path = DATA / f"{TRANSFER}.{layout}"
    if layout == "full.h5":  # Keras' model.save('x.h5') keeps the same groups under model_weights
        src, path = DATA / f"{TRANSFER}.keras3_legacy.h5", tmp_path / "full.h5"
        with h5py.File(src, "r") as s, h5py.File(path, "w") as f:
            f.attrs["model_config"] = json.dumps({"class_name": "Sequential"})
            s.copy(s["/"], f, name="model_weights")
    model = build_model(TRANSFER_CONFIG)
    report = load_weights(model, path)
    assert sorted(report.loaded) == sorted(CONV_NAMES + HEAD_NAMES) and report.untouched == []
    native = read_keras_weights(DATA / f"{TRANSFER}.weights.h5")
    for e in native:  # every array bit for bit, whichever layout it came from
        params = model.get_layer(e.stored_name).weights
        assert all(np.array_equal(p.data, a) and p.data.dtype == np.float32 for p, a in zip(params, e.arrays))
    with np.load(DATA / f"{TRANSFER}.npz") as ref:
        x, want = ref["x"], ref["logits"]
    with no_grad():
        got = model.eval()(Tensor(x)).data
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    assert np.array_equal(got.argmax(axis=1), want.argmax(axis=1))


def test_keras_transfer_legacy_by_order_refuses_the_trainable_first_order():
    from minitl.transfer import build_model

    model = build_model(TRANSFER_CONFIG)
    before = [np.array(p.data, copy=True) for p in model.parameters()]
    with pytest.raises(WeightsError, match="block5_conv1"):
        load_weights(model, DATA / f"{TRANSFER}.keras3_legacy.h5", by_name=False)
    assert all(np.array_equal(a, p.data) for a, p in zip(before, model.parameters()))
