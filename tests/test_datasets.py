"""minitl.datasets: the shipped animal shapes file and the script that rebuilds it."""

import base64
import gzip
import hashlib
import os
import pickle
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from minitl import datasets
from minitl.datasets import build_animal_shapes as build
from minitl.errors import DataError


def test_load_animal_shapes():
    images, labels, class_names = datasets.load_animal_shapes()
    assert images.dtype == np.uint8 and images.shape == (10000, 28, 28)
    assert labels.dtype == np.int64 and labels.shape == (10000,)
    assert class_names == ["bear", "bird", "cat", "cow", "dog",
                           "elephant", "giraffe", "horse", "sheep", "zebra"]
    assert np.bincount(labels).tolist() == [1000] * 10
    assert images.max() == 255 and images.min() == 0


def test_shipped_file_is_small_and_has_no_objects():
    with np.load(datasets.ANIMAL_SHAPES_PATH, allow_pickle=False) as data:
        assert sorted(data.files) == ["class_names", "images", "labels"]
        assert all(data[k].dtype != object for k in data.files)
    assert datasets.ANIMAL_SHAPES_PATH.endswith(".npz")
    assert 1_000_000 < os.path.getsize(datasets.ANIMAL_SHAPES_PATH) < 5_000_000


def test_corrupt_or_missing_copy_raises(tmp_path):
    copy = tmp_path / "animal_shapes.npz"
    shutil.copy(datasets.ANIMAL_SHAPES_PATH, copy)
    datasets.load_animal_shapes(copy)                  # an intact copy loads
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    with pytest.raises(DataError, match="corrupt"):
        datasets.load_animal_shapes(copy)
    with pytest.raises(DataError, match="not found"):
        datasets.load_animal_shapes(tmp_path / "gone.npz")


def test_default_path_is_checked(tmp_path, monkeypatch):
    truncated = tmp_path / "short.npz"
    truncated.write_bytes(Path(datasets.ANIMAL_SHAPES_PATH).read_bytes()[:1000])
    monkeypatch.setattr(datasets, "ANIMAL_SHAPES_PATH", str(truncated))
    with pytest.raises(DataError, match="short.npz"):
        datasets.load_animal_shapes()


# pickle.dumps only makes test input for the opcode reader; nothing here is unpickled.

@pytest.mark.parametrize("array", [
    np.arange(6, dtype=">i4").reshape(2, 3),
    np.arange(5, dtype=np.uint8),
    np.arange(120, dtype=np.float32).reshape(2, 3, 4, 5),
    np.arange(300, dtype=np.int64),
    np.zeros((0, 3)),
])
def test_read_pickled_array(array):
    out = build.read_pickled_array(pickle.dumps(array, protocol=4))
    assert out.dtype == array.dtype and out.shape == array.shape
    np.testing.assert_array_equal(out, array)


def test_read_pickled_array_rejects_other_pickles():
    with pytest.raises(ValueError, match="C-order"):
        build.read_pickled_array(pickle.dumps(np.asfortranarray(np.ones((2, 3))), protocol=4))
    with pytest.raises(ValueError, match="ndarray"):
        build.read_pickled_array(pickle.dumps({"a": 1}, protocol=4))


def fake_wheel(path, images, labels, tamper=False):
    """A wheel laid out like animal_shape_mnist's, with RECORD hashes."""
    files = {
        f"{build.DATA_DIR}/{build.IMAGES_FILE}": gzip.compress(pickle.dumps(images, protocol=4), mtime=0),
        f"{build.DATA_DIR}/{build.LABELS_FILE}": gzip.compress(pickle.dumps(labels, protocol=4), mtime=0),
        "animal_shape_mnist-0.39.dist-info/METADATA": b"Name: animal_shape_mnist\nVersion: 0.39\n",
    }
    record = []
    for name, blob in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(blob).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(blob)}")
    if tamper:
        files[f"{build.DATA_DIR}/{build.LABELS_FILE}"] = gzip.compress(b"other", mtime=0)
    files["animal_shape_mnist-0.39.dist-info/RECORD"] = "\n".join(record).encode()
    with zipfile.ZipFile(path, "w") as zf:
        for name, blob in files.items():
            zf.writestr(name, blob)


def test_build_script_is_reproducible(tmp_path, capsys):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (20, 28, 28), dtype=np.uint8)
    labels = np.arange(20, dtype=np.int64) % 10
    fake_wheel(tmp_path / "w.whl", images, labels)
    build.main([str(tmp_path / "w.whl"), "--out", str(tmp_path / "a.npz")])
    build.main([str(tmp_path / "w.whl"), "--out", str(tmp_path / "b.npz")])
    assert "source version: 0.39" in capsys.readouterr().out
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    with np.load(tmp_path / "a.npz", allow_pickle=False) as data:
        np.testing.assert_array_equal(data["images"], images)
        np.testing.assert_array_equal(data["labels"], labels)
        assert data["labels"].dtype == np.uint8
        assert data["class_names"].tolist() == build.CLASS_NAMES


def test_build_script_checks_record(tmp_path):
    images = np.zeros((10, 28, 28), np.uint8)
    fake_wheel(tmp_path / "w.whl", images, np.arange(10), tamper=True)
    with pytest.raises(ValueError, match="RECORD"):
        build.main([str(tmp_path / "w.whl"), "--out", str(tmp_path / "a.npz")])


def test_shipped_arrays_match_readme_hashes():
    """The array hashes in README.md, which do not depend on zlib."""
    with np.load(datasets.ANIMAL_SHAPES_PATH, allow_pickle=False) as data:
        arrays = {k: data[k] for k in ("images", "labels", "class_names")}
    hashes = build.array_hashes(arrays)
    assert hashes["images"] == "3d1bb93498a7f7cb5a4c0d5dc57d57d78adc2ac1722398921542a7515172c46f"
    assert hashes["labels"] == "a054c239a40ee7f2a5745e7e4bc11a51e9cb40c98134b602c1068e6a207487c6"
