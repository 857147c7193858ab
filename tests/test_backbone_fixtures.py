"""Integrity of the Keras-written backbone fixtures in tests/data/backbones.

Plain h5py and NumPy only: these tests check the data itself (files, md5s,
the three weight layouts, the npz contents, the full-architecture manifests,
the weight-file table), so that the tests of the models can trust it.
See tests/data/backbones/README.md for what each file is.
"""
import hashlib
import json
import re
from math import prod
from pathlib import Path

import h5py
import numpy as np
import pytest

DATA = Path(__file__).parent / "data" / "backbones"
MANIFEST = json.loads((DATA / "fixtures_manifest.json").read_text())
FIXTURES = MANIFEST["fixtures"]
LAYOUTS = MANIFEST["layouts"]
FULL = ["vgg19", "resnet50", "inception_v3", "mobilenet_v2_1.0_224", "mobilenet_v2_0.35_224"]


def _str(s):
    return s.decode() if isinstance(s, bytes) else str(s)


def read_legacy(path):
    """[(layer, [weight names], [arrays])] in the order of layer_names; layers with weights only."""
    out = []
    with h5py.File(path, "r") as f:
        for name in map(_str, f.attrs["layer_names"]):
            names = [_str(w) for w in f[name].attrs["weight_names"]]
            if names:
                out.append((name, names, [np.asarray(f[name][w]) for w in names]))
    return out


def read_native(path):
    """{stored layer name: (key under layers/, [arrays vars/0, 1, ...])} for layers with variables."""
    out = {}
    with h5py.File(path, "r") as f:
        assert dict(f.attrs) == {}
        for key, group in f["layers"].items():
            vars_ = group["vars"]
            if len(vars_):
                arrays = [np.asarray(vars_[str(i)]) for i in range(len(vars_))]
                out[_str(vars_.attrs["name"])] = (key, arrays)
    return out


def weighted_layers(fixture):
    return [r for r in FIXTURES[fixture]["layers"] if r["weights"]]


def snake(class_name):
    return {"Conv2D": "conv2d", "DepthwiseConv2D": "depthwise_conv2d", "BatchNormalization": "batch_normalization",
            "Dense": "dense"}[class_name]


def test_files_match_manifest_and_readme():
    readme = (DATA / "README.md").read_text()
    table = {m[0]: (int(m[1].replace(",", "")), m[2])
             for m in re.findall(r"^\| `([^`]+)` \| ([\d,]+) \| `([0-9a-f]{32})` \|", readme, re.MULTILINE)}
    assert set(table) == set(MANIFEST["files"]) | {"fixtures_manifest.json"}
    for name, entry in MANIFEST["files"].items():
        data = (DATA / name).read_bytes()
        assert len(data) == entry["bytes"] == table[name][0], name
        assert hashlib.md5(data).hexdigest() == entry["md5"] == table[name][1], name
    data = (DATA / "fixtures_manifest.json").read_bytes()
    assert (len(data), hashlib.md5(data).hexdigest()) == table["fixtures_manifest.json"]
    for fixture in FIXTURES:
        for suffix in [*LAYOUTS, "npz"]:
            assert f"{fixture}.{suffix}" in MANIFEST["files"]
    assert sum(e["bytes"] for n, e in MANIFEST["files"].items() if n.split(".")[0] in FIXTURES) < 1_700_000


@pytest.mark.parametrize("fixture", list(FIXTURES))
def test_three_layouts_hold_the_same_arrays(fixture):
    layers = weighted_layers(fixture)
    keras2 = read_legacy(DATA / f"{fixture}.keras2.h5")
    keras3 = read_legacy(DATA / f"{fixture}.keras3_legacy.h5")
    native = read_native(DATA / f"{fixture}.weights.h5")
    assert [r["name"] for r in layers] == [e[0] for e in keras2] == [e[0] for e in keras3]
    assert set(native) == {r["name"] for r in layers}
    seen = {}
    for rec, (_, names2, arrays2), (_, names3, arrays3) in zip(layers, keras2, keras3):
        name, cls = rec["name"], rec["class"]
        key, arrays_n = native[name]
        # the k-th layer of a class is stored as <class>_k (k = 0 has no suffix)
        k = seen.get(cls, 0)
        seen[cls] = k + 1
        assert key == snake(cls) + (f"_{k}" if k else ""), (name, key)
        shapes = [tuple(s) for _, s in rec["weights"]]
        assert names3 == [f"{name}/{w}" for w, _ in rec["weights"]]
        keras2_names = [{"kernel": "depthwise_kernel"}.get(w, w) if cls == "DepthwiseConv2D" else w
                        for w, _ in rec["weights"]]
        assert names2 == [f"{name}/{w}:0" for w in keras2_names]
        for a2, a3, an, shape in zip(arrays2, arrays3, arrays_n, shapes, strict=True):
            assert a2.dtype == a3.dtype == an.dtype == np.float32
            assert a2.shape == a3.shape == an.shape == shape
            np.testing.assert_array_equal(a2, a3)
            np.testing.assert_array_equal(a3, an)
    with h5py.File(DATA / f"{fixture}.keras2.h5", "r") as f:
        assert _str(f.attrs["keras_version"]).startswith("2.")
    with h5py.File(DATA / f"{fixture}.keras3_legacy.h5", "r") as f:
        assert _str(f.attrs["keras_version"]).startswith("3.")


@pytest.mark.parametrize("fixture", list(FIXTURES))
def test_batchnorm_weights_are_non_trivial(fixture):
    """gamma (when present), beta and the moving statistics are not Keras' 1 / 0 defaults."""
    for name, names, arrays in read_legacy(DATA / f"{fixture}.keras3_legacy.h5"):
        by_kind = {n.split("/")[-1]: a for n, a in zip(names, arrays)}
        if "moving_variance" not in by_kind:
            continue
        assert set(by_kind) in ({"gamma", "beta", "moving_mean", "moving_variance"},
                                {"beta", "moving_mean", "moving_variance"})
        assert (by_kind["moving_variance"] > 0).all()
        for kind, default in (("gamma", 1.0), ("beta", 0.0), ("moving_mean", 0.0), ("moving_variance", 1.0)):
            if kind in by_kind:
                assert np.abs(by_kind[kind] - default).max() > 0.05, (name, kind)
    # InceptionV3's conv2d_bn has BatchNormalization(scale=False): no gamma
    if fixture.startswith("inception"):
        bns = [r for r in FIXTURES[fixture]["layers"] if r["class"] == "BatchNormalization"]
        assert bns and all([w for w, _ in r["weights"]] == ["beta", "moving_mean", "moving_variance"] for r in bns)


@pytest.mark.parametrize("fixture", list(FIXTURES))
def test_npz_matches_the_model(fixture):
    info = FIXTURES[fixture]
    data = np.load(DATA / f"{fixture}.npz")
    assert {k: list(data[k].shape) for k in data.files} == info["npz"]
    n = info["input"][0]
    assert data["x"].shape == tuple(info["input"]) and data["x_raw"].dtype == np.uint8
    raw = data["x_raw"].astype(np.float32)
    if info["preprocess"] in ("resnet50", "vgg19"):  # caffe: RGB -> BGR, minus the BGR means
        np.testing.assert_array_equal(data["x"], raw[..., ::-1] - np.float32([103.939, 116.779, 123.68]))
    else:  # tf: to [-1, 1]
        np.testing.assert_allclose(data["x"], raw / 127.5 - 1, atol=1e-6)
        assert data["x"].min() >= -1 and data["x"].max() <= 1
    by_name = {r["name"]: r for r in info["layers"]}
    out = info["output"]
    for mode in ("inference", "training"):
        for key in data.files:
            prefix, _, rest = key.partition(".")
            if prefix != mode or rest in ("loss",) or "." in rest:
                continue
            assert data[key].shape == (n, *by_name[rest]["output_shape"][1:]), key
        y = data[f"{mode}.{out}"].astype(np.float64)
        loss = (y * data["loss_weights"]).sum()
        np.testing.assert_allclose(data[f"{mode}.loss"], loss, rtol=1e-5, atol=1e-5 * np.abs(y).sum())
        for rec in info["layers"]:
            for w, shape in rec["weights"][:rec["trainable_weights"]]:
                assert data[f"{mode}.grad.{rec['name']}.{w}"].shape == tuple(shape)
                assert np.abs(data[f"{mode}.grad.{rec['name']}.{w}"]).max() > 0
    # the two BatchNorm modes give different outputs, and the training call moved the statistics
    assert np.abs(data[f"inference.{out}"] - data[f"training.{out}"]).max() > 1e-3
    initial = {name: dict(zip([w.split("/")[-1] for w in names], arrays))
               for name, names, arrays in read_legacy(DATA / f"{fixture}.keras3_legacy.h5")}
    for rec in info["layers"]:
        if rec["class"] != "BatchNormalization":
            continue
        for stat in ("moving_mean", "moving_variance"):
            after, before = data[f"training.{stat}.{rec['name']}"], initial[rec["name"]][stat]
            assert after.shape == before.shape == (rec["output_shape"][-1],)
            assert not np.array_equal(after, before)


def test_keras_reload_was_exact():
    for fixture, info in FIXTURES.items():
        assert set(info["keras3_reload_max_abs_diff"]) == set(LAYOUTS)
        assert all(d == 0.0 for d in info["keras3_reload_max_abs_diff"].values()), fixture
        assert info["tf_keras_vs_keras3_inference_rel"] < 1e-5


@pytest.mark.parametrize("stem", FULL)
def test_full_manifest_is_consistent(stem):
    m = json.loads((DATA / f"manifest_{stem}.json").read_text())
    layers = m["layers"]
    names = [r["name"] for r in layers]
    assert len(names) == len(set(names)) == m["include_top"]["layers"]
    earlier = set()
    for r in layers:
        assert all(i in earlier for i in r["inbound"]), r["name"]
        earlier.add(r["name"])
        if r["class"] == "BatchNormalization":
            expected = ["gamma"] * r["config"]["scale"] + ["beta"] * r["config"]["center"]
            expected += ["moving_mean", "moving_variance"]
            assert [w for w, _ in r["weights"]] == expected
            assert r["config"]["momentum"] == m["batchnorm"]["momentum"]
            assert r["config"]["epsilon"] == m["batchnorm"]["epsilon"]
            assert r["trainable_weights"] == len(expected) - 2
    count = [sum(prod(s) for _, s in r["weights"]) for r in layers]
    assert sum(count) == m["include_top"]["count_params"]
    assert sum(count[: m["notop"]["layers"]]) == m["notop"]["count_params"]
    # the parameter counts Keras' documentation gives for these models
    documented = {
        "vgg19": 143_667_240,
        "resnet50": 25_636_712,
        "inception_v3": 23_851_784,
        "mobilenet_v2_1.0_224": 3_538_984,
    }
    if stem in documented:
        assert m["include_top"]["count_params"] == documented[stem]
    assert layers[-1]["name"] == "predictions" and layers[-1]["output_shape"] == [None, 1000]


def test_weight_file_table():
    t = json.loads((DATA / "keras_weight_files.json").read_text())
    files = t["files"]
    for key in ("vgg19", "resnet50", "inception_v3", "mobilenet_v2"):
        top, notop = t["aliases"].get(key, key), t["aliases"].get(key + "-notop", key + "-notop")
        assert files[top]["include_top"] is True and files[notop]["include_top"] is False
    grid = [k for k, e in files.items() if e["model"] == "MobileNetV2"]
    assert len(grid) == len(t["mobilenet_v2_grid"]["alpha"]) * len(t["mobilenet_v2_grid"]["rows"]) * 2 == 60
    for key, e in files.items():
        assert e["url"].startswith("https://") and e["url"].rsplit("/", 1)[1] == e["file"], key
        assert e["bytes"] is None
        if e["model"] == "MobileNetV2":
            assert e["md5"] is None
        else:
            assert re.fullmatch(r"[0-9a-f]{32}", e["md5"]), key
    assert {k: v["preprocess_input_mode"] for k, v in t["models"].items()} == {
        "vgg19": "caffe",
        "resnet50": "caffe",
        "inception_v3": "tf",
        "mobilenet_v2": "tf",
    }


def _conv_numpy(x, kernel, bias, strides, padding):
    """Plain float64 NHWC cross-correlation; 'same' pads as Keras does (the extra row/column at the bottom/right)."""
    kh, kw = kernel.shape[:2]
    sh, sw = strides
    if padding == "same":
        pads = []
        for size, k, s in ((x.shape[1], kh, sh), (x.shape[2], kw, sw)):
            total = max((-(-size // s) - 1) * s + k - size, 0)
            pads.append((total // 2, total - total // 2))
        x = np.pad(x, ((0, 0), *pads, (0, 0)))
    windows = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(1, 2))[:, ::sh, ::sw]
    y = np.einsum("nhwcij,ijco->nhwo", windows, kernel)
    return y + bias if bias is not None else y


@pytest.mark.parametrize("fixture", list(FIXTURES))
def test_first_batchnorm_matches_a_numpy_reference(fixture):
    """input (-> ZeroPadding2D) -> Conv2D -> first BatchNormalization, recomputed in float64 from
    the weight file, against Keras' stored outputs in both modes and its moving-statistics update."""
    info = FIXTURES[fixture]
    by_name = {r["name"]: r for r in info["layers"]}
    bn = next(r for r in info["layers"] if r["class"] == "BatchNormalization")
    conv = by_name[bn["inbound"][0]]
    source = by_name[conv["inbound"][0]]
    assert conv["class"] == "Conv2D"
    weights = {
        name: dict(zip([w.split("/")[-1] for w in names], arrays))
        for name, names, arrays in read_legacy(DATA / f"{fixture}.keras3_legacy.h5")
    }
    data = np.load(DATA / f"{fixture}.npz")
    x = data["x"].astype(np.float64)
    if source["class"] == "ZeroPadding2D":
        x = np.pad(x, ((0, 0), *source["config"]["padding"], (0, 0)))
    else:
        assert source["class"] == "InputLayer"
    cfg = conv["config"]
    w = weights[conv["name"]]
    z = _conv_numpy(x, w["kernel"].astype(np.float64), w.get("bias"), cfg["strides"], cfg["padding"])
    b = {k: v.astype(np.float64) for k, v in weights[bn["name"]].items()}
    gamma = b.get("gamma", 1.0)
    eps, momentum = bn["config"]["epsilon"], bn["config"]["momentum"]
    mean, var = z.mean(axis=(0, 1, 2)), z.var(axis=(0, 1, 2))  # biased variance, as Keras
    expected = {
        "inference": (z - b["moving_mean"]) / np.sqrt(b["moving_variance"] + eps) * gamma + b["beta"],
        "training": (z - mean) / np.sqrt(var + eps) * gamma + b["beta"],
    }
    for mode, ref in expected.items():
        got = data[f"{mode}.{bn['name']}"]
        assert got.shape == ref.shape
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    np.testing.assert_allclose(
        data[f"training.moving_mean.{bn['name']}"],
        b["moving_mean"] * momentum + mean * (1 - momentum),
        rtol=1e-5,
        atol=1e-6,
    )
    np.testing.assert_allclose(
        data[f"training.moving_variance.{bn['name']}"],
        b["moving_variance"] * momentum + var * (1 - momentum),
        rtol=1e-5,
        atol=1e-6,
    )
