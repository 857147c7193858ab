"""The one place that knows NumPy from CuPy.

Every op asks ``xp = get_array_module(a)`` and calls ``xp.*``: NumPy for arrays on
the CPU, CuPy for arrays on the GPU. CuPy is imported only when a GPU is asked for,
so CPU-only machines never need it.
"""
import sys

import numpy as np

from minitl.errors import DeviceError

__all__ = [
    "DEFAULT_DTYPE",
    "device_available",
    "device_of",
    "get_array_module",
    "gpu_status",
    "is_gpu_array",
    "normalize_device",
    "scatter_add",
    "to_device",
    "to_numpy",
]

DEFAULT_DTYPE = np.float32
_gpu_status = None  # cached (usable: bool, reason: str)


def _cupy():
    """The cupy module if it was already imported, else None (never imports it)."""
    return sys.modules.get("cupy")


def get_array_module(*arrays):
    """numpy, or cupy when any argument is a CuPy array."""
    cp = _cupy()
    if cp is not None:
        for a in arrays:
            if isinstance(a, cp.ndarray):
                return cp
    return np


def is_gpu_array(a):
    cp = _cupy()
    return cp is not None and isinstance(a, cp.ndarray)


def device_of(a):
    """'gpu' or 'cpu' for an array."""
    return "gpu" if is_gpu_array(a) else "cpu"


def scatter_add(target, indices, values):
    """target[indices] += values in place, where repeated indices add up (a plain ``+=`` keeps one)."""
    if is_gpu_array(target):
        import cupyx
        cupyx.scatter_add(target, indices, values)
    else:
        np.add.at(target, indices, values)
    return target


def to_numpy(a):
    """A NumPy array (copied from the GPU when needed)."""
    if is_gpu_array(a):
        return a.get()
    return np.asarray(a)


def gpu_status():
    """(usable, reason): whether CuPy imports and a CUDA device can allocate memory.

    A machine without a driver can import cupy and still fail on every allocation
    (CUDARuntimeError, a RuntimeError): that counts as "no GPU", quietly.
    """
    global _gpu_status
    if _gpu_status is None:
        try:
            import cupy
            cupy.zeros(1).sum().item()
            name = cupy.cuda.runtime.getDeviceProperties(0)["name"]
            name = name.decode() if isinstance(name, bytes) else name
            _gpu_status = (True, (f"CuPy {cupy.__version__}, CUDA runtime "
                                 f"{cupy.cuda.runtime.runtimeGetVersion()}, device 0: {name}"))
        except ImportError:
            _gpu_status = (False, "CuPy is not installed (pip install 'minitl[gpu]')")
        except Exception as e:  # CUDARuntimeError, driver missing, no device
            _gpu_status = (False, f"CuPy is installed but no CUDA device is usable ({type(e).__name__}: {e})")
    return _gpu_status


def device_available(device):
    """True if arrays can be placed on ``device`` ('cpu' or 'gpu')."""
    device = normalize_device(device)
    return device == "cpu" or gpu_status()[0]


def normalize_device(device):
    d = str(device).lower()
    if d in ("cpu",):
        return "cpu"
    if d in ("gpu", "cuda", "cuda:0"):
        return "gpu"
    if d == "auto":
        return "gpu" if gpu_status()[0] else "cpu"
    raise DeviceError(f"unknown device {device!r}: use 'cpu', 'gpu' or 'auto'")


def to_device(a, device):
    """The array ``a`` on ``device`` (no copy when it is already there)."""
    device = normalize_device(device)
    if device == "cpu":
        return to_numpy(a)
    usable, reason = gpu_status()
    if not usable:
        raise DeviceError(f"device 'gpu' is not available: {reason}")
    import cupy
    return cupy.asarray(a)
