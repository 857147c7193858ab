"""VGG16 preprocessing and ImageNet label decoding."""

import json
from pathlib import Path

import numpy as np
import pytest

from minitl.applications import imagenet_utils
from minitl.applications.vgg16 import decode_predictions, load_class_index, preprocess_input
from minitl.errors import DataError, ShapeError

DATA = Path(__file__).parent / "data"


def reference(name):
    with np.load(DATA / f"{name}.npz", allow_pickle=False) as z:
        return z["x_raw"], z["x"]


@pytest.mark.parametrize("name", ["vgg16mini_notop_32", "vgg16mini_top_64_c5"])
def test_preprocess_matches_keras_bit_for_bit(name):
    x_raw, x = reference(name)
    before = x_raw.copy()
    out = preprocess_input(x_raw)
    assert out.dtype == np.float32 and out.shape == x.shape
    assert np.array_equal(out, x)
    assert np.array_equal(x_raw, before)  # the input is left alone
    assert not np.shares_memory(out, x_raw)
    assert out.flags.c_contiguous


def test_preprocess_single_image_hwc():
    x_raw, x = reference("vgg16mini_notop_32")
    assert np.array_equal(preprocess_input(x_raw[1]), x[1])


def test_preprocess_dtypes():
    x_raw, x = reference("vgg16mini_notop_32")
    as_uint8 = preprocess_input(x_raw.astype(np.uint8))
    assert as_uint8.dtype == np.float32 and np.array_equal(as_uint8, x)
    x64 = x_raw.astype(np.float64)
    out64 = preprocess_input(x64)
    assert out64.dtype == np.float64
    assert np.array_equal(out64, x64[..., ::-1] - np.array([103.939, 116.779, 123.68]))
    assert np.allclose(out64, x, atol=1e-4)


def test_preprocess_channel_order():
    pixel = np.array([[[10.0, 20.0, 30.0]]], dtype=np.float32)  # R, G, B
    out = preprocess_input(pixel)[0, 0]
    expected = np.float32([30.0, 20.0, 10.0]) - np.float32([103.939, 116.779, 123.68])
    assert np.array_equal(out, expected)


@pytest.mark.parametrize("shape", [(32, 32), (2, 32, 32, 4), (3,), (2, 3, 32, 32)])
def test_preprocess_shape_errors(shape):
    with pytest.raises(ShapeError, match="channels-last"):
        preprocess_input(np.zeros(shape, dtype=np.float32))


def test_preprocess_rejects_non_numbers():
    with pytest.raises(ShapeError, match="dtype"):
        preprocess_input(np.full((2, 2, 3), "a"))


def synthetic_index():
    # Inserted in string order ("0", "1", "10", "100", ...) on purpose.
    return {str(i): [f"n{i:08d}", f"class_{i}"] for i in sorted(range(1000), key=str)}


def test_class_index_sorted_by_int():
    classes = load_class_index(synthetic_index())
    assert len(classes) == 1000
    assert classes[2] == ("n00000002", "class_2")
    assert classes[10] == ("n00000010", "class_10")
    assert classes[999] == ("n00000999", "class_999")


def test_decode_one_hot():
    probs = np.zeros((2, 1000), dtype=np.float32)
    probs[0, 10] = 1.0
    probs[1, 2] = 1.0
    out = decode_predictions(probs, top=1, class_index=synthetic_index())
    assert out == [[("n00000010", "class_10", 1.0)], [("n00000002", "class_2", 1.0)]]


def test_decode_top_k_order():
    rng = np.random.default_rng(3)
    probs = rng.random((3, 1000)).astype(np.float32)
    out = decode_predictions(probs, class_index=synthetic_index())
    assert [len(r) for r in out] == [5, 5, 5]
    for row, result in zip(probs, out):
        expected = np.argsort(row)[::-1][:5]
        assert [name for _, name, _ in result] == [f"class_{i}" for i in expected]
        scores = [p for _, _, p in result]
        assert scores == sorted(scores, reverse=True)
        assert scores[0] == float(row.max())
    assert len(decode_predictions(probs, top=1000, class_index=synthetic_index())[0]) == 1000


def test_decode_ties_keep_lower_index_first():
    probs = np.zeros((1, 1000))
    probs[0, [7, 3, 500]] = 0.25
    out = decode_predictions(probs, top=3, class_index=synthetic_index())
    assert [name for _, name, _ in out[0]] == ["class_3", "class_7", "class_500"]


@pytest.mark.parametrize("shape", [(1000,), (2, 999), (2, 1000, 1), (1, 1001)])
def test_decode_shape_errors(shape):
    with pytest.raises(ShapeError, match=r"\(N, 1000\)"):
        decode_predictions(np.zeros(shape), class_index=synthetic_index())


@pytest.mark.parametrize("top", [0, 1001, 2.5, True])
def test_decode_bad_top(top):
    with pytest.raises(ValueError, match="top"):
        decode_predictions(np.zeros((1, 1000)), top=top, class_index=synthetic_index())


def test_class_index_from_a_file(tmp_path):
    path = tmp_path / "index.json"
    path.write_text(json.dumps(synthetic_index()))
    out = decode_predictions(np.eye(1000)[[42]], top=1, class_index=path)
    assert out[0][0][:2] == ("n00000042", "class_42")


@pytest.mark.parametrize(
    "broken",
    [
        {str(i): ["n0", "x"] for i in range(999)},  # 999 classes
        {str(i): ["n0", "x"] for i in range(1, 1001)},  # no "0"
        {**{str(i): ["n0", "x"] for i in range(1000)}, "5": ["n0"]},  # bad value
        ["n0", "x"],  # neither a dict nor a path
    ],
)
def test_bad_class_index(broken):
    with pytest.raises(DataError, match="class"):
        decode_predictions(np.zeros((1, 1000)), class_index=broken)


def test_class_index_found_in_the_weights_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(imagenet_utils, "PACKAGED_CLASS_INDEX", tmp_path / "absent.json")
    monkeypatch.setenv("MINITL_HOME", str(tmp_path))
    with pytest.raises(DataError, match="imagenet-class-index"):
        load_class_index()
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "imagenet_class_index.json").write_text(json.dumps(synthetic_index()))
    assert load_class_index()[5] == ("n00000005", "class_5")
