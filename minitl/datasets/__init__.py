"""Small datasets shipped with minitl, for offline demos and tests.

animal_shapes.npz: 10 animals x 1,000 grayscale 28x28 images, from the MIT-licensed
PyPI package `animal-shape-mnist` 0.39 (see README.md and the license file beside it).
"""

import os

import numpy as np

from minitl.errors import DataError
from minitl.files import file_digest

ANIMAL_SHAPES_PATH = os.path.join(os.path.dirname(__file__), "animal_shapes.npz")
ANIMAL_SHAPES_SHA256 = "518b8e7430afdbfcdd619f8cc8117665e233d6416802489f75c5a7e16d26cd46"
ANIMAL_SHAPES_CLASSES = ["bear", "bird", "cat", "cow", "dog",
                         "elephant", "giraffe", "horse", "sheep", "zebra"]


def load_animal_shapes(path=None):
    """Load the animal silhouettes after checking the file's sha256.

    Returns images uint8 (10000, 28, 28) (white animal on black), labels int64 (10000,)
    and the 10 class names. Rows are grouped by class (1,000 bears, then birds, ...):
    shuffle or use `minitl.data.stratified_split` before training.
    Raises DataError if the file is missing or is not the shipped one.
    """
    path = ANIMAL_SHAPES_PATH if path is None else os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"animal shapes dataset not found: {path}")
    digest = file_digest(path)
    if digest != ANIMAL_SHAPES_SHA256:
        raise DataError(f"animal shapes dataset is corrupt: {path} has sha256 {digest}, "
                        f"expected {ANIMAL_SHAPES_SHA256}")
    with np.load(path, allow_pickle=False) as data:
        images = data["images"]
        labels = data["labels"].astype(np.int64)
        class_names = [str(name) for name in data["class_names"]]
    return images, labels, class_names
