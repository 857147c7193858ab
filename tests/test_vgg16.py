"""VGG16 and Keras HDF5 weights: minitl.applications.VGG16 against Keras' own outputs.

The fixtures in tests/data (see KERAS_REF_MINI.md) are a "VGG16 / 16": Keras'
VGG16 layer names and structure with every width divided by 16, random
weights in the three HDF5 layouts, and Keras' outputs, loss and gradients for
a fixed batch. Tolerances are the README's. The measured errors are collected
and printed as a table at the end of the module (`pytest -s`).
"""

import json
import shutil
import time

import h5py
import numpy as np
import pytest
from keras_fixtures import CONV_NAMES, DATA, DENSE_NAMES, LAYOUTS, NOTOP, TOP, VARIANTS, file_arrays, fixture

import minitl.functional as F
from minitl import ShapeError, WeightsError
from minitl.applications import VGG16
from minitl.applications.vgg16 import preprocess_input
from minitl.io import LoadReport, load_weights, read_keras_weights, save_weights, write_keras_weights
from minitl.nn import Conv2D, Dense, Flatten, Sequential, manual_seed
from minitl.tensor import Tensor, no_grad

ACTIVATIONS = ["block1_conv1", "block1_pool", "block3_conv3", "block5_pool"]
TOP_ACTIVATIONS = ["flatten", "fc1", "fc2"]
GRADS = [("predictions", 0, "grad_predictions_kernel"), ("predictions", 1, "grad_predictions_bias"),
         ("block5_conv3", 0, "grad_block5_conv3_kernel"), ("block5_conv3", 1, "grad_block5_conv3_bias")]
DTYPES = [np.float32, np.float64]


# ------------------------------------------------------------------ helpers



def x_batch(shape, seed=0):
    return Tensor(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))



def ref(variant):
    with np.load(DATA / f"{variant}.npz") as d:
        return {k: d[k] for k in d.files}


def manifest(variant):
    cases = json.loads((DATA / "keras_ref_mini_manifest.json").read_text())["cases"]
    return next(c for c in cases if c["tag"] == variant)


def weighted_names(variant):
    return CONV_NAMES + (DENSE_NAMES if variant == TOP else [])


def mini(variant, include_top=None, **kw):
    """The fixture's model: VGG16 with width 1/16 (and fc_units (64, 32), 5 classes for the top one)."""
    top = variant == TOP if include_top is None else include_top
    hw = manifest(variant)["input_hw"]
    if top:
        kw = {"classes": 5, "fc_units": (64, 32), **kw}
    return VGG16(include_top=top, width=1 / 16, input_shape=(hw, hw, 3), **kw)


def snapshot(model):
    return [(name, np.array(p.data, copy=True)) for name, p in model.named_parameters()]


def assert_unchanged(model, before):
    after = snapshot(model)
    assert [n for n, _ in after] == [n for n, _ in before]
    for (name, a), (_, b) in zip(after, before):
        assert a.dtype == b.dtype and np.array_equal(a, b), f"parameter {name} changed"


def assert_layer_equals_file(model, name, arrays):
    params = model.get_layer(name).weights
    assert len(params) == len(arrays) == 2
    for p, a in zip(params, arrays):
        assert p.data.dtype == np.float32 and np.array_equal(p.data, a), f"{name} differs from the file"


def run_layers(model, x):
    """Every leaf layer's output, by layer name, running the layers one by one."""
    out, h = {}, x
    for layer in model.layers():
        h = layer(h)
        out[layer.name] = h.numpy()
    return out


def rel_error(got, want):
    """max |got - want| / max |want|, in float64."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.abs(got - want).max() / np.abs(want).max())


def assert_close(got, want, what):
    """The README's tolerance for activations, logits, predictions and gradients."""
    want = np.asarray(want)
    assert np.shape(got) == want.shape, f"{what}: shape {np.shape(got)} != {want.shape}"
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max(), err_msg=what)


def to_float64(model):
    for p in model.parameters():
        p.data = p.data.astype(np.float64)
        p.grad = None
    assert all(p.data.dtype == np.float64 for p in model.parameters())


ERRORS = {}  # (dtype name, variant, layout) -> {tensor: max scale-relative error}


@pytest.fixture(scope="module", autouse=True)
def print_error_table():
    yield
    if not ERRORS:
        return
    print("\n\nmax |minitl - keras| / max |keras| per tensor")
    for dtype in ("float32", "float64"):
        for variant in VARIANTS:
            cols = [lay for lay in LAYOUTS if (dtype, variant, lay) in ERRORS]
            if not cols:
                continue
            rows = []
            for lay in cols:
                rows += [k for k in ERRORS[(dtype, variant, lay)] if k not in rows]
            print(f"\n{dtype}  {variant}")
            print(f"  {'tensor':<26}" + "".join(f"{lay:>18}" for lay in cols))
            for row in rows:
                cells = [ERRORS[(dtype, variant, lay)].get(row) for lay in cols]
                print(f"  {row:<26}" + "".join(f"{'-' if c is None else f'{c:.2e}':>18}" for c in cells))


def record(dtype, variant, layout, name, err):
    ERRORS.setdefault((np.dtype(dtype).name, variant, layout), {})[name] = err


# ------------------------------------------------------------- the model


@pytest.mark.parametrize("variant", VARIANTS)
def test_width_one_sixteenth_matches_the_fixture_model(variant):
    model = mini(variant)
    convs = [layer for layer in model.layers() if isinstance(layer, Conv2D)]
    assert [c.filters for c in convs] == [4, 4, 8, 8, 16, 16, 16, 32, 32, 32, 32, 32, 32]
    # one width per block: 4, 8, 16, 32, 32
    assert [model.get_layer(f"block{b}_conv1").filters for b in range(1, 6)] == [4, 8, 16, 32, 32]
    assert [layer.name for layer in model.layers()] == manifest(variant)["layer_names"][1:]  # no input layer
    assert model.count_params() == manifest(variant)["params"]
    shapes = {name: tuple(a.shape for a in arrays) for name, arrays in file_arrays(variant).items()}
    assert {n: tuple(p.shape for p in model.get_layer(n).weights) for n in weighted_names(variant)} == shapes


@pytest.mark.parametrize("variant", VARIANTS)
def test_preprocess_input_gives_the_fixture_input(variant):
    r = ref(variant)
    x_raw = r["x_raw"].copy()
    x = preprocess_input(x_raw)
    assert x.dtype == np.float32 and np.array_equal(x, r["x"])
    assert np.array_equal(x_raw, r["x_raw"])  # the input is not modified


# ------------------------------------------------------------- loading


@pytest.mark.parametrize("variant", VARIANTS)
def test_three_layouts_load_bit_identical_weights(variant):
    want = file_arrays(variant)
    loaded = []
    for layout in LAYOUTS:
        model = mini(variant)
        report = load_weights(model, fixture(variant, layout))
        assert isinstance(report, LoadReport)
        assert report.loaded == weighted_names(variant)
        assert report.untouched == [] and report.skipped == []
        for name in weighted_names(variant):  # each layer has the arrays stored under its name
            assert_layer_equals_file(model, name, want[name])
        loaded.append(snapshot(model))
    for other in loaded[1:]:
        assert [n for n, _ in other] == [n for n, _ in loaded[0]]
        assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(loaded[0], other))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_weights_argument_loads_the_file(variant, layout):
    path = fixture(variant, layout)
    a = mini(variant, weights=str(path))
    b = mini(variant)
    load_weights(b, path)
    assert all(np.array_equal(p, q) for (_, p), (_, q) in zip(snapshot(a), snapshot(b)))
    x = Tensor(ref(variant)["x"])
    with no_grad():
        assert np.array_equal(a(x).numpy(), b(x).numpy())


# ------------------------------------------------- outputs, loss, gradients


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_outputs_match_keras(variant, layout, dtype):
    r = ref(variant)
    model = mini(variant)
    load_weights(model, fixture(variant, layout))
    if dtype is np.float64:
        to_float64(model)
    x = Tensor(r["x"].astype(dtype))
    with no_grad():
        out = run_layers(model, x)
        names = ACTIVATIONS + (TOP_ACTIVATIONS if variant == TOP else [])
        for name in names:
            assert out[name].dtype == dtype
            record(dtype, variant, layout, name, rel_error(out[name], r[name]))
            assert_close(out[name], r[name], f"{variant} {layout} {name}")
        if variant == NOTOP:
            y = model(x).numpy()
            assert np.array_equal(y, out["block5_pool"])
            return
        logits = model.logits(x).numpy()
        probs = model(x).numpy()
    assert logits.dtype == probs.dtype == dtype
    assert np.array_equal(out["predictions"], logits)  # the last layer gives the logits
    for name, got in (("logits", logits), ("predictions", probs)):
        record(dtype, variant, layout, name, rel_error(got, r[name]))
        assert_close(got, r[name], f"{variant} {layout} {name}")
    assert np.array_equal(logits.argmax(axis=1), r["logits"].argmax(axis=1))
    assert np.array_equal(probs.argmax(axis=1), r["predictions"].argmax(axis=1))


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_loss_and_gradients_match_keras(layout, dtype):
    r = ref(TOP)
    model = mini(TOP)
    load_weights(model, fixture(TOP, layout))
    if dtype is np.float64:
        to_float64(model)
    x = Tensor(r["x"].astype(dtype))
    model.zero_grad()
    loss = F.softmax_cross_entropy(model.logits(x), r["labels"])
    assert loss.dtype == dtype
    loss.backward()
    record(dtype, TOP, layout, "loss", rel_error(loss.item(), r["loss"]))
    np.testing.assert_allclose(loss.item(), r["loss"], rtol=1e-5)
    for layer, i, key in GRADS:
        g = model.get_layer(layer).weights[i].grad
        assert g is not None and g.dtype == dtype
        record(dtype, TOP, layout, key, rel_error(g, r[key]))
        assert_close(g, r[key], f"{layout} {key}")
    with no_grad():
        per_sample = F.softmax_cross_entropy(model.logits(x), r["labels"], reduction="none").numpy()
    record(dtype, TOP, layout, "loss_per_sample", rel_error(per_sample, r["loss_per_sample"]))
    np.testing.assert_allclose(per_sample, r["loss_per_sample"], rtol=1e-5)


# ------------------------------------------------------ full-size round trip


def test_full_size_vgg16_save_load_round_trip(tmp_path):
    t = time.perf_counter()
    src = VGG16()
    build_s = time.perf_counter() - t
    assert src.count_params() == 138_357_544
    path = tmp_path / "vgg16_full.h5"
    t = time.perf_counter()
    save_weights(src, path)
    save_s = time.perf_counter() - t

    # The file: the legacy layout, every layer (weightless ones too) in layer_names.
    all_names = [layer.name for layer in src.layers()]
    assert len(all_names) == 22 and "block1_pool" in all_names and "flatten" in all_names
    with h5py.File(path, "r") as f:
        assert [n.decode() if isinstance(n, bytes) else n for n in f.attrs["layer_names"]] == all_names
        assert "keras_version" in f.attrs and "backend" in f.attrs
        assert len(f["block1_pool"].attrs["weight_names"]) == 0
    entries = read_keras_weights(path)
    assert [e.name for e in entries] == CONV_NAMES + DENSE_NAMES
    assert not any(e.native for e in entries)
    assert entries[0].weight_names == ["block1_conv1/kernel:0", "block1_conv1/bias:0"]
    for e in entries:
        for p, a in zip(src.get_layer(e.name).weights, e.arrays):
            assert a.dtype == np.float32 and np.array_equal(p.data, a)
    del entries

    dst = VGG16()
    assert not np.array_equal(dst.get_layer("fc2").kernel.data, src.get_layer("fc2").kernel.data)
    t = time.perf_counter()
    report = load_weights(dst, path)
    load_s = time.perf_counter() - t
    assert report.loaded == CONV_NAMES + DENSE_NAMES and report.untouched == [] and report.skipped == []
    assert [n for n, _ in src.named_parameters()] == [n for n, _ in dst.named_parameters()]
    for (name, p), (_, q) in zip(src.named_parameters(), dst.named_parameters()):
        assert p.data.dtype == q.data.dtype == np.float32 and np.array_equal(p.data, q.data), name

    x_raw = np.random.default_rng(0).integers(0, 256, (1, 224, 224, 3)).astype(np.float32)
    x = Tensor(preprocess_input(x_raw))
    t = time.perf_counter()
    with no_grad():
        y_src = src(x).numpy()
        y_dst = dst(x).numpy()
    forward_s = (time.perf_counter() - t) / 2
    assert y_src.shape == (1, 1000) and np.all(np.isfinite(y_src))
    assert np.array_equal(y_src, y_dst)
    print(f"\nfull VGG16: build {build_s:.2f} s, save_weights {save_s:.2f} s "
          f"({path.stat().st_size / 1e6:.1f} MB), load_weights {load_s:.2f} s, "
          f"forward 1x224x224 {forward_s:.2f} s")


# ------------------------------------------- notop weights under a new head


def headed_model():
    model = Sequential([VGG16(include_top=False, width=1 / 16, input_shape=(32, 32, 3)),
                        Flatten(name="head_flatten"), Dense(7, name="head_predictions")])
    model.build((32, 32, 3))  # builds the head's Dense, so it has weights to leave alone
    return model


def head_params(model):
    return [np.array(p.data, copy=True) for p in model.get_layer("head_predictions").weights]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("target", ["base", "whole"])
def test_notop_file_into_a_model_with_a_new_head(layout, target):
    r = ref(NOTOP)
    model = headed_model()
    head = head_params(model)
    assert [h.shape for h in head] == [(32, 7), (7,)]
    path = fixture(NOTOP, layout)
    if target == "base":
        report = load_weights(model[0], path)
        assert report.untouched == []
    else:
        assert_rejected(model, path, "no weights for 1 of the model's 14 layers", "head_predictions")
        # The head is new: strict=False loads the base and leaves the head as it is.
        report = load_weights(model, path, by_name=True, strict=False)
        assert report.untouched == ["head_predictions"]
    assert report.loaded == CONV_NAMES and report.skipped == []
    assert all(np.array_equal(a, b) for a, b in zip(head, head_params(model)))
    for name, arrays in file_arrays(NOTOP).items():
        assert_layer_equals_file(model, name, arrays)
    x = Tensor(r["x"])
    with no_grad():
        base = model[0](x).numpy()
        y = model(x).numpy()
    assert_close(base, r["block5_pool"], f"{layout} {target} block5_pool")
    assert y.shape == (3, 7) and np.all(np.isfinite(y))


# ------------------------------------------------------------- bad files


def truncated(tmp_path, layout, n):
    """The first n bytes of a fixture (the name of the copy does not say 'truncated')."""
    path = tmp_path / f"part_{n}.{layout}"
    path.write_bytes(fixture(TOP, layout).read_bytes()[:n])
    return path


def assert_rejected(model, path, *fragments, **kw):
    before = snapshot(model)
    with pytest.raises(WeightsError) as err:
        load_weights(model, path, **kw)
    msg = str(err.value)
    assert str(path) in msg, msg
    rest = msg.replace(str(path), "<file>")  # so that no fragment is found in the file's name
    for frag in fragments:
        assert frag in rest, f"{frag!r} not in {rest!r}"
    assert_unchanged(model, before)
    return rest


# Bad weight files, read alone (read_keras_weights) and into a model (load_weights, VGG16(weights=)).

@pytest.mark.parametrize("layout,keep", [(lay, 0.5) for lay in LAYOUTS]
                         + [("official_like.h5", k) for k in (4, 512, 0.9, 0.97, -1)])
def test_truncated_file(tmp_path, layout, keep):
    size = fixture(TOP, layout).stat().st_size
    n = {-1: size - 1}.get(keep, keep if keep >= 1 else int(size * keep))
    path = truncated(tmp_path, layout, n)
    with pytest.raises(WeightsError) as err:
        read_keras_weights(path)
    assert path.name in str(err.value)
    # Under 8 bytes even the HDF5 signature is cut; beyond it HDF5 reports the short file.
    why = "not an HDF5 file" if n < 8 else "truncated file"
    assert_rejected(mini(TOP), path, why)
    with pytest.raises(WeightsError) as err:
        mini(TOP, weights=path)
    assert str(path) in str(err.value) and why in str(err.value).replace(str(path), "")


def test_text_file_is_not_hdf5(tmp_path):
    path = tmp_path / "vgg16_weights.h5"
    path.write_text("<html>404 Not Found</html>\n")
    with pytest.raises(WeightsError, match="not an HDF5 file") as err:
        read_keras_weights(path)
    assert "vgg16_weights.h5" in str(err.value)
    assert_rejected(mini(TOP), path, "not an HDF5 file")


def test_empty_file(tmp_path):
    path = tmp_path / "vgg16_weights.h5"
    path.write_bytes(b"")
    with pytest.raises(WeightsError, match="empty") as err:
        read_keras_weights(path)
    assert "vgg16_weights.h5" in str(err.value)
    assert_rejected(mini(TOP), path, "the file is empty")


def legacy_layers(variant):
    """The fixture as write_keras_weights input: every layer, weightless ones with []."""
    arrays = file_arrays(variant)
    return [(n, [("kernel", arrays[n][0]), ("bias", arrays[n][1])] if n in arrays else [])
            for n in manifest(variant)["layer_names"]]


@pytest.mark.parametrize("layer,shape,expected", [
    ("block3_conv2", (3, 3, 16, 17), (3, 3, 16, 16)),
    ("fc1", (512, 64), (128, 64)),
])
def test_kernel_of_the_wrong_shape(tmp_path, layer, shape, expected):
    layers = legacy_layers(TOP)
    layers = [(n, [(w, np.zeros(shape, np.float32) if (n, w) == (layer, "kernel") else a) for w, a in ws])
              for n, ws in layers]
    path = tmp_path / "wrong_shape.h5"
    write_keras_weights(path, layers)
    model = mini(TOP)
    msg = assert_rejected(model, path, f"'{layer}'", str(expected), str(shape), "nothing was loaded")
    assert sum(f"'{n}'" in msg for n in CONV_NAMES + DENSE_NAMES) == 1  # only the bad layer is named
    # skip_mismatch=True loads the rest and leaves that layer alone.
    bad = [np.array(p.data, copy=True) for p in model.get_layer(layer).weights]
    with pytest.warns(UserWarning, match=layer):
        report = load_weights(model, path, skip_mismatch=True)
    assert report.untouched == [layer] and len(report.skipped) == 1 and report.skipped[0].startswith(layer)
    assert report.loaded == [n for n in weighted_names(TOP) if n != layer]
    assert all(np.array_equal(a, p.data) for a, p in zip(bad, model.get_layer(layer).weights))
    arrays = file_arrays(TOP)
    for n in report.loaded:
        assert_layer_equals_file(model, n, arrays[n])


def without_fc2(tmp_path, layout):
    """A copy of the top fixture that lacks fc2 (its group and, legacy, its layer_names entry)."""
    path = tmp_path / f"no_fc2.{layout}"
    shutil.copy(fixture(TOP, layout), path)
    with h5py.File(path, "r+") as f:
        if layout == "weights.h5":
            assert f["layers/dense_1/vars"].attrs["name"] == "fc2"
            del f["layers/dense_1"]
        else:
            names = list(f.attrs["layer_names"])
            kept = [n for n in names if (n.decode() if isinstance(n, bytes) else n) != "fc2"]
            assert len(kept) == len(names) - 1
            f.attrs["layer_names"] = np.array(kept) if isinstance(kept[0], bytes) else kept
            del f["fc2"]
    return path


@pytest.mark.parametrize("layout", LAYOUTS)
def test_top_file_missing_a_layer(tmp_path, layout):
    path = without_fc2(tmp_path, layout)
    model = mini(TOP)
    arrays = file_arrays(TOP)
    if layout == "weights.h5":
        # Native files match by order within a class, so a gap in the
        # numbering (dense, dense_2) is refused instead of shifting weights.
        assert_rejected(model, path, "layers/dense_1 is missing", "predictions")
        return
    # Legacy files, by_name=True (the default): a model layer that the file
    # lacks is an error; strict=False lets it keep its values and reports it.
    assert_rejected(model, path, "no weights for 1 of the model's 16 layers", "fc2")
    fc2 = [np.array(p.data, copy=True) for p in model.get_layer("fc2").weights]
    report = load_weights(model, path, strict=False)
    assert report.untouched == ["fc2"] and report.skipped == []
    assert report.loaded == [n for n in weighted_names(TOP) if n != "fc2"]
    assert all(np.array_equal(a, p.data) for a, p in zip(fc2, model.get_layer("fc2").weights))
    for n in report.loaded:
        assert_layer_equals_file(model, n, arrays[n])
    # by_name=False needs every layer.
    assert_rejected(mini(TOP), path, "15 layers with weights, the model has 16", by_name=False)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_top_file_into_a_notop_model(layout):
    path = fixture(TOP, layout)
    model = mini(TOP, include_top=False)
    msg = assert_rejected(model, path, "no model layer", "nothing was loaded")
    assert all(n in msg for n in DENSE_NAMES)
    with pytest.warns(UserWarning, match="no model layer"):
        report = load_weights(model, path, skip_mismatch=True)
    assert report.loaded == CONV_NAMES and report.untouched == []
    assert len(report.skipped) == 3
    assert all(n in s for n, s in zip(DENSE_NAMES, report.skipped))
    arrays = file_arrays(TOP)
    for n in CONV_NAMES:
        assert_layer_equals_file(model, n, arrays[n])
    with no_grad():
        y = model(Tensor(ref(TOP)["x"])).numpy()
    assert_close(y, ref(TOP)["block5_pool"], f"{layout} notop block5_pool")


# ------------------------------------------------- layout and parameter counts

VGG16_NAMES = ["block1_conv1", "block1_conv2", "block1_pool",
               "block2_conv1", "block2_conv2", "block2_pool",
               "block3_conv1", "block3_conv2", "block3_conv3", "block3_pool",
               "block4_conv1", "block4_conv2", "block4_conv3", "block4_pool",
               "block5_conv1", "block5_conv2", "block5_conv3", "block5_pool"]
TOP_NAMES = ["flatten", "fc1", "fc2", "predictions"]


@pytest.fixture(scope="module")
def vgg16_with_top():
    return VGG16()          # about 3 s and 550 MB: built once for this module


def test_vgg16_with_top_counts_and_names(vgg16_with_top):
    m = vgg16_with_top
    assert m.count_params() == 138_357_544
    text = m.summary(print_fn=lambda s: None)
    assert "Total params: 138,357,544" in text
    assert "predictions" in text and "(None, 1000)" in text and "(None, 7, 7, 512)" in text
    assert [layer.name for layer in m.layers()] == VGG16_NAMES + TOP_NAMES
    assert m.get_layer("fc1").kernel.shape == (25088, 4096)


def test_vgg16_without_top():
    m = VGG16(include_top=False)
    assert m.count_params() == 14_714_688
    assert "Total params: 14,714,688" in m.summary(print_fn=lambda s: None)
    assert [layer.name for layer in m.layers()] == VGG16_NAMES
    assert m.build((224, 224, 3)) == (None, 7, 7, 512)
    assert [p.shape for p in m.get_layer("block3_conv2").weights] == [(3, 3, 256, 256), (256,)]


def test_vgg16_width_keeps_the_layout():
    m = VGG16(include_top=False, width=1 / 8, input_shape=(32, 32, 3))
    assert [layer.name for layer in m.layers()] == VGG16_NAMES
    kinds = [type(layer).__name__ for layer in m.layers()]
    assert kinds.count("Conv2D") == 13 and kinds.count("MaxPool2D") == 5
    filters = [layer.filters for layer in m.layers() if isinstance(layer, Conv2D)]
    assert filters == [8, 8, 16, 16, 32, 32, 32, 64, 64, 64, 64, 64, 64]
    assert m(x_batch((1, 32, 32, 3))).shape == (1, 1, 1, 64)


def test_vgg16_too_small_input():
    with pytest.raises(ShapeError, match=r"at least 32x32.*\(16, 16, 3\)"):
        VGG16(input_shape=(16, 16, 3))


def test_vgg16_classifier_activation(keep_global_rng):
    kw = {"width": 1 / 16, "fc_units": (8, 8), "classes": 5, "input_shape": (32, 32, 3)}
    x = x_batch((2, 32, 32, 3))
    manual_seed(0)
    logits_model = VGG16(classifier_activation=None, **kw)
    manual_seed(0)
    soft_model = VGG16(**kw)
    z = logits_model(x).data
    assert z.shape == (2, 5)
    np.testing.assert_array_equal(z, logits_model.logits(x).data)
    p = soft_model(x).data
    zs = soft_model.logits(x).data
    np.testing.assert_array_equal(zs, z)            # same seed, same weights
    np.testing.assert_allclose(p, F.softmax(Tensor(zs)).data, rtol=1e-6)
    np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-6)
    with pytest.raises(ValueError, match="classifier_activation"):
        VGG16(classifier_activation="sigmoid", **kw)
