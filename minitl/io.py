"""Keras HDF5 weight files: read, write, and load into / save from a model.

Three layouts are read (see docs of `read_keras_weights`):

- legacy `.h5` (Keras 1 as in the published VGG16 files, Keras 2 and 3),
  also inside a full-model file under `model_weights`;
- Keras 3 native `.weights.h5` (`layers/<class>[_k]/vars/0, 1, ...`).

The writer produces the Keras 2 legacy layout, which Keras 2 and Keras 3
`model.load_weights("x.h5")` both read.

Shapes follow Keras (channels last): conv kernel (kh, kw, cin, cout),
Dense kernel (in, out), bias (out,).
"""

from __future__ import annotations

import contextlib
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from minitl.backend import device_of, to_device, to_numpy
from minitl.errors import WeightsError
from minitl.files import write_h5

__all__ = [
    "KerasLayerWeights",
    "LoadReport",
    "keras_class_name",
    "load_weights",
    "read_keras_weights",
    "save_weights",
    "write_keras_weights",
]

# Keras splits an attribute larger than this into name0, name1, ...
HDF5_OBJECT_HEADER_LIMIT = 64512

# A load error lists at most this many problems (a file of another width has dozens).
MAX_LISTED = 8

# HDF5's own limit on soft links followed in one lookup (H5L_NUM_LINKS).
SOFT_LINK_DEPTH = 16

# Native files nest a model's layers a few groups deep; far deeper means a group loop.
MAX_NESTING = 32

# Written to the root of a legacy file. Keras readers compare keras_version
# only with "1" (Keras 1 files get converted); "tensorflow" means TF-style
# (channels-last) kernels, which is what minitl stores.
KERAS_VERSION = "2.15.0"
KERAS_BACKEND = "tensorflow"

# minitl layer classes whose Keras class name differs from their snake case.
KERAS_CLASS_NAMES = {
    "MaxPool2D": "max_pooling2d",
    "AvgPool2D": "average_pooling2d",
    "GlobalAvgPool2D": "global_average_pooling2d",
    "GlobalMaxPool2D": "global_max_pooling2d",
    "BatchNormalization": "batch_normalization",
    "DepthwiseConv2D": "depthwise_conv2d",
    "ZeroPadding2D": "zero_padding2d",
    "ReLU": "re_lu",
}

# The weight names Keras gives; a legacy file's name among these must be the one the model
# expects at that place (so that beta never lands in a gamma of the same shape). Keras 2 calls
# DepthwiseConv2D's kernel 'depthwise_kernel', Keras 3 'kernel'.
KERAS_WEIGHT_NAMES = {"kernel", "bias", "depthwise_kernel", "gamma", "beta", "moving_mean", "moving_variance"}
SAME_WEIGHT = {"depthwise_kernel": "kernel"}


@dataclass
class KerasLayerWeights:
    """The weights of one layer as stored in a file.

    Legacy layouts: `name` is the layer name, `class_name`, `index` and
    `stored_name` are None.

    Native `.weights.h5`: the layer name is not a key, so `name` is the group
    path under `layers/` (`"conv2d_1"`, or `"functional/conv2d_1"` in a nested
    model), `class_name` is the Keras snake class name (`"conv2d"`), `index`
    is k of `conv2d_k` (0 for `conv2d`), and `stored_name` is the real layer
    name from the `name` attribute when the file has it (recent Keras 3).
    Match these by order within each class: the k-th Conv2D of a model is
    `conv2d_k`.
    """

    name: str
    arrays: list
    weight_names: list = field(default_factory=list)
    class_name: str | None = None
    index: int | None = None
    stored_name: str | None = None

    @property
    def native(self) -> bool:
        return self.class_name is not None


# ---------------------------------------------------------------- reading


def read_keras_weights(path) -> list[KerasLayerWeights]:
    """Read every layer that has weights, in model order.

    Legacy files: the order of the root attribute `layer_names`, and within
    a layer the order of its `weight_names` (kernel, bias); never the key
    order. Layers with empty `weight_names` are left out, and so is the
    Keras 3 group `top_level_model_weights`. The group of a nested model
    (Keras saves `Sequential([vgg16_base, head])` as the groups `vgg16` and
    `head`) is split into one entry per layer that its weight names name
    (`block1_conv1/kernel`, `transfer/head/head_dense1/kernel`), in the file's
    order; Keras lists a nested model's trainable weights first, so after
    partial unfreezing that order is not the model's, and such files are best
    loaded by name.

    Native `.weights.h5` files: sorted by class name, then by the numeric
    suffix (`conv2d`, `conv2d_1`, ..., `conv2d_10`), then `dense`, ...; the
    arrays of a layer are `vars/0`, `vars/1`, ... Layers whose `vars` group
    is empty are left out.

    Raises WeightsError naming the file when it is missing, empty, not
    HDF5, truncated, of no known layout, or lacks a listed dataset, and
    (see `_dataset_problem`) when a dataset is not of real numbers, leaves the
    file or declares more data than the file holds.
    """
    path = Path(path)
    with _open_weights(path) as f:
        entries = _entries(f, path)
        for e in entries:
            e.arrays = [_read(ds, path, e.name) for ds in e.arrays]
    return entries


@contextlib.contextmanager
def _open_weights(path: Path):
    """The open HDF5 file; any HDF5 error inside the block becomes a WeightsError."""
    _check_file(path)
    try:
        with h5py.File(path, "r") as f:
            yield f
    except WeightsError:
        raise
    except (OSError, KeyError, ValueError, RuntimeError, TypeError, MemoryError) as e:
        raise WeightsError(f"{path}: cannot read the HDF5 file ({e})") from e


def _entries(f, path: Path) -> list[KerasLayerWeights]:
    """The layers of an open file, with unread h5py datasets as `arrays`."""
    root = f
    if not _has_attr(root, "layer_names"):
        weights = _member(root, "model_weights", path)
        if isinstance(weights, h5py.Group):
            root = weights
    if _has_attr(root, "layer_names"):
        return _read_legacy(root, path)
    layers = _member(f, "layers", path)
    if isinstance(layers, h5py.Group):
        return _read_native(layers, path)
    raise WeightsError(
        f"{path}: no known weights layout (no 'layer_names' attribute, "
        f"no 'model_weights' group, no 'layers' group)"
    )


def _check_file(path: Path) -> None:
    if not path.exists():
        raise WeightsError(f"{path}: no such file")
    if not path.is_file():
        raise WeightsError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise WeightsError(f"{path}: the file is empty")
    if not h5py.is_hdf5(path):
        raise WeightsError(f"{path}: not an HDF5 file")


def _has_attr(group, name: str) -> bool:
    return name in group.attrs or f"{name}0" in group.attrs


def _decode(x) -> str:
    if isinstance(x, (bytes, np.bytes_)):
        return x.decode("utf8")
    if isinstance(x, str):
        return x
    raise ValueError(f"expected a string, found {x!r}")


def _load_attr_list(group, name: str) -> list[str]:
    """A list-of-strings attribute, also when split as name0, name1, ..."""
    if name in group.attrs:
        chunks = [group.attrs[name]]
    else:
        chunks = []
        while f"{name}{len(chunks)}" in group.attrs:
            chunks.append(group.attrs[f"{name}{len(chunks)}"])
    out = []
    for chunk in chunks:
        values = np.atleast_1d(chunk)
        if values.size == 0:  # weightless layers store an empty float64 array
            continue
        try:
            out.extend(_decode(v) for v in values)
        except (ValueError, UnicodeDecodeError) as e:
            raise WeightsError(
                f"{group.file.filename}: attribute '{name}' of '{group.name}': {e}"
            ) from e
    return out


def _member(group, key: str, path: Path, where: str = "", depth: int = 0):
    """The object at `key` (a name or a path) under `group`, or None when it is missing.

    Every link on the way is looked at before it is followed: a soft link is
    resolved inside the file (at most HDF5's 16 levels deep), an external link
    (another file) is a WeightsError. Weights come only from the file named.
    `where` (e.g. "layer 'fc1'") goes into the error message.
    """
    context = f"{path}: {where}: " if where else f"{path}: "
    obj = group.file["/"] if key.startswith("/") else group
    for part in key.split("/"):
        if part in ("", "."):
            continue
        if not isinstance(obj, h5py.Group):
            return None
        link = obj.get(part, getlink=True)
        if link is None:
            return None
        name = f"{obj.name.rstrip('/')}/{part}"
        if isinstance(link, h5py.ExternalLink):
            raise WeightsError(
                f"{context}'{name}' is an external link to {link.filename}:{link.path}; "
                f"weights are read only from the file itself"
            )
        if isinstance(link, h5py.SoftLink):
            if depth >= SOFT_LINK_DEPTH:
                raise WeightsError(
                    f"{context}'{name}': soft links nested more than "
                    f"{SOFT_LINK_DEPTH} deep (a loop?)"
                )
            obj = _member(obj, link.path, path, where, depth + 1)
            if obj is None:
                return None
        else:
            obj = obj[part]
    return obj


def _dtype_text(dt: np.dtype) -> str:
    if h5py.check_string_dtype(dt) is not None:
        return f"string ({dt})"
    if h5py.check_ref_dtype(dt) is not None:
        return "object reference"
    if h5py.check_vlen_dtype(dt) is not None:
        return f"variable-length sequence of {h5py.check_vlen_dtype(dt)}"
    if h5py.check_enum_dtype(dt) is not None:
        return f"enum {dict(h5py.check_enum_dtype(dt))}"
    return str(dt)


def _dataset_problem(ds) -> str | None:
    """Why `ds` cannot hold weights, judged from its metadata alone (nothing is read); None if it can.

    Weights are real numbers (floats, or integers that are cast to float), in
    the file itself (no virtual dataset, no external raw storage), and every
    byte that the shape declares is stored (a dataset whose chunks were never
    written would read as its fill value).
    """
    dt = ds.dtype
    if dt.kind not in "fiu" or h5py.check_enum_dtype(dt) is not None:
        return f"has dtype {_dtype_text(dt)}, not real numbers (floats or integers)"
    if ds.shape is None:
        return "has no dataspace (an empty HDF5 dataset)"
    if ds.is_virtual:
        return "is a virtual dataset, which maps data from other files"
    if ds.external:
        files = ", ".join(str(name) for name, _, _ in ds.external)
        return f"keeps its data in the external file(s) {files}"
    layout = ds.id.get_create_plist().get_layout()
    declared = ds.size * dt.itemsize
    if layout == h5py.h5d.CHUNKED:
        needed = math.prod(-(-s // c) for s, c in zip(ds.shape, ds.chunks))
        stored = ds.id.get_num_chunks()
        if stored < needed:
            return (f"declares shape {ds.shape} ({declared:,} bytes of {dt}) but the file "
                    f"holds {stored} of its {needed:,} chunks")
    elif layout == h5py.h5d.CONTIGUOUS:
        stored = ds.id.get_storage_size()
        if stored < declared:
            return (f"declares shape {ds.shape} ({declared:,} bytes of {dt}) but the file "
                    f"holds {stored:,} bytes of it")
    return None


def _dataset(group, key: str, path: Path, where: str):
    """The h5py dataset `key` of a layer, checked by `_dataset_problem`, not read."""
    ds = _member(group, key, path, f"{where}: dataset '{key}'")
    if not isinstance(ds, h5py.Dataset):
        raise WeightsError(f"{path}: {where}: dataset '{key}' is missing")
    problem = _dataset_problem(ds)
    if problem is not None:
        raise WeightsError(f"{path}: {where}: dataset '{key}' {problem}")
    return ds


def _read_legacy(root, path: Path) -> list[KerasLayerWeights]:
    out = []
    for name in _load_attr_list(root, "layer_names"):
        g = _member(root, name, path, f"layer '{name}'")
        if not isinstance(g, h5py.Group):
            raise WeightsError(
                f"{path}: layer '{name}' is listed in layer_names but has no group"
            )
        weight_names = _load_attr_list(g, "weight_names")
        if not weight_names:
            continue
        arrays = [_dataset(g, w, path, f"layer '{name}'") for w in weight_names]
        owners = [_owner(w) for w in weight_names]
        if len(set(owners)) > 1 and None not in owners:
            # A nested model (a VGG16 base or a Sequential head inside the saved model) is
            # one group holding the weights of all its layers; split it by owning layer.
            for owner in dict.fromkeys(owners):
                idx = [i for i, o in enumerate(owners) if o == owner]
                out.append(KerasLayerWeights(
                    owner, [arrays[i] for i in idx], [weight_names[i] for i in idx]))
        else:
            out.append(KerasLayerWeights(name, arrays, weight_names))
    return out


def _owner(weight_name: str) -> str | None:
    """The layer that a legacy weight name belongs to: 'vgg16/block1_conv1/kernel:0' and
    'block1_conv1/kernel' -> 'block1_conv1'; None for Keras 1 names without '/'."""
    parts = weight_name.split("/")
    return parts[-2] if len(parts) >= 2 else None


_SUFFIX = re.compile(r"(.+?)(?:_(\d+))?")


def _split_key(key: str) -> tuple[str, int]:
    """'conv2d_10' -> ('conv2d', 10); 'conv2d' -> ('conv2d', 0)."""
    m = _SUFFIX.fullmatch(key)
    return m.group(1), int(m.group(2) or 0)


def _read_native(layers, path: Path) -> list[KerasLayerWeights]:
    found = []  # (sort key, entry)
    _walk_native(layers, "", (), path, found)
    found.sort(key=lambda t: t[0])
    return [entry for _, entry in found]


def _walk_native(group, prefix: str, order: tuple, path: Path, found: list):
    if len(order) > MAX_NESTING:
        raise WeightsError(f"{path}: layers/{prefix}: groups nested more than {MAX_NESTING} deep (a loop?)")
    for key in group:
        child = _member(group, key, path, f"layers/{prefix}{key}")
        if not isinstance(child, h5py.Group):
            continue
        cls, k = _split_key(key)
        name = f"{prefix}{key}"
        vars_ = _member(child, "vars", path, f"layers/{name}")
        if isinstance(vars_, h5py.Group) and len(vars_):
            keys = sorted(vars_, key=lambda s: int(s) if s.isdigit() else -1)
            if keys != [str(i) for i in range(len(keys))]:
                raise WeightsError(
                    f"{path}: layers/{name}/vars has keys {list(vars_)}, "
                    f"expected 0 .. {len(keys) - 1}"
                )
            arrays = [_dataset(vars_, i, path, f"layers/{name}/vars") for i in keys]
            stored = vars_.attrs.get("name")
            entry = KerasLayerWeights(
                name,
                arrays,
                keys,
                class_name=cls,
                index=k,
                stored_name=None if stored is None else _decode(stored),
            )
            # Sort by class first, then by the container path, then by k.
            found.append(((cls, order, k), entry))
        for sub in child:
            sub_group = _member(child, sub, path, f"layers/{name}") if sub != "vars" else None
            if isinstance(sub_group, h5py.Group):
                _walk_native(
                    sub_group, f"{name}/{sub}/", order + (_split_key(key),), path, found
                )


# ---------------------------------------------------------------- writing


def write_keras_weights(path, layers) -> None:
    """Write the Keras 2 legacy `.h5` weights layout, atomically.

    `layers` is the ordered list `[(layer_name, [(weight_name, array), ...]),
    ...]` of every layer, weightless ones with an empty list; weight names
    are short (`"kernel"`, `"bias"`). As Keras' `save_weights_to_hdf5_group`:
    root attributes `layer_names`, `backend`, `keras_version`; one group per
    layer with attribute `weight_names` = `[b"<layer>/kernel:0", ...]`
    (an empty float64 array for weightless layers); nested datasets
    `<layer>/<layer>/kernel:0`.
    """
    path = Path(path)
    layers = [(name, list(weights)) for name, weights in layers]
    _check_names(path, layers)
    prepared = [
        (name, [(w, _to_numpy(a)) for w, a in weights]) for name, weights in layers
    ]

    def fill(f):
        _save_attr_list(f, "layer_names", [n.encode("utf8") for n, _ in prepared])
        f.attrs["backend"] = np.bytes_(KERAS_BACKEND.encode("utf8"))
        f.attrs["keras_version"] = np.bytes_(KERAS_VERSION.encode("utf8"))
        # Groups in name order, as Keras does (keeps names strictly growing).
        for name, weights in sorted(prepared, key=lambda t: t[0]):
            g = f.create_group(name)
            full = [f"{name}/{w}:0" for w, _ in weights]
            _save_attr_list(g, "weight_names", [s.encode("utf8") for s in full])
            for key, (_, arr) in zip(full, weights):
                g.create_dataset(key, data=arr)

    _atomic_h5(path, fill)


def _check_names(path: Path, layers) -> None:
    seen = set()
    for name, weights in layers:
        if not isinstance(name, str) or not name or "/" in name:
            raise WeightsError(f"{path}: bad layer name {name!r} (non-empty, no '/')")
        if name in seen:
            raise WeightsError(f"{path}: layer name '{name}' appears twice")
        seen.add(name)
        wseen = set()
        for w, _ in weights:
            if not isinstance(w, str) or not w or "/" in w or w in wseen:
                raise WeightsError(
                    f"{path}: layer '{name}': bad or repeated weight name {w!r}"
                )
            wseen.add(w)


def _save_attr_list(group, name: str, data: list) -> None:
    """Keras' save_attributes_to_hdf5_group: split into name0, name1, ... when large."""
    arr = np.asarray(data)
    chunks = 1
    parts = np.array_split(arr, chunks)
    while any(p.nbytes > HDF5_OBJECT_HEADER_LIMIT for p in parts):
        chunks += 1
        parts = np.array_split(arr, chunks)
    if chunks > 1:
        for i, part in enumerate(parts):
            group.attrs[f"{name}{i}"] = part
    else:
        group.attrs[name] = arr  # fixed-length strings, as in the published files


def _atomic_h5(path: Path, fill) -> None:
    """Write an HDF5 file to a temporary name in the same folder, then rename."""
    try:
        write_h5(path, fill)
    except (OSError, ValueError, TypeError) as e:
        raise WeightsError(f"{path}: cannot write the weights file ({e})") from e


# ------------------------------------------------------------ arrays and devices


def _to_numpy(x) -> np.ndarray:
    """A NumPy array of numbers from a NumPy or CuPy array."""
    arr = to_numpy(x)
    if arr.dtype.kind not in "biuf":
        raise WeightsError(f"cannot store an array of dtype {arr.dtype}")
    return arr


# ---------------------------------------------------------------- model level


@dataclass
class LoadReport:
    """What `load_weights` did. Names are model layer names."""

    path: str
    loaded: list = field(default_factory=list)
    skipped: list = field(default_factory=list)  # "name: reason" (skip_mismatch)
    untouched: list = field(default_factory=list)  # weighted layers not in the file


def keras_class_name(layer) -> str:
    """Keras' snake-case class name of a layer: Conv2D -> 'conv2d', Dense -> 'dense'."""
    cls = type(layer).__name__
    if cls in KERAS_CLASS_NAMES:
        return KERAS_CLASS_NAMES[cls]
    name = re.sub(r"\W+", "", cls)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def load_weights(model, path, by_name=True, skip_mismatch=False, strict=True) -> LoadReport:
    """Load a Keras weights file into `model`; all or nothing.

    Legacy files: with by_name=True a file layer goes to the model layer of
    the same name. With by_name=False the k-th weighted file layer goes to
    the k-th weighted model layer, and the counts must agree.

    Native `.weights.h5`: the k-th model layer of a class gets `<class>_k`.
    With by_name=True the stored `name` attribute, when present, must
    equal the model layer's name.

    strict=True: every model layer with weights must get them from the file,
    else WeightsError listing the layers the file lacks. strict=False lets
    those layers keep their values (a notop file into a model with a new
    head) and lists them in the report's `untouched`.

    Everything is checked before anything is assigned, and before any array
    is read, from the file's metadata: the counts, and each dataset's dtype
    (real numbers only), storage (in this file, fully written) and shape
    against the model's parameter, so that a load never reads more than the
    model holds. Then the values are read and must be finite in the
    parameter's dtype. A problem raises WeightsError (file, layer, dataset,
    expected and found) and leaves the model unchanged; with
    skip_mismatch=True a layer whose shapes or counts do not fit, or a file
    layer with no model layer, is skipped with a warning instead (and strict
    does not count the skipped layers).
    """
    path = Path(path)
    layers = [layer for layer in model.layers() if layer.weights]
    report = LoadReport(str(path))
    with _open_weights(path) as f:
        entries = _entries(f, path)
        pairs, unmatched = _match(entries, layers, path, by_name)

        problems = []  # (entry, layer or None, text)
        for e in unmatched:
            problems.append((e, None, f"file layer '{_label(e)}' has no model layer"))
        for e, layer in pairs:
            problems.extend((e, layer, t) for t in _check_pair(e, layer, by_name))
        if problems:
            text = _listing([t for _, _, t in problems])
            if not skip_mismatch:
                raise WeightsError(f"{path}: does not fit the model; nothing was loaded:\n  {text}")
            warnings.warn(f"{path}: skipping layers that do not fit:\n  {text}", stacklevel=2)
            bad = {id(e) for e, _, _ in problems}
            report.skipped = [
                f"{layer.name if layer is not None else _label(e)}: {t}" for e, layer, t in problems
            ]
            pairs = [(e, layer) for e, layer in pairs if id(e) not in bad]
        skipped = {id(layer) for _, layer, _ in problems if layer is not None}
        done = {id(layer) for _, layer in pairs}
        missing = [layer.name for layer in layers if id(layer) not in done | skipped]
        if strict and missing:
            raise WeightsError(
                f"{path}: has no weights for {len(missing)} of the model's {len(layers)} "
                f"layers with weights; nothing was loaded (strict=False loads the others "
                f"and leaves these unchanged):\n  {_listing(missing)}", missing
            )
        new_values = [
            (p, _read_param(ds, p, path, layer, e, i))
            for e, layer in pairs
            for i, (p, ds) in enumerate(zip(layer.weights, e.arrays))
        ]
    for p, value in new_values:
        p.data = to_device(value, device_of(p.data))
    report.loaded = [layer.name for _, layer in pairs]
    report.untouched = [layer.name for layer in layers if id(layer) not in done]
    return report


def _listing(lines: list[str]) -> str:
    """At most MAX_LISTED lines, the rest counted."""
    if len(lines) > MAX_LISTED:
        lines = lines[:MAX_LISTED - 1] + [f"... and {len(lines) - MAX_LISTED + 1} more"]
    return "\n  ".join(lines)


def _read(ds, path: Path, where: str, out=None) -> np.ndarray:
    """The values of a dataset (into `out` when given); a failed read (a corrupt
    compressed chunk, a filter this HDF5 lacks) is a WeightsError naming it."""
    try:
        if out is None:
            return np.asarray(ds[()])
        ds.read_direct(out)
        return out
    except (OSError, ValueError, RuntimeError) as e:
        raise WeightsError(f"{path}: {where}: cannot read dataset '{ds.name}' ({e})") from e


def _read_param(ds, param, path: Path, layer, e: KerasLayerWeights, i: int) -> np.ndarray:
    """The one place where a dataset is read for a parameter: its shape (checked
    before), the parameter's dtype, finite values; a NumPy array."""
    where = f"layer '{layer.name}'" + (f" (file layer '{_label(e)}')" if e.name != layer.name else "")
    value = np.empty(tuple(param.data.shape), dtype=param.data.dtype)
    if ds.dtype == value.dtype:
        _read(ds, path, where, out=value)
    else:
        with np.errstate(over="ignore", invalid="ignore"):
            value[...] = _read(ds, path, where)  # ints, other floats; too large for the dtype: inf
    if value.dtype.kind == "f" and not np.isfinite(value).all():
        nan = int(np.isnan(value).sum())
        raise WeightsError(
            f"{path}: {where}: dataset '{e.weight_names[i]}' ({ds.name}) holds non-finite "
            f"values as {value.dtype} ({nan} NaN, {value.size - nan - int(np.isfinite(value).sum())} "
            f"infinite); nothing was loaded"
        )
    return value


def _label(e: KerasLayerWeights) -> str:
    if e.stored_name is not None:
        return f"{e.name} ({e.stored_name})"
    return e.name


def _match(entries, layers, path: Path, by_name: bool):
    """Pair file layers with model layers; returns (pairs, unmatched entries)."""
    if entries and entries[0].native:
        by_class: dict[str, list] = {}
        for layer in layers:
            by_class.setdefault(keras_class_name(layer), []).append(layer)
        pairs, unmatched, rank = [], [], {}
        for e in entries:
            k = rank.get(e.class_name, 0)
            rank[e.class_name] = k + 1
            if (e.index or 0) != k:  # Keras numbers a container's layers of a class 0, 1, 2, ...
                raise WeightsError(f"{path}: layers/{e.class_name}_{k} is missing (found {e.stored_name or e.name} "
                                   f"in its place), so the {e.class_name} layers cannot be matched by order")
            candidates = by_class.get(e.class_name, [])
            if k < len(candidates):
                pairs.append((e, candidates[k]))
            else:
                unmatched.append(e)
        return pairs, unmatched

    if by_name:
        index = {}
        for layer in layers:
            if layer.name in index:
                raise WeightsError(
                    f"{path}: the model has two layers named '{layer.name}'; "
                    f"loading by name needs unique names"
                )
            index[layer.name] = layer
        seen = set()
        for e in entries:
            if e.name in seen:
                raise WeightsError(
                    f"{path}: the file has two layers named '{e.name}'; "
                    f"loading by name needs unique names"
                )
            seen.add(e.name)
        pairs = [(e, index[e.name]) for e in entries if e.name in index]
        unmatched = [e for e in entries if e.name not in index]
        return pairs, unmatched

    if len(entries) != len(layers):
        raise WeightsError(
            f"{path}: the file has {len(entries)} layers with weights, the model "
            f"has {len(layers)}; loading by order needs equal counts"
        )
    return list(zip(entries, layers)), []


def _check_pair(e: KerasLayerWeights, layer, by_name: bool) -> list[str]:
    where = f"layer '{layer.name}'"
    if e.name != layer.name:
        where += f" (file layer '{_label(e)}')"
    out = []
    if e.native and by_name and e.stored_name is not None and e.stored_name != layer.name:
        out.append(
            f"{where}: the file stores the name '{e.stored_name}'"
            f" (by_name=False matches by order only)"
        )
    if len(e.arrays) != len(layer.weights):
        out.append(
            f"{where}: the model has {len(layer.weights)} weights, "
            f"the file has {len(e.arrays)}"
        )
        return out
    for i, (p, arr) in enumerate(zip(layer.weights, e.arrays)):
        if not e.native:
            stored, wanted = _short_weight_name(e.weight_names[i]), _weight_name(p, i)
            if stored in KERAS_WEIGHT_NAMES and SAME_WEIGHT.get(stored, stored) != SAME_WEIGHT.get(wanted, wanted):
                out.append(
                    f"{where}: weight {i} '{e.weight_names[i]}': the model expects "
                    f"'{wanted}' there (model weights: {[_weight_name(q, j) for j, q in enumerate(layer.weights)]})"
                )
                continue
        expected, found = tuple(p.data.shape), tuple(arr.shape)
        if expected != found:
            out.append(
                f"{where}: weight {i} '{e.weight_names[i]}': model expects "
                f"shape {expected}, file has {found}"
            )
    return out


def _short_weight_name(weight_name: str) -> str:
    """'conv1_bn/gamma:0' and 'conv1_bn/gamma' -> 'gamma'."""
    return re.sub(r":\d+$", "", weight_name.split("/")[-1])


def save_weights(model, path) -> None:
    """Save `model` in the Keras 2 legacy `.h5` layout (see `write_keras_weights`).

    Weight names are the weight's `name` when it has a plain one (BatchNormalization's
    `gamma`, `beta`, `moving_mean`, `moving_variance`; DepthwiseConv2D's
    `depthwise_kernel`, as Keras 2 names it), otherwise Keras' `kernel`, `bias`. A
    layer's weights are written in Keras' order (trainable, then the moving
    statistics), which is the order Keras' legacy reader assigns them in. Keras 3 reads a name ending in
    `.weights.h5` as its native layout, so such names are refused.
    """
    path = Path(path)
    if path.name.endswith(".weights.h5"):
        raise WeightsError(
            f"{path}: this writes the legacy layout, which Keras reads only from "
            f"a name ending in '.h5' but not '.weights.h5'"
        )
    layers = []
    for layer in model.layers():
        weights = list(layer.weights)
        layers.append(
            (layer.name, [(_weight_name(p, i), p.data) for i, p in enumerate(weights)])
        )
    write_keras_weights(path, layers)


_KERAS_WEIGHT_NAMES = ("kernel", "bias")


def _weight_name(param, i: int) -> str:
    name = getattr(param, "name", None)
    if isinstance(name, str):
        name = re.split(r"[./]", name)[-1].split(":")[0]
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            return name
    return _KERAS_WEIGHT_NAMES[i] if i < len(_KERAS_WEIGHT_NAMES) else f"weight_{i}"
