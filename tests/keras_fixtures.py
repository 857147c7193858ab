"""The Keras-written VGG16 fixtures in tests/data (see tests/data/KERAS_REF_MINI.md)."""
from pathlib import Path

from minitl.io import read_keras_weights

DATA = Path(__file__).parent / "data"
NOTOP, TOP = "vgg16mini_notop_32", "vgg16mini_top_64_c5"
VARIANTS = [NOTOP, TOP]
LAYOUTS = ["official_like.h5", "keras3_legacy.h5", "weights.h5"]
CONV_NAMES = [
    "block1_conv1", "block1_conv2",
    "block2_conv1", "block2_conv2",
    "block3_conv1", "block3_conv2", "block3_conv3",
    "block4_conv1", "block4_conv2", "block4_conv3",
    "block5_conv1", "block5_conv2", "block5_conv3",
]
DENSE_NAMES = ["fc1", "fc2", "predictions"]


def fixture(variant, layout):
    return DATA / f"{variant}.{layout}"


def file_arrays(variant, layout="official_like.h5"):
    """{stored layer name: [kernel, bias]} as read from a fixture."""
    return {e.stored_name or e.name: e.arrays for e in read_keras_weights(fixture(variant, layout))}
