"""ImageNet helpers shared by the models in minitl.applications, as in
`keras.applications.imagenet_utils`: 'caffe' input preprocessing and the
decoding of 1000-class predictions into (wnid, name, score)."""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

import numpy as np

from minitl.backend import get_array_module, to_numpy
from minitl.errors import DataError, ShapeError

__all__ = ["MEAN_BGR", "decode_predictions", "load_class_index", "preprocess_caffe", "preprocess_tf"]

# Per-channel ImageNet means in BGR order, subtracted by Keras' 'caffe' mode.
MEAN_BGR = (103.939, 116.779, 123.68)

CLASS_INDEX_FILE = "imagenet_class_index.json"
PACKAGED_CLASS_INDEX = Path(__file__).resolve().parent.parent / "resources" / CLASS_INDEX_FILE


def _rgb_input(x):
    """(xp, x as an array, the float dtype to compute in) for channels-last RGB input; a
    ShapeError for anything else."""
    xp = get_array_module(x)
    x = xp.asarray(x)
    if x.ndim < 3 or x.shape[-1] != 3:
        raise ShapeError(f"preprocess_input expects channels-last RGB (..., H, W, 3), got shape {x.shape}")
    if x.dtype.kind not in "biuf":
        raise ShapeError(f"preprocess_input expects numbers, got dtype {x.dtype}")
    return xp, x, (x.dtype if x.dtype == np.float64 else np.dtype(np.float32))


def preprocess_caffe(x):
    """Keras 'caffe' preprocessing: RGB 0..255 -> BGR minus the ImageNet mean.

    `x`: (..., H, W, 3) channels-last RGB, for example (N, H, W, 3) or (H, W, 3).
    Returns a new array `x[..., ::-1] - MEAN_BGR`, computed in float64 for a
    float64 input and in float32 otherwise. The input is not modified (Keras
    modifies a float NumPy input in place; this does not).
    """
    xp, x, dtype = _rgb_input(x)
    out = xp.empty(x.shape, dtype=dtype)
    out[...] = x[..., ::-1]
    out -= xp.asarray(MEAN_BGR, dtype=dtype)
    return out


def preprocess_tf(x):
    """Keras 'tf' preprocessing: RGB 0..255 -> x / 127.5 - 1, in [-1, 1], channels kept.

    `x`: (..., H, W, 3) channels-last RGB. Returns a new array, computed in float64 for
    a float64 input and in float32 otherwise, as Keras computes it (divide, then subtract).
    """
    _, x, dtype = _rgb_input(x)
    out = x.astype(dtype, copy=True)
    out /= dtype.type(127.5)
    out -= dtype.type(1.0)
    return out


PREPROCESSING = {"caffe": preprocess_caffe, "tf": preprocess_tf}


@lru_cache(maxsize=4)
def _read_class_index(path: str) -> tuple:
    try:
        with open(path, encoding="utf8") as f:
            raw = json.load(f)
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read the class index ({e})") from e
    return _check_class_index(raw, path)


def _check_class_index(raw, where) -> tuple:
    if not isinstance(raw, dict) or sorted(raw, key=_int_or_none) != [str(i) for i in range(len(raw))]:
        raise DataError(f"{where}: the class index must map '0', '1', ... to [wnid, name]")
    out = []
    for key in sorted(raw, key=int):  # by int: "10" comes after "9"
        value = raw[key]
        if not (isinstance(value, (list, tuple)) and len(value) == 2
                and all(isinstance(v, str) for v in value)):
            raise DataError(f"{where}: class {key} is {value!r}, expected [wnid, name]")
        out.append((value[0], value[1]))
    return tuple(out)


def _int_or_none(key):
    return int(key) if isinstance(key, str) and key.isdigit() else -1


def load_class_index(class_index=None) -> tuple:
    """The ImageNet classes as a tuple of (wnid, name), index i = class i.

    `class_index`: a path to a JSON file like Keras' imagenet_class_index.json,
    a dict already loaded from one, or None to use the packaged copy or,
    failing that, the one fetched into the weights folder
    (`minitl.hub.fetch('imagenet-class-index')`).
    """
    if isinstance(class_index, dict):
        return _check_class_index(class_index, "class_index")
    if isinstance(class_index, (str, os.PathLike)):
        return _read_class_index(str(class_index))
    if class_index is not None:
        raise DataError(f"class_index must be a path or a dict, got {type(class_index).__name__}")
    from minitl.hub import weights_dir

    candidates = [PACKAGED_CLASS_INDEX, weights_dir() / CLASS_INDEX_FILE]
    for path in candidates:
        if path.is_file():
            return _read_class_index(str(path))
    raise DataError(
        "the ImageNet class index was not found (looked in "
        + ", ".join(str(p) for p in candidates)
        + "); download it with minitl.hub.fetch('imagenet-class-index')"
        " or pass class_index="
    )


def decode_predictions(probs, top=5, class_index=None) -> list:
    """Top-`top` ImageNet classes per sample, as Keras returns them.

    `probs`: (N, 1000) class scores (probabilities or logits).
    Returns one list per sample of (wnid, name, score) tuples, highest score
    first; equal scores keep the lower class index first.
    """
    probs = np.asarray(to_numpy(probs))
    if probs.ndim != 2 or probs.shape[1] != 1000:
        raise ShapeError(
            "decode_predictions expects a batch of predictions of shape (N, 1000), "
            f"got shape {probs.shape}"
        )
    if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or not 1 <= top <= 1000:
        raise ValueError(f"top must be an integer in 1..1000, got {top!r}")
    classes = load_class_index(class_index)
    if len(classes) != probs.shape[1]:
        raise DataError(f"the class index has {len(classes)} classes, expected {probs.shape[1]}")
    results = []
    for row in probs.astype(np.float64, copy=False):
        order = np.argsort(-row, kind="stable")[:top]
        results.append([(classes[i][0], classes[i][1], float(row[i])) for i in order])
    return results
