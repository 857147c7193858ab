"""Weight files built to break the reader: every one is a WeightsError naming the file and
the layer or dataset, found before anything is read or assigned, and the model is unchanged."""

import os
import shutil
import tracemalloc
import zlib

import h5py
import numpy as np
import pytest
from keras_fixtures import fixture

from minitl import nn
from minitl.errors import WeightsError
from minitl.io import load_weights, read_keras_weights, save_weights

KERNEL = "fc1/fc1/kernel:0"  # where save_weights puts fc1's kernel (3, 4)


def small_model(seed=0, layers=("fc1", "out")):
    nn.manual_seed(seed)
    dense = [nn.Dense(4, input_dim=3, name=layers[0])]
    dense += [nn.Dense(4 if i < len(layers) - 2 else 2, name=name) for i, name in enumerate(layers[1:])]
    return nn.Sequential(dense, input_shape=(3,))


def snapshot(model):
    return [np.array(p.data, copy=True) for layer in model.layers() for p in layer.weights]


def saved(tmp_path, name="w.h5", **kw):
    path = tmp_path / name
    save_weights(small_model(seed=1, **kw), path)
    return path


def replace(path, key, **dataset):
    with h5py.File(path, "r+") as f:
        del f[key]
        f.create_dataset(key, **dataset)


def refused(model, path, *fragments, **kw):
    """Load, expect a WeightsError naming the file and every fragment; the model must be unchanged."""
    before = snapshot(model)
    with pytest.raises(WeightsError) as err:
        load_weights(model, path, **kw)
    msg = str(err.value)
    assert str(path) in msg, msg
    for fragment in fragments:
        assert fragment in msg, f"{fragment!r} not in {msg!r}"
    assert all(np.array_equal(a, b) for a, b in zip(before, snapshot(model)))
    return msg


# ---------------------------------------------------------------- dtypes

COMPOUND = np.dtype([("re", "f4"), ("im", "f4")])
ENUM = h5py.enum_dtype({"A": 0, "B": 1}, basetype="i1")


@pytest.mark.parametrize("data, dtype, named", [
    (np.zeros((3, 4), COMPOUND), None, "('re', '<f4')"),
    (np.zeros((3, 4), "V4"), None, "|V4"),
    (np.zeros((3, 4), "S4"), None, "string"),
    (np.full((3, 4), "1.5", object), h5py.string_dtype(), "string"),
    (None, h5py.ref_dtype, "object reference"),
    (np.zeros((3, 4), np.complex64), None, "complex64"),
    (np.ones((3, 4), bool), None, "bool"),
    (np.zeros((3, 4), "i1"), ENUM, "enum"),
    (None, h5py.vlen_dtype("f4"), "variable-length"),
])
def test_non_numeric_dtypes_are_refused_by_name(tmp_path, data, dtype, named):
    path = saved(tmp_path)
    if data is None:
        replace(path, KERNEL, shape=(3, 4), dtype=dtype)
    else:
        replace(path, KERNEL, data=data, dtype=dtype)
    refused(small_model(), path, "layer 'fc1'", f"dataset '{KERNEL[4:]}'", "not real numbers", named)
    with pytest.raises(WeightsError, match="not real numbers"):
        read_keras_weights(path)


def test_integer_and_float64_datasets_are_cast_to_the_parameter_dtype(tmp_path):
    path = saved(tmp_path)
    replace(path, KERNEL, data=np.arange(12, dtype=np.int16).reshape(3, 4))
    replace(path, "out/out/bias:0", data=np.array([0.25, -1.5], dtype=">f8"))
    model = small_model()
    report = load_weights(model, path)
    assert report.loaded == ["fc1", "out"] and report.untouched == []
    kernel, bias = model.get_layer("fc1").weights[0].data, model.get_layer("out").weights[1].data
    assert kernel.dtype == np.float32 and np.array_equal(kernel, np.arange(12).reshape(3, 4))
    assert bias.dtype == np.float32 and np.array_equal(bias, [0.25, -1.5])


# ---------------------------------------------------------------- declared sizes

@pytest.mark.parametrize("shape", [(2**16, 2**16), (2**20, 2**20, 16)])  # 16 GiB and 64 TiB of float32
def test_huge_declared_shape_is_refused_from_metadata(tmp_path, shape):
    path = saved(tmp_path)
    replace(path, KERNEL, shape=shape, dtype="f4", chunks=True)  # no chunk written: a tiny file
    tracemalloc.start()
    try:
        msg = refused(small_model(), path, "layer 'fc1'", str(shape), "chunks")
        with pytest.raises(WeightsError, match="chunks"):
            read_keras_weights(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20, (peak, msg)


def test_a_fully_stored_dataset_of_the_wrong_shape_is_never_read(tmp_path):
    # 1 GiB of float32 zeros that the file really holds, compressed to a few hundred kB.
    path = saved(tmp_path)
    with h5py.File(path, "r+") as f:
        del f[KERNEL]
        ds = f.create_dataset(KERNEL, shape=(2**14, 2**14), dtype="f4", chunks=(2**10, 2**10),
                              compression="gzip")
        chunk = zlib.compress(bytes(4 * 2**20))
        for i in range(16):
            for j in range(16):
                ds.id.write_direct_chunk((i * 2**10, j * 2**10), chunk)
    tracemalloc.start()
    try:
        refused(small_model(), path, "layer 'fc1'", "model expects shape (3, 4), file has (16384, 16384)")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20, peak


def test_contiguous_dataset_never_written_is_refused(tmp_path):
    path = saved(tmp_path)
    replace(path, KERNEL, shape=(3, 4), dtype="f4")  # allocated late, so never: reads as fill value
    refused(small_model(), path, "layer 'fc1'", "holds 0 bytes")


def test_null_dataspace_is_refused(tmp_path):
    path = saved(tmp_path)
    replace(path, KERNEL, data=h5py.Empty("f4"))
    refused(small_model(), path, "layer 'fc1'", "no dataspace")


# ---------------------------------------------------------------- values

@pytest.mark.parametrize("key, value, count", [
    (KERNEL, np.nan, "(1 NaN, 0 infinite)"),
    ("out/out/bias:0", np.inf, "(0 NaN, 1 infinite)"),
    ("out/out/bias:0", -np.inf, "(0 NaN, 1 infinite)"),
    (KERNEL, 1e300, "values as float32 (0 NaN, 1 infinite)"),  # finite in float64, not in float32
])
def test_non_finite_weights_are_refused_with_the_layer(tmp_path, key, value, count):
    path = saved(tmp_path)
    with h5py.File(path, "r") as f:
        data = f[key][()].astype(np.float64)
    data.flat[1] = value
    replace(path, key, data=data)
    layer = key.split("/")[0]
    refused(small_model(), path, f"layer '{layer}'", f"dataset '{key.split('/', 1)[1]}'", count)


# ---------------------------------------------------------------- partial loads

def test_renamed_weight_names_attribute_is_a_missing_layer(tmp_path):
    path = saved(tmp_path)
    with h5py.File(path, "r+") as f:  # one flipped byte in the attribute's name
        f["fc1"].attrs["weight_nameS"] = f["fc1"].attrs["weight_names"]
        del f["fc1"].attrs["weight_names"]
    model = small_model()
    refused(model, path, "no weights for 1 of the model's 2 layers", "fc1")
    report = load_weights(model, path, strict=False)
    assert report.loaded == ["out"] and report.untouched == ["fc1"]


def test_empty_layer_names_and_a_deleted_group(tmp_path):
    path = saved(tmp_path)
    with h5py.File(path, "r+") as f:
        f.attrs["layer_names"] = np.array([b"fc1"])
        del f["out"]
    refused(small_model(), path, "no weights for 1 of the model's 2 layers", "out")
    with h5py.File(path, "r+") as f:
        f.attrs["layer_names"] = np.array([], dtype="S1")
    refused(small_model(), path, "no weights for 2 of the model's 2 layers", "fc1\n  out")
    report = load_weights(small_model(), path, strict=False)
    assert report.loaded == [] and report.untouched == ["fc1", "out"]


def test_many_missing_layers_are_listed_briefly(tmp_path):
    names = tuple(f"dense{i}" for i in range(12))
    path = saved(tmp_path, layers=names)
    with h5py.File(path, "r+") as f:
        f.attrs["layer_names"] = np.array([b"dense0"])
    msg = refused(small_model(layers=names), path, "no weights for 11 of the model's 12", "... and 4 more")
    assert "dense7" in msg and "dense8" not in msg


# ---------------------------------------------------------------- links

def test_external_link_to_another_weights_file_is_refused(tmp_path):
    path = saved(tmp_path)
    other = saved(tmp_path, "other.h5")
    with h5py.File(path, "r+") as f:
        del f[KERNEL]
        f[KERNEL] = h5py.ExternalLink(str(other), "/" + KERNEL)
    refused(small_model(), path, "layer 'fc1': dataset 'fc1/kernel:0'", "external link", str(other))
    with pytest.raises(WeightsError, match="external link"):
        read_keras_weights(path)


def test_external_link_as_a_layer_group_is_refused(tmp_path):
    path = saved(tmp_path)
    with h5py.File(path, "r+") as f:
        del f["fc1"]
        f["fc1"] = h5py.ExternalLink("/dev/zero", "/fc1")
    refused(small_model(), path, "layer 'fc1': '/fc1' is an external link to /dev/zero")


def test_soft_link_inside_the_file_is_followed(tmp_path):
    path = saved(tmp_path)
    with h5py.File(path, "r+") as f:
        f["spare"] = np.full((3, 4), 7, np.float32)
        del f[KERNEL]
        f[KERNEL] = h5py.SoftLink("/spare")
    model = small_model()
    load_weights(model, path)
    assert np.array_equal(model.get_layer("fc1").weights[0].data, np.full((3, 4), 7))


def test_soft_link_through_an_external_link_is_refused(tmp_path):
    path = saved(tmp_path)
    other = saved(tmp_path, "other.h5")
    with h5py.File(path, "r+") as f:
        f["elsewhere"] = h5py.ExternalLink(str(other), "/fc1")
        del f[KERNEL]
        f[KERNEL] = h5py.SoftLink("/elsewhere/fc1/kernel:0")
    refused(small_model(), path, "dataset 'fc1/kernel:0': '/elsewhere' is an external link")


def test_soft_link_loop_and_dangling_soft_link(tmp_path):
    path = saved(tmp_path)
    with h5py.File(path, "r+") as f:
        del f[KERNEL]
        f[KERNEL] = h5py.SoftLink("/loop")
        f["loop"] = h5py.SoftLink("/" + KERNEL)
    refused(small_model(), path, "soft links nested more than 16 deep")
    with h5py.File(path, "r+") as f:
        del f["loop"]
    refused(small_model(), path, "layer 'fc1'", "'fc1/kernel:0' is missing")


def test_virtual_dataset_and_external_raw_storage_are_refused(tmp_path):
    path = saved(tmp_path)
    other = saved(tmp_path, "other.h5")
    layout = h5py.VirtualLayout(shape=(3, 4), dtype="f4")
    layout[:] = h5py.VirtualSource(str(other), "/" + KERNEL, shape=(3, 4))
    with h5py.File(path, "r+") as f:
        del f[KERNEL]
        f.create_virtual_dataset(KERNEL, layout)
    refused(small_model(), path, "layer 'fc1'", "virtual dataset")
    raw = tmp_path / "raw.bin"
    raw.write_bytes(np.ones((3, 4), np.float32).tobytes())
    replace(path, KERNEL, shape=(3, 4), dtype="f4", external=[(str(raw), 0, 48)])
    refused(small_model(), path, "layer 'fc1'", "external file(s)", str(raw))


def test_group_loop_in_a_native_file_is_an_error(tmp_path):
    path = tmp_path / "loop.weights.h5"
    shutil.copy(fixture("vgg16mini_notop_32", "weights.h5"), path)
    with h5py.File(path, "r+") as f:
        f["layers/conv2d/inner"] = f["layers"]  # a hard link to an ancestor
    with pytest.raises(WeightsError, match="nested more than 32 deep"):
        read_keras_weights(path)


@pytest.mark.parametrize("value", [np.array([1, 2]), np.array([b"\xff\xfe"])])
def test_weight_names_that_are_not_text(tmp_path, value):
    path = saved(tmp_path)
    with h5py.File(path, "r+") as f:
        f["fc1"].attrs["weight_names"] = value
    refused(small_model(), path, "attribute 'weight_names' of '/fc1'")


def test_a_layer_listed_twice_is_ambiguous(tmp_path):
    path = saved(tmp_path)
    with h5py.File(path, "r+") as f:
        f.attrs["layer_names"] = np.array([b"fc1", b"out", b"fc1"])
    refused(small_model(), path, "two layers named 'fc1'")


def test_corrupt_compressed_chunk_names_the_dataset(tmp_path):
    path = saved(tmp_path)
    with h5py.File(path, "r+") as f:
        del f[KERNEL]
        ds = f.create_dataset(KERNEL, shape=(3, 4), dtype="f4", chunks=(3, 4), compression="gzip")
        ds.id.write_direct_chunk((0, 0), b"not deflate data at all")
    refused(small_model(), path, "layer 'fc1'", "cannot read dataset '/fc1/fc1/kernel:0'")
    with pytest.raises(WeightsError, match="fc1: cannot read dataset '/fc1/fc1/kernel:0'"):
        read_keras_weights(path)


def test_weights_path_that_is_a_fifo_or_a_device_is_not_opened(tmp_path):
    fifo = tmp_path / "w.h5"
    os.mkfifo(fifo)
    refused(small_model(), fifo, "not a file")
    if os.path.exists("/dev/zero"):
        os.symlink("/dev/zero", tmp_path / "zero.h5")
        refused(small_model(), tmp_path / "zero.h5", "not a file")
