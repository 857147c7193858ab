"""minitl: a from-scratch deep-learning engine for transfer learning in image recognition.

    y = f(X; W)                       minitl.nn layers, minitl.functional
    L(W) = 1/N Σ l(y_i, ŷ_i)          minitl.functional.softmax_cross_entropy
    W_{t+1} = W_t − η ∇L(W_t)         minitl.optim.SGD.update, after Tensor.backward
"""
__version__ = "0.1.0"

from minitl import functional, ops, optim
from minitl.backend import device_available, get_array_module
from minitl.check import gradcheck
from minitl.errors import (
    DataError,
    DeviceError,
    DownloadError,
    GradcheckError,
    MinitlError,
    ShapeError,
    TrainingError,
    WeightsError,
)
from minitl.tensor import Function, Tensor, enable_grad, is_grad_enabled, no_grad

__all__ = [
    "DataError",
    "DeviceError",
    "DownloadError",
    "Function",
    "GradcheckError",
    "MinitlError",
    "ShapeError",
    "Tensor",
    "TrainingError",
    "WeightsError",
    "__version__",
    "check",
    "device_available",
    "enable_grad",
    "functional",
    "get_array_module",
    "gradcheck",
    "is_grad_enabled",
    "no_grad",
    "ops",
    "optim",
]

# Modules loaded on first use (PEP 562), so that `import minitl` stays light: mt.io and mt.runs
# bring h5py, mt.data Pillow, and none of them CuPy.
LAZY_MODULES = ("applications", "backend", "cli", "compare", "conv", "data", "datasets", "demo", "errors", "files",
                "hub", "io", "kernels", "metrics", "nn", "onnx_export", "plots", "runs", "tensor", "train", "transfer",
                "viz", "winograd")


def __getattr__(name):
    if name in LAZY_MODULES:
        import importlib
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(LAZY_MODULES))
