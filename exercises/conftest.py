"""Puts the tasks on the import path for their checks (exercises/checks/).

The checks import each task by its file name (``import task07_conv_backward``), from this
folder by default. MINITL_EXERCISES=FOLDER takes the files of that folder instead:
tests/test_exercises.py runs every check against the project's solutions,
tests/exercise_solutions/, that way.
"""
import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(os.environ.get("MINITL_EXERCISES") or Path(__file__).parent).resolve()))


@pytest.fixture
def rng():
    return np.random.default_rng(0)
