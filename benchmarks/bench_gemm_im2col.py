"""Times im2col (Numba vs array-module twin) and the GEMM cols @ W for the 13
VGG16 conv layers (3x3, stride 1, 'same'), float32, channels-last.

    python benchmarks/bench_gemm_im2col.py --batch 2

Columns (milliseconds, best of --repeat):
    im2col_nb   minitl.kernels.im2col (Numba)
    im2col_np   minitl.kernels.im2col_xp (the twin)
    gemm_cols   cols @ w.reshape(9*C, O)
    gemm_fresh  a @ b for fresh contiguous random arrays of the same shapes
    cols/fresh  gemm_cols / gemm_fresh (about 1: the cols layout costs the GEMM nothing)
Then, if torch is installed, the total time of torch conv2d (channels_last) for
the same layers, as an outside reference.
"""

import argparse
import os
import time

import numba
import numpy as np

from minitl import kernels

# (name, input size at 224, C_in, C_out)
VGG16_CONVS = [
    ("block1_conv1", 224, 3, 64), ("block1_conv2", 224, 64, 64),
    ("block2_conv1", 112, 64, 128), ("block2_conv2", 112, 128, 128),
    ("block3_conv1", 56, 128, 256), ("block3_conv2", 56, 256, 256), ("block3_conv3", 56, 256, 256),
    ("block4_conv1", 28, 256, 512), ("block4_conv2", 28, 512, 512), ("block4_conv3", 28, 512, 512),
    ("block5_conv1", 14, 512, 512), ("block5_conv2", 14, 512, 512), ("block5_conv3", 14, 512, 512),
]
PADS = (1, 1, 1, 1)


def best_ms(f, repeat):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return 1e3 * min(times)


def compile_times():
    """First-call time of the dispatcher (may load from the on-disk cache) and a
    cache-free compile of the same kernel, for a tiny float32 input."""
    x = np.ones((1, 8, 8, 4), np.float32)
    cols = np.empty((64, 36), np.float32)
    t = time.perf_counter()
    kernels.im2col(x, 3, 3, 1, 1, PADS)
    first = time.perf_counter() - t
    fresh = numba.njit(parallel=True, cache=False)(kernels._im2col_nb.py_func)
    t = time.perf_counter()
    fresh(x, cols, 3, 3, 1, 1, 1, 1, 8, 8)
    compile_s = time.perf_counter() - t
    return first, compile_s


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--size", type=int, default=224, help="input height and width of block1")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    args = p.parse_args()

    threads = min(args.threads, numba.config.NUMBA_NUM_THREADS)
    numba.set_num_threads(threads)
    try:
        import torch
        torch.set_num_threads(threads)
    except ImportError:
        torch = None

    first, compile_s = compile_times()
    print(f"numba {numba.__version__}, numpy {np.__version__}, threads {threads}, batch {args.batch}, "
          f"float32")
    print(f"im2col first call {first * 1e3:.0f} ms (cache load or compile); "
          f"compile without cache {compile_s:.2f} s")

    head = f"{'layer':13s} {'M x K x N':>22s} {'im2col_nb':>9s} {'im2col_np':>9s} {'nb/np':>6s} " \
           f"{'gemm_cols':>9s} {'gemm_fresh':>10s} {'cols/fresh':>10s}"
    print(head)
    rng = np.random.default_rng(0)
    totals = np.zeros(4)
    layers = []
    for name, size, cin, cout in VGG16_CONVS:
        size = size * args.size // 224
        x = rng.standard_normal((args.batch, size, size, cin), dtype=np.float32)
        w = rng.standard_normal((3, 3, cin, cout), dtype=np.float32)
        w2 = w.reshape(9 * cin, cout)
        t_nb = best_ms(lambda: kernels.im2col(x, 3, 3, 1, 1, PADS), args.repeat)
        t_np = best_ms(lambda: kernels.im2col_xp(x, 3, 3, 1, 1, PADS), args.repeat)
        cols = kernels.im2col(x, 3, 3, 1, 1, PADS)
        t_gc = best_ms(lambda: cols @ w2, args.repeat)
        M, K = cols.shape
        a = rng.standard_normal((M, K), dtype=np.float32)
        b = rng.standard_normal((K, cout), dtype=np.float32)
        t_gf = best_ms(lambda: a @ b, args.repeat)
        totals += [t_nb, t_np, t_gc, t_gf]
        layers.append((name, size, cin, cout))
        print(f"{name:13s} {f'{M}x{K}x{cout}':>22s} {t_nb:9.1f} {t_np:9.1f} {t_nb / t_np:6.2f} "
              f"{t_gc:9.1f} {t_gf:10.1f} {t_gc / t_gf:10.2f}", flush=True)
    print(f"{'total':13s} {'':>22s} {totals[0]:9.1f} {totals[1]:9.1f} {totals[0] / totals[1]:6.2f} "
          f"{totals[2]:9.1f} {totals[3]:10.1f} {totals[2] / totals[3]:10.2f}")
    gflop = sum(2 * args.batch * s * s * 9 * ci * co for _, s, ci, co in layers) / 1e9
    print(
        f"forward conv work {gflop:.1f} GFLOP: im2col_nb + gemm_cols "
        f"{gflop / ((totals[0] + totals[2]) / 1e3):.1f} GFLOP/s"
    )

    if torch is None:
        return
    # Run last and apart: torch's own OpenMP threads keep spinning after each call
    # and would slow down the timings above.
    t_th = 0.0
    for name, size, cin, cout in layers:
        x = torch.randn(args.batch, size, size, cin).permute(0, 3, 1, 2)  # NCHW view of NHWC memory
        w = torch.randn(cout, cin, 3, 3).contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            t_th += best_ms(lambda: torch.nn.functional.conv2d(x, w, padding=1), args.repeat)
    print(
        f"torch {torch.__version__} conv2d channels_last, same layers: {t_th:.1f} ms, "
        f"{gflop / (t_th / 1e3):.1f} GFLOP/s"
    )


if __name__ == "__main__":
    main()
