"""Times minitl's convolution on VGG16's conv layers and on the whole VGG16 conv stack,
forward and forward+backward, float32 NHWC, against NumPy's own GEMM and PyTorch.

    python benchmarks/bench_conv.py                 # 8x224 and 32x64, layers and stack
    python benchmarks/bench_conv.py --quick         # batch 2 at 224 and 64, 1 repeat
    python benchmarks/bench_conv.py --configs 8x224 --parts stack --repeat 3

Each configuration is BATCHxSIZE (SIZE is block1's height and width).

Tables (milliseconds: best of --repeat after one warm-up, and the median for the
stack; on a shared machine the best is the steadier figure; GF/s = GFLOP/s with
forward = 2·N·Ho·Wo·9·C_in·C_out and forward+backward = 3x that):
  layers  one conv2d (3x3, 'same', with bias) per VGG16 layer shape.
          gemm: NumPy's own matmul on fresh arrays of the same shapes (forward: cols @ W;
          forward+backward: that plus colsᵀ @ gY and gY @ Wᵀ); gemm/conv is the share of
          plain-GEMM speed that the whole conv op reaches (1.0 = as fast as the GEMMs alone).
  stack   minitl.applications.VGG16(include_top=False): 13 conv + ReLU, 5 max-pools;
          forward under no_grad, forward+backward from a random output gradient.
  torch   the same layers in PyTorch (channels_last, float32, the same thread count,
          nn.ReLU(inplace=True) as torchvision's VGG), and the ratio minitl / torch.
PyTorch runs in its own subprocess, after minitl: its OpenMP threads keep spinning
after each call and would slow minitl's kernels if interleaved, and the two share one
OpenMP runtime when both are loaded (minitl.kernels asks for OMP_WAIT_POLICY=PASSIVE,
which PyTorch should not inherit, nor minitl lose to PyTorch's earlier start).

Peak memory (--parts memory): for each framework and mode, a fresh subprocess builds
the stack and its input, runs one step to warm up, resets the kernel's peak-RSS mark
(writing 5 to /proc/self/clear_refs), runs one more step and reports how far the peak
resident set size (VmHWM) rose above the RSS just before it: the memory the step
itself needed (activations, saved buffers, im2col matrices, gradients), counted the
same way for both frameworks. For minitl it also reports tracemalloc's peak over the
step, which counts NumPy's data buffers (NumPy reports them to tracemalloc) and
nothing else. (getrusage's ru_maxrss is not used: after fork+exec it starts at the
parent's RSS.)

Numba compile time: a subprocess with an empty NUMBA_CACHE_DIR runs a tiny VGG16
forward+backward (every float32 kernel compiles), then a second one loads the same
cache (what later runs pay, since the kernels use cache=True).
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import importlib.util
import json

import numba
import numpy as np

BASE_ENV = dict(os.environ)            # before minitl.kernels sets OMP_WAIT_POLICY
TORCH_CHILD = "--child-torch" in sys.argv or sys.argv[1:3] == ["--child-memory", "torch"]
if TORCH_CHILD:
    import torch                       # first, so PyTorch's OpenMP starts with its own defaults

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import minitl.functional as F  # noqa: E402
from minitl import Tensor, no_grad  # noqa: E402
from minitl.applications.vgg16 import VGG16, VGG16_BLOCKS  # noqa: E402

# (name, input size at 224, C_in, C_out)
VGG16_CONVS = [
    ("block1_conv1", 224, 3, 64), ("block1_conv2", 224, 64, 64),
    ("block2_conv1", 112, 64, 128), ("block2_conv2", 112, 128, 128),
    ("block3_conv1", 56, 128, 256), ("block3_conv2", 56, 256, 256), ("block3_conv3", 56, 256, 256),
    ("block4_conv1", 28, 256, 512), ("block4_conv2", 28, 512, 512), ("block4_conv3", 28, 512, 512),
    ("block5_conv1", 14, 512, 512), ("block5_conv2", 14, 512, 512), ("block5_conv3", 14, 512, 512),
]


def layer_shapes(size):
    return [(name, s * size // 224, cin, cout) for name, s, cin, cout in VGG16_CONVS]


def conv_gflop(batch, size):
    """Forward GFLOP of the 13 convs for BATCH x SIZE x SIZE inputs."""
    return sum(2 * batch * s * s * 9 * cin * cout for _, s, cin, cout in layer_shapes(size)) / 1e9


def timings(fns, repeat):
    """{name: (median, best) ms} of ``repeat`` rounds that call every function once, in turn,
    after one warm-up round. Interleaving puts both sides of a ratio in the same moments."""
    for f in fns.values():
        f()                                   # warm-up: caches, page faults, thread pools
    times = {name: [] for name in fns}
    for _ in range(repeat):
        for name, f in fns.items():
            t = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - t)
    return {name: (1e3 * statistics.median(v), 1e3 * min(v)) for name, v in times.items()}


# ---- minitl ------------------------------------------------------------------------

def minitl_layer(batch, s, cin, cout, rng):
    x = rng.standard_normal((batch, s, s, cin), dtype=np.float32)
    w = rng.standard_normal((3, 3, cin, cout), dtype=np.float32) * np.float32(0.05)
    b = rng.standard_normal(cout, dtype=np.float32)
    gy = rng.standard_normal((batch, s, s, cout), dtype=np.float32)
    xt, wt, bt = (Tensor(a, requires_grad=True) for a in (x, w, b))

    def forward():
        with no_grad():
            F.conv2d(xt, wt, bt, padding="same")

    def forward_backward():
        for t in (xt, wt, bt):
            t.grad = None
        F.conv2d(xt, wt, bt, padding="same").backward(gy)

    return forward, forward_backward


def gemm_refs(batch, s, cin, cout, rng):
    m, k = batch * s * s, 9 * cin
    a = rng.standard_normal((m, k), dtype=np.float32)
    w = rng.standard_normal((k, cout), dtype=np.float32)
    g = rng.standard_normal((m, cout), dtype=np.float32)

    def forward():
        a @ w

    def forward_backward():
        a @ w
        a.T @ g
        g @ w.T

    return forward, forward_backward


def minitl_stack(batch, size, rng):
    model = VGG16(include_top=False, input_shape=(size, size, 3))
    x = Tensor(rng.standard_normal((batch, size, size, 3), dtype=np.float32))
    out = size // 32
    gy = rng.standard_normal((batch, out, out, 512), dtype=np.float32)

    def forward():
        with no_grad():
            model(x)

    def forward_backward():
        model.zero_grad()
        model(x).backward(gy)

    return forward, forward_backward


# ---- PyTorch -----------------------------------------------------------------------

def torch_layer(torch, batch, s, cin, cout):
    cl = torch.channels_last
    x = torch.randn(batch, cin, s, s).contiguous(memory_format=cl).requires_grad_()
    w = (0.05 * torch.randn(cout, cin, 3, 3)).contiguous(memory_format=cl).requires_grad_()
    b = torch.randn(cout, requires_grad=True)
    gy = torch.randn(batch, cout, s, s).contiguous(memory_format=cl)

    def forward():
        with torch.no_grad():
            torch.nn.functional.conv2d(x, w, b, padding=1)

    def forward_backward():
        x.grad = w.grad = b.grad = None
        torch.nn.functional.conv2d(x, w, b, padding=1).backward(gy)

    return forward, forward_backward


def torch_vgg_stack(torch):
    layers, cin = [], 3
    for convs, filters in VGG16_BLOCKS:
        for _ in range(convs):
            layers += [torch.nn.Conv2d(cin, filters, 3, padding=1), torch.nn.ReLU(inplace=True)]
            cin = filters
        layers.append(torch.nn.MaxPool2d(2, 2))
    return torch.nn.Sequential(*layers).to(memory_format=torch.channels_last)


def torch_stack(torch, batch, size):
    model = torch_vgg_stack(torch)
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    out = size // 32
    gy = torch.randn(batch, 512, out, out).contiguous(memory_format=torch.channels_last)

    def forward():
        with torch.no_grad():
            model(x)

    def forward_backward():
        model.zero_grad(set_to_none=True)
        model(x).backward(gy)

    return forward, forward_backward


# ---- peak memory and compile time, each in a fresh subprocess ---------------------------

def memory_status():
    """(VmRSS, VmHWM) of this process in bytes, from /proc/self/status."""
    values = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) * 1024
    return values["VmRSS"], values["VmHWM"]


def child_memory(framework, batch, size, mode, threads):
    """Runs one step and prints 'peak_rss_rise tracemalloc_peak' in bytes."""
    numba.set_num_threads(threads)
    tm_peak = -1
    if framework == "torch":
        torch.set_num_threads(threads)
        fwd, fwdbwd = torch_stack(torch, batch, size)
    else:
        fwd, fwdbwd = minitl_stack(batch, size, np.random.default_rng(0))
    step = fwd if mode == "fwd" else fwdbwd
    step()                                    # warm-up (kernels compiled or loaded, allocator pools)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")                          # resets VmHWM to the current RSS
    before, _ = memory_status()
    if framework == "minitl":
        import tracemalloc
        tracemalloc.start()
        step()
        tm_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    else:
        step()
    _, peak = memory_status()
    print(peak - before, tm_peak)


def run_child(args, env=None):
    """Runs this script with ``args`` in a fresh process (PyTorch children get the
    environment minitl started with) and returns its standard output."""
    if env is None:
        env = BASE_ENV if "--child-torch" in args else os.environ
    out = subprocess.run([sys.executable, os.path.abspath(__file__)] + args, capture_output=True, text=True,
                         env=env)
    if out.returncode != 0:
        raise RuntimeError(f"child {args} failed:\n{out.stderr[-2000:]}")
    return out.stdout


def memory_rise(framework, batch, size, mode, threads):
    # Every block of 128 KiB or more gets its own mapping, returned to the system when
    # freed, so the RSS follows the live buffers (glibc would otherwise keep some).
    base = BASE_ENV if framework == "torch" else os.environ
    env = dict(base, MALLOC_MMAP_THRESHOLD_="131072")
    out = run_child(["--child-memory", framework, str(batch), str(size), mode, "--threads", str(threads)], env)
    rise, tm = (int(v) for v in out.split())
    return rise, tm


def child_compile(threads):
    numba.set_num_threads(threads)
    f, fb = minitl_stack(1, 32, np.random.default_rng(0))
    t = time.perf_counter()
    fb()
    f()
    print(time.perf_counter() - t)


def compile_times(threads):
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        cmd = ["--child-compile", "--threads", str(threads)]
        cold = float(run_child(cmd, env))
        warm = float(run_child(cmd, env))
    return cold, warm


# ---- the run -------------------------------------------------------------------------

def measure(frameworks, configs, parts, modes, repeat):
    """{(config, layer name or 'stack', mode, framework): (median ms, best ms)}."""
    rng = np.random.default_rng(0)
    results = {}
    for batch, size in configs:
        cfg = (batch, size)
        if "stack" in parts:
            fw = frameworks[0]
            f = minitl_stack(batch, size, rng) if fw == "minitl" else torch_stack(torch, batch, size)
            for i, mode in enumerate(("fwd", "fwdbwd")):
                if mode in modes:
                    results[cfg, "stack", mode, fw] = timings({fw: f[i]}, repeat)[fw]
            del f
        if "layers" in parts:
            for name, s, cin, cout in layer_shapes(size):
                fns = {}
                for fw in frameworks:
                    if fw == "minitl":
                        fns[fw] = minitl_layer(batch, s, cin, cout, rng)
                    elif fw == "gemm":
                        fns[fw] = gemm_refs(batch, s, cin, cout, rng)
                    else:
                        fns[fw] = torch_layer(torch, batch, s, cin, cout)
                for i, mode in enumerate(("fwd", "fwdbwd")):
                    if mode in modes:
                        for fw, t in timings({fw: f[i] for fw, f in fns.items()}, repeat).items():
                            results[cfg, name, mode, fw] = t
                del fns
    return results


def child_torch(what, args):
    """PyTorch's version, or its timings as JSON rows (batch, size, what, mode, 'torch', median, best)."""
    if what == "version":
        return print(torch.__version__)
    torch.set_num_threads(args.threads)
    results = measure(["torch"], parse_configs(args.configs), set(args.parts.split(",")),
                      args.modes.split(","), args.repeat)
    print(json.dumps([[*cfg, name, mode, fw, *t] for (cfg, name, mode, fw), t in results.items()]))


def parse_configs(text):
    configs = []
    for item in text.split(","):
        b, s = item.lower().split("x")
        if int(s) % 32:
            raise SystemExit(f"size {s} must be a multiple of 32 (five 2x2 poolings)")
        configs.append((int(b), int(s)))
    return configs


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", default="8x224,32x64", help="comma-separated BATCHxSIZE (default 8x224,32x64)")
    p.add_argument("--parts", default="stack,layers,memory,compile",
                   help="any of stack, layers, memory, compile (default all)")
    p.add_argument("--modes", default="fwd,fwdbwd", help="fwd, fwdbwd or both")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--threads", type=int, default=numba.get_num_threads())
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--quick", action="store_true", help="batch 2 at 224 and 64, --repeat 1")
    p.add_argument("--child-memory", nargs=4, metavar=("FRAMEWORK", "BATCH", "SIZE", "MODE"),
                   help=argparse.SUPPRESS)
    p.add_argument("--child-compile", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--child-torch", choices=["version", "time"], help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.child_memory:
        fw, b, s, mode = args.child_memory
        return child_memory(fw, int(b), int(s), mode, args.threads)
    if args.child_compile:
        return child_compile(args.threads)
    if args.child_torch:
        return child_torch(args.child_torch, args)

    if args.quick:
        args.configs, args.repeat = "2x224,2x64", 1
    configs = parse_configs(args.configs)
    parts = set(args.parts.split(","))
    modes = args.modes.split(",")
    threads = min(args.threads, numba.config.NUMBA_NUM_THREADS)
    numba.set_num_threads(threads)
    use_torch = importlib.util.find_spec("torch") is not None and not args.no_torch

    print(f"numpy {np.__version__}, numba {numba.__version__} ({threads} threads), "
          f"torch {run_child(['--child-torch', 'version']).strip() if use_torch else 'not used'}, "
          f"float32 NHWC, {args.repeat} repeats after a warm-up")
    if "compile" in parts:
        cold, warm = compile_times(threads)
        print(f"numba first call (tiny VGG16 forward+backward, every float32 kernel): "
              f"{cold:.1f} s with an empty cache, {warm:.2f} s loading the cache")

    # minitl here, with NumPy's GEMMs interleaved layer by layer; then PyTorch in a subprocess.
    results = measure(["minitl", "gemm"], configs, parts, modes, args.repeat)
    if use_torch and parts & {"stack", "layers"}:
        out = run_child(["--child-torch", "time", "--configs", args.configs, "--parts", args.parts,
                         "--modes", args.modes, "--repeat", str(args.repeat), "--threads", str(threads)])
        for batch, size, what, mode, fw, med, best in json.loads(out):
            results[(batch, size), what, mode, fw] = (med, best)

    for batch, size in configs:
        if not parts & {"stack", "layers", "memory"}:
            break
        cfg = (batch, size)
        gflop = conv_gflop(batch, size)
        print(f"\n=== batch {batch} x {size}x{size}x3: 13 convs = {gflop:.1f} GFLOP forward ===")
        if "layers" in parts:
            for mode in modes:
                mult = 1 if mode == "fwd" else 3
                title = "forward" if mode == "fwd" else "forward+backward"
                print(f"\nper layer, {title} (ms, best of {args.repeat})")
                head = f"{'layer':13s} {'M x K x N':>20s} {'minitl':>8s} {'GF/s':>6s} {'gemm':>8s} {'gemm/conv':>9s}"
                if use_torch:
                    head += f" {'torch':>8s} {'GF/s':>6s} {'minitl/torch':>12s}"
                print(head)
                tot = {"minitl": 0.0, "gemm": 0.0, "torch": 0.0}
                for name, s, cin, cout in layer_shapes(size):
                    gf = mult * 2 * batch * s * s * 9 * cin * cout / 1e9
                    t = {fw: results[cfg, name, mode, fw][1] for fw in tot if (cfg, name, mode, fw) in results}
                    for fw in t:
                        tot[fw] += t[fw]
                    line = (f"{name:13s} {f'{batch * s * s}x{9 * cin}x{cout}':>20s} {t['minitl']:8.1f} "
                            f"{gf / t['minitl'] * 1e3:6.1f} {t['gemm']:8.1f} {t['gemm'] / t['minitl']:9.2f}")
                    if use_torch:
                        line += f" {t['torch']:8.1f} {gf / t['torch'] * 1e3:6.1f} {t['minitl'] / t['torch']:12.2f}"
                    print(line)
                gf = mult * gflop
                line = (f"{'total':13s} {'':>20s} {tot['minitl']:8.1f} {gf / tot['minitl'] * 1e3:6.1f} "
                        f"{tot['gemm']:8.1f} {tot['gemm'] / tot['minitl']:9.2f}")
                if use_torch:
                    line += f" {tot['torch']:8.1f} {gf / tot['torch'] * 1e3:6.1f} {tot['minitl'] / tot['torch']:12.2f}"
                print(line)
        if "stack" in parts:
            print("\nwhole VGG16 conv stack (13 conv + ReLU, 5 max-pools), ms: best (median); GF/s of the best")
            for mode in modes:
                gf = gflop * (1 if mode == "fwd" else 3)
                med, best = results[cfg, "stack", mode, "minitl"]
                line = f"{mode:7s} minitl {best:8.1f} ({med:8.1f}) {gf / best * 1e3:6.1f} GF/s"
                if use_torch:
                    tmed, tbest = results[cfg, "stack", mode, "torch"]
                    line += (f"   torch {tbest:8.1f} ({tmed:8.1f}) {gf / tbest * 1e3:6.1f} GF/s"
                             f"   minitl/torch {best / tbest:.2f} (medians {med / tmed:.2f})")
                print(line)
        if "memory" in parts:
            print("\npeak memory of one step of the whole stack (MB above the level after building model and "
                  "input; fresh subprocess each)")
            for mode in modes:
                rise, tm = memory_rise("minitl", batch, size, mode, threads)
                line = f"{mode:7s} minitl peak RSS +{rise / 2**20:7.0f}  (tracemalloc, NumPy buffers: {tm / 2**20:7.0f})"
                if use_torch:
                    trise, _ = memory_rise("torch", batch, size, mode, threads)
                    line += f"   torch peak RSS +{trise / 2**20:7.0f}   minitl/torch {rise / trise:.2f}"
                print(line, flush=True)


if __name__ == "__main__":
    main()
