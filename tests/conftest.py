import numpy as np
import pytest

import minitl

pytest_plugins = ["finetune_fixtures"]  # the image-folder and base-weights fixtures


def pytest_collection_modifyitems(config, items):
    usable, reason = minitl.backend.gpu_status() if any("gpu" in i.keywords for i in items) else (True, "")
    if usable:
        return
    skip = pytest.mark.skip(reason=f"no usable GPU: {reason}")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def keep_global_rng():
    """A test that reseeds minitl.nn's generator gives it back as it was."""
    saved = minitl.nn._rng
    state = saved.bit_generator.state
    yield
    saved.bit_generator.state = state
    minitl.nn._rng = saved
