"""Winograd against im2col on VGG16's 3x3 conv layers: float32 accuracy against a float64
direct convolution, and the time of each algorithm (the data behind 'auto's rule).

    python benchmarks/bench_winograd.py                     # accuracy, then times at 8x224
    python benchmarks/bench_winograd.py --parts accuracy
    python benchmarks/bench_winograd.py --parts time --batch 8 --size 224 --rounds 7

Accuracy: one image per layer shape (block1 at --accuracy-size, 224 by default), inputs
|N(0, 1)| (post-ReLU activations), He-normal kernels, bias N(0, 0.1). The reference is
the same convolution in float64, computed directly (im2col + matrix product, all in
float64); the error is max |y - y64| / max |y64| over the layer's output, for float32
im2col, F(2×2, 3×3) and F(4×4, 3×3). Bounds: 1e-5 for F(2×2, 3×3), 1e-4 for F(4×4, 3×3).
With --backward, the same for dX and dW from a random N(0, 1) output gradient.

Time: conv2d forward (with bias and ReLU, 'same') at BATCH x SIZE, and forward+backward
with --modes fwd,fwdbwd; the algorithms run in turn, --rounds times, and each round
keeps each algorithm's fastest of --steps calls. Printed: each algorithm's median of
those, and the median over rounds of its ratio to im2col in the same round.
"""
import argparse
import os
import statistics
import sys
import time

import numba
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench_conv import layer_shapes

import minitl.functional as F
from minitl import Tensor, conv, no_grad, winograd

ALGORITHMS = ["im2col", "winograd", "winograd4"]
BOUNDS = {"im2col": None, "winograd": 1e-5, "winograd4": 1e-4}


def layer_inputs(rng, batch, s, cin, cout, dtype=np.float32):
    x = np.abs(rng.standard_normal((batch, s, s, cin))).astype(dtype)
    w = (rng.standard_normal((3, 3, cin, cout)) * np.sqrt(2 / (9 * cin))).astype(dtype)
    b = (0.1 * rng.standard_normal(cout)).astype(dtype)
    return x, w, b


def conv_and_grads(x, w, b, gy):
    """y, and with gy given, dX and dW."""
    xt, wt, bt = (Tensor(a, requires_grad=gy is not None) for a in (x, w, b))
    y = F.conv2d(xt, wt, bt, padding="same")
    if gy is None:
        return [y.data]
    y.backward(gy)
    return [y.data, xt.grad, wt.grad]


def accuracy(size, backward):
    rng = np.random.default_rng(0)
    what = ["y", "dX", "dW"] if backward else ["y"]
    print(f"max |r - r64| / max |r64| per layer for r = {', '.join(what)} (1 image, block1 at {size}x{size}; "
          f"float64 direct reference)")
    print(f"{'layer':14s} {'HxW':>7s} {'C_in':>5s} {'C_out':>5s}"
          + "".join(f"{a + ' ' + r:>14s}" for r in what for a in ALGORITHMS))
    worst = {(a, r): 0.0 for a in ALGORITHMS for r in what}
    for name, s, cin, cout in layer_shapes(size):
        x, w, b = layer_inputs(rng, 1, s, cin, cout)
        gy = rng.standard_normal((1, s, s, cout)).astype(np.float32) if backward else None
        with conv.algorithm("im2col"):
            refs = conv_and_grads(*(a.astype(np.float64) for a in (x, w, b)), gy)
        errs = {}
        for a in ALGORITHMS:
            with conv.algorithm(a):
                got = conv_and_grads(x, w, b, gy)
            for r, g, ref in zip(what, got, refs):
                errs[a, r] = float(np.abs(g - ref).max() / np.abs(ref).max())
                worst[a, r] = max(worst[a, r], errs[a, r])
        line = f"{name:14s} {s:3d}x{s:<3d} {cin:5d} {cout:5d}"
        print(line + "".join(f"{errs[a, r]:14.2e}" for r in what for a in ALGORITHMS), flush=True)
    for a in ALGORITHMS:
        bound = BOUNDS[a]
        for r in what:
            verdict = "" if bound is None else (f"within {bound:g}" if worst[a, r] <= bound else f"ABOVE {bound:g}")
            print(f"worst {a:10s} {r:3s} {worst[a, r]:.2e} {verdict}")


def step_fn(algorithm, x, w, b, gy, mode):
    xt, wt, bt = (Tensor(a, requires_grad=True) for a in (x, w, b))

    def fwd():
        with conv.algorithm(algorithm), no_grad():
            F.conv2d(xt, wt, bt, padding="same", activation="relu")

    def fwdbwd():
        for t in (xt, wt, bt):
            t.grad = None
        with conv.algorithm(algorithm):
            F.conv2d(xt, wt, bt, padding="same", activation="relu").backward(gy)

    return fwd if mode == "fwd" else fwdbwd


def times(batch, size, modes, rounds, steps, layers):
    rng = np.random.default_rng(0)
    print(f"\nconv2d + bias + ReLU at batch {batch}, block1 {size}x{size}, {numba.get_num_threads()} threads; "
          f"{rounds} alternated rounds, fastest of {steps} steps each; load {os.getloadavg()[0]:.1f}")
    for mode in modes:
        print(f"\n{mode}: median ms, and in brackets the median over rounds of time / im2col's time")
        print(f"{'layer':14s}" + "".join(f"{a:>22s}" for a in ALGORITHMS) + "   fastest")
        for name, s, cin, cout in layer_shapes(size):
            if layers and name not in layers:
                continue
            x, w, b = layer_inputs(rng, batch, s, cin, cout)
            gy = rng.standard_normal((batch, s, s, cout)).astype(np.float32)
            fns = {a: step_fn(a, x, w, b, gy, mode) for a in ALGORITHMS}
            for f in fns.values():
                f()
            best = {a: [] for a in ALGORITHMS}
            for _ in range(rounds):
                for a, f in fns.items():
                    ts = []
                    for _ in range(steps):
                        t = time.perf_counter()
                        f()
                        ts.append(time.perf_counter() - t)
                    best[a].append(min(ts))
            line = f"{name:14s}"
            ratios = {}
            for a in ALGORITHMS:
                ratios[a] = statistics.median(t / r for t, r in zip(best[a], best["im2col"]))
                line += f"{1e3 * statistics.median(best[a]):12.1f} ({ratios[a]:5.2f})   "
            print(line + min(ratios, key=ratios.get), flush=True)
    print(f"load {os.getloadavg()[0]:.1f}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parts", default="accuracy,time")
    p.add_argument("--accuracy-size", type=int, default=224)
    p.add_argument("--backward", action="store_true", help="accuracy of dX and dW too")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--modes", default="fwd")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--layers", default="", help="comma-separated layer names (default all)")
    p.add_argument("--threads", type=int, default=min(2, numba.config.NUMBA_NUM_THREADS))
    args = p.parse_args()
    numba.set_num_threads(args.threads)
    parts = args.parts.split(",")
    print(f"auto rule: F({winograd.AUTO_TILE}x{winograd.AUTO_TILE}, 3x3) from C_in = "
          f"{winograd.AUTO_MIN_CHANNELS} and {winograd.AUTO_MIN_PIXELS} output cells per image, im2col otherwise")
    if "accuracy" in parts:
        accuracy(args.accuracy_size, args.backward)
    if "time" in parts:
        times(args.batch, args.size, args.modes.split(","), args.rounds, args.steps,
              [n for n in args.layers.split(",") if n])


if __name__ == "__main__":
    main()
