"""The GPU device check: run the GPU tests, then time full VGG16 on the GPU against PyTorch.

    python benchmarks/gpu_check.py [--batch 32] [--repeat 3] [--skip-tests]

Prints the pytest summary of the `gpu`-marked tests, then VGG16 (full size, with top,
float32) forward and forward+backward at batch × 224×224 in milliseconds for minitl
(CuPy) and, when PyTorch with CUDA is importable, PyTorch with TF32 off and on, and
the ratios minitl / PyTorch. Designed to finish within 5 minutes on one GPU.
"""
import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def sync():
    import cupy
    cupy.cuda.Device().synchronize()


def time_minitl(batch, repeat):
    import cupy

    import minitl
    import minitl.functional as F
    from minitl import Tensor
    from minitl.applications import VGG16
    model = VGG16(classifier_activation=None).to("gpu")
    x = Tensor(cupy.asarray(np.random.default_rng(0).normal(0, 50, (batch, 224, 224, 3)).astype(np.float32)))
    y = cupy.asarray(np.arange(batch) % 1000)
    times = {}

    def forward():
        with minitl.no_grad():
            model(x)

    def with_grad():
        F.softmax_cross_entropy(model(x), y).backward()

    for name, fn in (("forward", forward), ("forward+backward", with_grad)):
        fn()
        sync()
        best = float("inf")
        for _ in range(repeat):
            model.zero_grad()
            start = time.perf_counter()
            fn()
            sync()
            best = min(best, time.perf_counter() - start)
        times[name] = best * 1000
    return times


def time_torch(batch, repeat, tf32):
    import torch
    from torchvision.models import vgg16
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    model = vgg16().cuda().to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, 224, 224, device="cuda").to(memory_format=torch.channels_last)
    y = torch.arange(batch, device="cuda") % 1000
    loss_fn = torch.nn.CrossEntropyLoss()
    times = {}

    def forward():
        with torch.no_grad():
            model(x)

    def with_grad():
        loss_fn(model(x), y).backward()

    for name, fn in (("forward", forward), ("forward+backward", with_grad)):
        fn()
        torch.cuda.synchronize()
        best = float("inf")
        for _ in range(repeat):
            model.zero_grad(set_to_none=True)
            start = time.perf_counter()
            fn()
            torch.cuda.synchronize()
            best = min(best, time.perf_counter() - start)
        times[name] = best * 1000
    return times


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-tests", action="store_true")
    args = parser.parse_args(argv)
    from minitl.backend import gpu_status
    usable, reason = gpu_status()
    print(f"GPU: {reason}")
    if not usable:
        return 1
    if not args.skip_tests:
        root = Path(__file__).resolve().parent.parent
        r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "tests/test_gpu.py"], cwd=root)
        print(f"GPU tests exit code {r.returncode}")
    ours = time_minitl(args.batch, args.repeat)
    import cupy
    cupy.get_default_memory_pool().free_all_blocks()  # leave the GPU's memory to PyTorch
    print(f"\nVGG16 (full, with top), batch {args.batch} x 224x224 float32, best of {args.repeat}")
    print(f"{'':<22}{'forward ms':>12}{'fwd+bwd ms':>12}")
    print(f"{'minitl (CuPy)':<22}{ours['forward']:12.1f}{ours['forward+backward']:12.1f}")
    for tf32 in (False, True):
        try:
            theirs = time_torch(args.batch, args.repeat, tf32)
        except Exception as e:  # PyTorch, torchvision or CUDA missing
            print(f"PyTorch not timed: {type(e).__name__}: {e}")
            break
        label = f"PyTorch TF32 {'on' if tf32 else 'off'}"
        print(f"{label:<22}{theirs['forward']:12.1f}{theirs['forward+backward']:12.1f}"
              f"   ratio minitl/PyTorch: forward {ours['forward'] / theirs['forward']:.2f}, "
              f"fwd+bwd {ours['forward+backward'] / theirs['forward+backward']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
