"""Device placement on a machine without a GPU, and GPU detection that stays quiet."""
import sys
import types

import numpy as np
import pytest

import minitl
from minitl import DeviceError, Tensor, backend
from minitl.nn import Dense


@pytest.fixture
def fresh_status(monkeypatch):
    monkeypatch.setattr(backend, "_gpu_status", None)
    yield
    backend._gpu_status = None


def test_cpu_placement_is_a_no_op():
    x = Tensor(np.ones(3, np.float32), requires_grad=True)
    y = x.to("cpu")
    assert y.device == "cpu" and y.requires_grad and np.shares_memory(y.data, x.data)
    layer = Dense(2, input_dim=3)
    assert layer.to("cpu") is layer and layer.kernel.device == "cpu"
    assert minitl.device_available("cpu")


def test_unknown_device_is_a_clear_error():
    with pytest.raises(DeviceError, match="unknown device 'tpu'"):
        Tensor(np.ones(2)).to("tpu")


def test_driverless_cupy_counts_as_no_gpu(monkeypatch, fresh_status):
    """A cupy that imports but fails every allocation (CUDARuntimeError is a RuntimeError)."""
    fake = types.ModuleType("cupy")

    class CUDARuntimeError(RuntimeError):
        pass

    def zeros(*args, **kwargs):
        raise CUDARuntimeError("cudaErrorInsufficientDriver: CUDA driver version is insufficient")

    fake.zeros = zeros
    fake.__version__ = "13.0.0"
    fake.ndarray = type("ndarray", (), {})
    monkeypatch.setitem(sys.modules, "cupy", fake)
    usable, reason = backend.gpu_status()
    assert not usable and "CUDARuntimeError" in reason
    assert not minitl.device_available("gpu")
    with pytest.raises(DeviceError, match="not available"):
        Tensor(np.ones(2)).to("gpu")
    assert backend.normalize_device("auto") == "cpu"


def test_missing_cupy_counts_as_no_gpu(monkeypatch, fresh_status):
    monkeypatch.setitem(sys.modules, "cupy", None)  # makes "import cupy" raise ImportError
    usable, reason = backend.gpu_status()
    assert not usable and "not installed" in reason
