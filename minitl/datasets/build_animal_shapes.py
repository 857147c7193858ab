"""Rebuild animal_shapes.npz from the `animal-shape-mnist` wheel (PyPI, MIT license).

    pip download --no-deps animal-shape-mnist==0.39
    python -m minitl.datasets.build_animal_shapes animal_shape_mnist-0.39-py3-none-any.whl

The argument is the wheel, or an installed `animal_shape_mnist` package folder
(or the site-packages folder that holds it).

The package stores each array as a gzipped pickle of one NumPy array. This
script never unpickles: it walks the pickle's opcodes with `pickletools`, checks
that they describe a plain C-order array, and takes the raw bytes.

The npz is written with fixed zip timestamps and attributes, so the same input
gives the same bytes (given the same zlib). The sha256 of each array's bytes is
printed as well; it does not depend on compression.
"""

import argparse
import base64
import gzip
import hashlib
import io
import os
import pickletools
import sys
import zipfile

import numpy as np

from minitl.files import file_digest

# The label order was checked against the pictures (see README.md).
CLASS_NAMES = ["bear", "bird", "cat", "cow", "dog",
               "elephant", "giraffe", "horse", "sheep", "zebra"]

PACKAGE = "animal_shape_mnist"
DATA_DIR = "animal_shape_mnist/data/Animal Shape"
IMAGES_FILE = "animal_data_version_3.gz"
LABELS_FILE = "animal_label_version_3.gz"

_TUPLE_OPS = {"TUPLE1": 1, "TUPLE2": 2, "TUPLE3": 3, "EMPTY_TUPLE": 0}
_INT_OPS = {"BININT", "BININT1", "BININT2", "LONG1", "INT"}
_BYTES_OPS = {"BINBYTES", "BINBYTES8", "SHORT_BINBYTES", "BYTEARRAY8"}


def read_pickled_array(data):
    """Return the ndarray that a pickle of one plain ndarray describes, without unpickling.

    Expects the layout `ndarray.__reduce__` produces with pickle protocol 4:
    _reconstruct(ndarray, (0,), b'b') then __setstate__((1, shape, dtype, fortran, bytes)).
    """
    ops = [(op.name, arg) for op, arg, _ in pickletools.genops(data)]
    strings = [arg for name, arg in ops if isinstance(arg, str)]
    if strings[:2] not in (["numpy.core.multiarray", "_reconstruct"],
                           ["numpy._core.multiarray", "_reconstruct"]) \
            or strings[2:4] != ["numpy", "ndarray"] or "dtype" not in strings:
        raise ValueError("not a pickled numpy.ndarray")
    k = strings.index("dtype")
    typestr, order = strings[k + 1], strings[k + 2]
    if order not in ("<", ">", "|"):
        raise ValueError(f"unexpected byte order {order!r}")

    # The state tuple opens with MARK, version 1, then the shape tuple.
    first_reduce = next(i for i, (name, _) in enumerate(ops) if name == "REDUCE")
    i = next(i for i in range(first_reduce, len(ops)) if ops[i][0] == "MARK") + 1
    if ops[i][0] not in _INT_OPS or ops[i][1] != 1:
        raise ValueError("unexpected ndarray state version")
    i += 1
    shape = []
    if ops[i][0] == "MARK":                       # ndim > 3: MARK ints TUPLE
        i += 1
        while ops[i][0] in _INT_OPS:
            shape.append(ops[i][1])
            i += 1
        if ops[i][0] != "TUPLE":
            raise ValueError("cannot read the array shape")
    else:
        while ops[i][0] in _INT_OPS:
            shape.append(ops[i][1])
            i += 1
        if _TUPLE_OPS.get(ops[i][0]) != len(shape):
            raise ValueError("cannot read the array shape")

    dtype = np.dtype(typestr if order == "|" else order + typestr)
    # After the dtype's BUILD: the fortran flag, then the raw buffer.
    i = next(j for j in range(i, len(ops)) if ops[j][0] == "BUILD") + 1
    if ops[i][0] != "NEWFALSE":
        raise ValueError("only C-order arrays are supported")
    name, payload = ops[i + 1]
    size = int(np.prod(shape)) * dtype.itemsize
    if name not in _BYTES_OPS or len(payload) != size:
        raise ValueError(f"expected a {size}-byte array buffer")
    return np.frombuffer(bytes(payload), dtype=dtype).reshape(shape).copy()


def _record_hashes(wheel):
    """{path: urlsafe-b64 sha256} from the wheel's RECORD, or {} if it has none."""
    names = [n for n in wheel.namelist() if n.endswith(".dist-info/RECORD")]
    if not names:
        return {}
    hashes = {}
    for line in wheel.read(names[0]).decode().splitlines():
        parts = line.rsplit(",", 2)
        if len(parts) == 3 and parts[1].startswith("sha256="):
            hashes[parts[0]] = parts[1][len("sha256="):]
    return hashes


def read_source(source):
    """(images gz bytes, labels gz bytes, version) from a wheel or an installed package."""
    if os.path.isfile(source):
        with zipfile.ZipFile(source) as wheel:
            hashes = _record_hashes(wheel)
            blobs = []
            for name in (IMAGES_FILE, LABELS_FILE):
                path = f"{DATA_DIR}/{name}"
                blob = wheel.read(path)
                if path in hashes:
                    digest = base64.urlsafe_b64encode(hashlib.sha256(blob).digest()).rstrip(b"=")
                    if digest.decode() != hashes[path]:
                        raise ValueError(f"{path} does not match the wheel's RECORD")
                blobs.append(blob)
            meta = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
            version = _version(wheel.read(meta[0]).decode()) if meta else "unknown"
        return blobs[0], blobs[1], version
    folder = source
    if os.path.isdir(os.path.join(folder, PACKAGE)):
        folder = os.path.join(folder, PACKAGE)
    data_dir = os.path.join(folder, "data", "Animal Shape")
    blobs = []
    for name in (IMAGES_FILE, LABELS_FILE):
        with open(os.path.join(data_dir, name), "rb") as f:
            blobs.append(f.read())
    return blobs[0], blobs[1], "unknown"


def _version(metadata):
    for line in metadata.splitlines():
        if line.startswith("Version:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def convert(images_gz, labels_gz):
    """Check the arrays and return {'images', 'labels', 'class_names'} for the npz."""
    images = read_pickled_array(gzip.decompress(images_gz))
    labels = read_pickled_array(gzip.decompress(labels_gz))
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(f"unexpected images {images.dtype} {images.shape}")
    if labels.shape != (len(images),) or labels.min() < 0 or labels.max() >= len(CLASS_NAMES):
        raise ValueError(f"unexpected labels {labels.dtype} {labels.shape}")
    return {
        "images": np.ascontiguousarray(images),
        "labels": labels.astype(np.uint8),
        "class_names": np.array(CLASS_NAMES, dtype=f"<U{max(map(len, CLASS_NAMES))}"),
    }


def save_npz(path, arrays):
    """np.savez_compressed, with fixed zip metadata so the bytes are reproducible."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for key, value in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, value, allow_pickle=False)
            info = zipfile.ZipInfo(key + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue())


def array_hashes(arrays):
    """sha256 of each array's raw C-order bytes (independent of compression)."""
    return {k: hashlib.sha256(np.ascontiguousarray(v).tobytes()).hexdigest()
            for k, v in arrays.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="animal_shape_mnist wheel, or installed package folder")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "animal_shapes.npz"))
    args = parser.parse_args(argv)

    images_gz, labels_gz, version = read_source(args.source)
    arrays = convert(images_gz, labels_gz)
    save_npz(args.out, arrays)
    print(f"source version: {version}")
    print(f"wrote {args.out}: {os.path.getsize(args.out)} bytes")
    print(f"file sha256: {file_digest(args.out)}")
    for key, digest in array_hashes(arrays).items():
        print(f"{key} sha256: {digest}")
    counts = np.bincount(arrays["labels"], minlength=len(CLASS_NAMES))
    print("per class:", dict(zip(CLASS_NAMES, counts.tolist())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
