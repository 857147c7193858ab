"""Times minitl's convolution on VGG16's conv layers and on the whole VGG16 conv stack,
forward and forward+backward, float32, against PyTorch on the same threads.

    python benchmarks/bench_conv.py                 # forward 8x224, forward+backward 32x64
    python benchmarks/bench_conv.py --quick         # batch 2 at 224 and 64, 2 rounds
    python benchmarks/bench_conv.py --runs fwd:8x224 --parts stack --rounds 9

Each run is MODE:BATCHxSIZE (MODE fwd or fwdbwd; SIZE is block1's height and width).

Timing. Four worker processes, one per contestant: minitl (the default conv algorithm,
'auto'), minitl with every conv on im2col (the path before Winograd), PyTorch in its
default layout (NCHW) and PyTorch channels-last (its conv on NHWC, like minitl's). Each
worker builds the layer or stack once, warms it up, and answers "time STEPS steps" with
the fastest of them. The parent asks them in turn, --rounds times, so every round times
all four within seconds of each other, and reports for each contestant the median over
rounds of its fastest step (ms), and for each ratio minitl / other the median over
rounds of the ratio within the round: on a shared machine whose speed drifts between
runs, only these alternated ratios are comparable. Each table notes the 1-minute load
average. Threads: --threads (2 by default) for Numba, OpenBLAS, OpenMP and
torch.set_num_threads, set in each worker's environment. Separate processes keep
PyTorch's OpenMP runtime (whose threads spin after each call) apart from Numba's
(minitl.kernels asks for OMP_WAIT_POLICY=PASSIVE, which PyTorch does not inherit), and
the parent waits --pause seconds between contestants. The machine's square sgemm
GFLOP/s (NumPy, 2048x2048, float32) is timed in the minitl worker each round, for
context. Layers: one conv2d (3x3, 'same', bias, ReLU fused) per VGG16 layer shape;
'total' sums the layers' times within each round. Stack: minitl.applications.VGG16(
include_top=False), 13 conv + ReLU and 5 max-pools, and PyTorch's equivalent
(nn.ReLU(inplace=True), as torchvision's VGG); forward under no_grad,
forward+backward from a random output gradient. GF/s counts forward = 2·N·Ho·Wo·9·
C_in·C_out and forward+backward = 3x that.

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
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

BASE_ENV = dict(os.environ)            # before minitl.kernels sets OMP_WAIT_POLICY
TORCH_CHILD = (sys.argv[1:3] in (["--worker", "torch"], ["--worker", "torch_cl"])
               or sys.argv[1:3] == ["--child-memory", "torch"] or sys.argv[1:3] == ["--child-memory", "torch_cl"]
               or "--torch-version" in sys.argv)
if TORCH_CHILD:
    import torch  # first, so PyTorch's OpenMP starts with its own defaults

import numba
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench_backbones import memory_status

import minitl.functional as F
from minitl import Tensor, conv, no_grad
from minitl.applications.vgg16 import VGG16, VGG16_BLOCKS

# (name, input size at 224, C_in, C_out)
VGG16_CONVS = [
    ("block1_conv1", 224, 3, 64), ("block1_conv2", 224, 64, 64),
    ("block2_conv1", 112, 64, 128), ("block2_conv2", 112, 128, 128),
    ("block3_conv1", 56, 128, 256), ("block3_conv2", 56, 256, 256), ("block3_conv3", 56, 256, 256),
    ("block4_conv1", 28, 256, 512), ("block4_conv2", 28, 512, 512), ("block4_conv3", 28, 512, 512),
    ("block5_conv1", 14, 512, 512), ("block5_conv2", 14, 512, 512), ("block5_conv3", 14, 512, 512),
]
CONTESTANTS = ["minitl", "im2col", "torch", "torch_cl"]
LABELS = {"minitl": "minitl", "im2col": "im2col", "torch": "torch", "torch_cl": "torch-cl"}


def layer_shapes(size):
    return [(name, s * size // 224, cin, cout) for name, s, cin, cout in VGG16_CONVS]


def conv_gflop(batch, size, layers=None):
    """Forward GFLOP of the convs (all 13, or those named) for BATCH x SIZE x SIZE inputs."""
    return sum(2 * batch * s * s * 9 * cin * cout for name, s, cin, cout in layer_shapes(size)
               if layers is None or name in layers) / 1e9


# ---- what each worker times ---------------------------------------------------------

def minitl_layer(batch, s, cin, cout, rng):
    x = rng.standard_normal((batch, s, s, cin), dtype=np.float32)
    w = rng.standard_normal((3, 3, cin, cout), dtype=np.float32) * np.float32(0.05)
    b = rng.standard_normal(cout, dtype=np.float32)
    gy = rng.standard_normal((batch, s, s, cout), dtype=np.float32)
    xt, wt, bt = (Tensor(a, requires_grad=True) for a in (x, w, b))

    def forward():
        with no_grad():
            F.conv2d(xt, wt, bt, padding="same", activation="relu")

    def forward_backward():
        for t in (xt, wt, bt):
            t.grad = None
        F.conv2d(xt, wt, bt, padding="same", activation="relu").backward(gy)

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


def torch_layer(torch, batch, s, cin, cout, layout):
    fmt = torch.channels_last if layout == "torch_cl" else torch.contiguous_format
    x = torch.randn(batch, cin, s, s).contiguous(memory_format=fmt).requires_grad_()
    w = (0.05 * torch.randn(cout, cin, 3, 3)).contiguous(memory_format=fmt).requires_grad_()
    b = torch.randn(cout, requires_grad=True)
    gy = torch.randn(batch, cout, s, s).contiguous(memory_format=fmt)

    def forward():
        with torch.no_grad():
            torch.relu_(torch.nn.functional.conv2d(x, w, b, padding=1))

    def forward_backward():
        x.grad = w.grad = b.grad = None
        torch.relu(torch.nn.functional.conv2d(x, w, b, padding=1)).backward(gy)

    return forward, forward_backward


def torch_vgg_stack(torch):
    layers, cin = [], 3
    for convs, filters in VGG16_BLOCKS:
        for _ in range(convs):
            layers += [torch.nn.Conv2d(cin, filters, 3, padding=1), torch.nn.ReLU(inplace=True)]
            cin = filters
        layers.append(torch.nn.MaxPool2d(2, 2))
    return torch.nn.Sequential(*layers)


def torch_stack(torch, batch, size, layout):
    fmt = torch.channels_last if layout == "torch_cl" else torch.contiguous_format
    model = torch_vgg_stack(torch).to(memory_format=fmt)
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=fmt)
    out = size // 32
    gy = torch.randn(batch, 512, out, out).contiguous(memory_format=fmt)

    def forward():
        with torch.no_grad():
            model(x)

    def forward_backward():
        model.zero_grad(set_to_none=True)
        model(x).backward(gy)

    return forward, forward_backward


def build(contestant, what, batch, size, mode):
    """The step function of ``what`` (a layer name or 'stack') for one contestant."""
    rng = np.random.default_rng(0)
    i = 0 if mode == "fwd" else 1
    if contestant in ("torch", "torch_cl"):
        if what == "stack":
            return torch_stack(torch, batch, size, contestant)[i]
        s, cin, cout = next((s, ci, co) for n, s, ci, co in layer_shapes(size) if n == what)
        return torch_layer(torch, batch, s, cin, cout, contestant)[i]
    if what == "stack":
        return minitl_stack(batch, size, rng)[i]
    s, cin, cout = next((s, ci, co) for n, s, ci, co in layer_shapes(size) if n == what)
    return minitl_layer(batch, s, cin, cout, rng)[i]


def sgemm_gflops(n=2048, steps=3):
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    a @ a
    best = min(_timed(lambda: a @ a) for _ in range(steps))
    return 2 * n ** 3 / best / 1e9


def _timed(f):
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def worker(contestant, threads):
    """Answers JSON requests on stdin, one per line: {"what", "batch", "size", "mode", "steps"}
    -> the fastest of ``steps`` steps in ms, or {"sgemm": true} -> GFLOP/s."""
    numba.set_num_threads(threads)
    if contestant in ("torch", "torch_cl"):
        torch.set_num_threads(threads)
    if contestant == "im2col":
        conv.set_algorithm("im2col")
    key, step = None, None
    for line in sys.stdin:
        req = json.loads(line)
        if req.get("sgemm"):
            print(json.dumps(sgemm_gflops()), flush=True)
            continue
        k = (req["what"], req["batch"], req["size"], req["mode"])
        if k != key:
            key, step = None, None           # free the previous setup first
            step = build(contestant, *k)
            step()                           # warm-up: compile or load kernels, caches, page faults
            key = k
        best = min(_timed(step) for _ in range(req["steps"]))
        print(json.dumps(1e3 * best), flush=True)


class Workers:
    """One worker process per contestant, asked in turn."""

    def __init__(self, contestants, threads):
        env = {"NUMBA_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads),
                   "OPENBLAS_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        self.procs = {}
        for c in contestants:
            base = BASE_ENV if c.startswith("torch") else os.environ
            self.procs[c] = subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), "--worker", c, "--threads", str(threads)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=dict(base, **env))

    def ask(self, contestant, **req):
        p = self.procs[contestant]
        p.stdin.write(json.dumps(req) + "\n")
        p.stdin.flush()
        line = p.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {contestant} stopped (exit code {p.wait()})")
        return json.loads(line)

    def close(self):
        for p in self.procs.values():
            p.stdin.close()
            p.wait()


def alternate(workers, contestants, items, batch, size, mode, rounds, steps, pause):
    """{item: {contestant: [fastest ms per round]}}, and the sgemm GFLOP/s per round.
    Each round times every item on every contestant in turn."""
    times = {item: {c: [] for c in contestants} for item in items}
    sgemm = []
    for _ in range(rounds):
        if "minitl" in contestants:
            sgemm.append(workers.ask("minitl", sgemm=True))
        for item in items:
            for c in contestants:
                times[item][c].append(workers.ask(c, what=item, batch=batch, size=size, mode=mode, steps=steps))
                time.sleep(pause)
    return times, sgemm


def ratio(times, a, b):
    """Median over rounds of a's time / b's time in the same round."""
    return statistics.median(x / y for x, y in zip(times[a], times[b]))


def print_table(title, times, contestants, gflop):
    others = [c for c in contestants if c != "minitl"]
    print(f"\n{title}   (load {os.getloadavg()[0]:.2f})")
    head = f"{'':13s}" + "".join(f"{LABELS[c]:>10s}" for c in contestants) + f"{'GF/s':>7s}"
    head += "".join(f"{'/' + LABELS[c]:>11s}" for c in others)
    print(head + "   (ms: median of each round's fastest step; minitl/x: median of per-round ratios)")
    for item, t in times.items():
        line = f"{item:13s}" + "".join(f"{statistics.median(t[c]):10.1f}" for c in contestants)
        line += f"{gflop[item] / statistics.median(t['minitl']) * 1e3:7.1f}"
        line += "".join(f"{ratio(t, 'minitl', c):11.2f}" for c in others)
        print(line, flush=True)


def timing_run(workers, contestants, mode, batch, size, parts, rounds, steps, pause, layers):
    mult = 1 if mode == "fwd" else 3
    title = "forward" if mode == "fwd" else "forward+backward"
    if "layers" in parts:
        names = [n for n, *_ in layer_shapes(size) if not layers or n in layers]
        times, sgemm = alternate(workers, contestants, names, batch, size, mode, rounds, steps, pause)
        gflop = {n: mult * conv_gflop(batch, size, [n]) for n in names}
        total = {c: [sum(times[n][c][r] for n in names) for r in range(rounds)] for c in contestants}
        times["total"] = total
        gflop["total"] = sum(gflop[n] for n in names)
        print_table(f"per layer, {title}, batch {batch} x {size}x{size}, conv2d 3x3 'same' + bias + ReLU; "
                    f"{rounds} rounds x {steps} steps; sgemm {statistics.median(sgemm):.0f} GF/s", times,
                    contestants, gflop)
    if "stack" in parts:
        times, sgemm = alternate(workers, contestants, ["stack"], batch, size, mode, rounds, steps, pause)
        print_table(f"whole VGG16 conv stack, {title}, batch {batch} x {size}x{size}; {rounds} rounds x "
                    f"{steps} steps; sgemm {statistics.median(sgemm):.0f} GF/s", times, contestants,
                    {"stack": mult * conv_gflop(batch, size)})


# ---- peak memory and compile time, each in a fresh subprocess ---------------------------

def child_memory(framework, batch, size, mode, threads):
    """Runs one step and prints 'peak_rss_rise tracemalloc_peak' in bytes."""
    numba.set_num_threads(threads)
    tm_peak = -1
    if framework.startswith("torch"):
        torch.set_num_threads(threads)
    step = build(framework, "stack", batch, size, mode)
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
    """Runs this script with ``args`` in a fresh process and returns its standard output."""
    out = subprocess.run([sys.executable, os.path.abspath(__file__)] + args, capture_output=True, text=True,
                         env=os.environ if env is None else env)
    if out.returncode != 0:
        raise RuntimeError(f"child {args} failed:\n{out.stderr[-2000:]}")
    return out.stdout


def memory_rise(framework, batch, size, mode, threads):
    # Every block of 128 KiB or more gets its own mapping, returned to the system when
    # freed, so the RSS follows the live buffers (glibc would otherwise keep some).
    base = BASE_ENV if framework.startswith("torch") else os.environ
    env = dict(base, MALLOC_MMAP_THRESHOLD_="131072", OMP_NUM_THREADS=str(threads),
               OPENBLAS_NUM_THREADS=str(threads))
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

def parse_runs(text):
    runs = []
    for item in text.split(","):
        mode, _, cfg = item.partition(":")
        b, s = cfg.lower().split("x")
        if mode not in ("fwd", "fwdbwd"):
            raise SystemExit(f"run {item!r}: mode must be fwd or fwdbwd")
        if int(s) % 32:
            raise SystemExit(f"size {s} must be a multiple of 32 (five 2x2 poolings)")
        runs.append((mode, int(b), int(s)))
    return runs


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", default="fwd:8x224,fwdbwd:32x64",
                   help="comma-separated MODE:BATCHxSIZE (default fwd:8x224,fwdbwd:32x64)")
    p.add_argument("--parts", default="layers,stack,memory,compile",
                   help="any of layers, stack, memory, compile (default all)")
    p.add_argument("--layers", default="", help="comma-separated layer names (default all 13)")
    p.add_argument("--rounds", type=int, default=5, help="alternated rounds (default 5)")
    p.add_argument("--steps", type=int, default=2, help="steps per contestant and round; the fastest counts")
    p.add_argument("--pause", type=float, default=0.2, help="seconds between contestants (default 0.2)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--quick", action="store_true", help="batch 2 at 224 and 64, 2 rounds of 1 step")
    p.add_argument("--worker", choices=CONTESTANTS, help=argparse.SUPPRESS)
    p.add_argument("--child-memory", nargs=4, metavar=("FRAMEWORK", "BATCH", "SIZE", "MODE"),
                   help=argparse.SUPPRESS)
    p.add_argument("--child-compile", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--torch-version", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.worker:
        return worker(args.worker, args.threads)
    if args.child_memory:
        fw, b, s, mode = args.child_memory
        return child_memory(fw, int(b), int(s), mode, args.threads)
    if args.child_compile:
        return child_compile(args.threads)
    if args.torch_version:
        return print(torch.__version__)

    if args.quick:
        args.runs, args.rounds, args.steps = "fwd:2x224,fwdbwd:2x64", 2, 1
    runs = parse_runs(args.runs)
    parts = set(args.parts.split(","))
    threads = args.threads
    use_torch = importlib.util.find_spec("torch") is not None and not args.no_torch
    contestants = CONTESTANTS if use_torch else CONTESTANTS[:2]

    print(f"numpy {np.__version__}, numba {numba.__version__}, "
          f"torch {run_child(['--torch-version'], BASE_ENV).strip() if use_torch else 'not used'}; "
          f"{threads} threads each; float32; minitl conv algorithm '{conv.get_algorithm()}'; "
          f"load {os.getloadavg()[0]:.2f}")
    if "compile" in parts:
        cold, warm = compile_times(threads)
        print(f"numba first call (tiny VGG16 forward+backward, every float32 kernel): "
              f"{cold:.1f} s with an empty cache, {warm:.2f} s loading the cache")

    if parts & {"layers", "stack"}:
        workers = Workers(contestants, threads)
        try:
            for mode, batch, size in runs:
                timing_run(workers, contestants, mode, batch, size, parts, args.rounds, args.steps, args.pause,
                           [n for n in args.layers.split(",") if n])
        finally:
            workers.close()

    if "memory" in parts:
        print(f"\npeak memory of one step of the whole stack (MB above the level after building model and "
              f"input; fresh subprocess each)   (load {os.getloadavg()[0]:.2f})")
        for mode, batch, size in runs:
            rise, tm = memory_rise("minitl", batch, size, mode, threads)
            line = (f"{mode:7s} {batch}x{size}  minitl peak RSS +{rise / 2**20:6.0f} "
                    f"(tracemalloc, NumPy buffers: {tm / 2**20:6.0f})")
            if use_torch:
                for c in ("torch", "torch_cl"):
                    trise, _ = memory_rise(c, batch, size, mode, threads)
                    ratio = f"{rise / trise:.2f}" if trise > 0 else "n/a (no rise)"
                    line += f"   {LABELS[c]} +{trise / 2**20:6.0f}  minitl/{LABELS[c]} {ratio}"
            print(line, flush=True)


if __name__ == "__main__":
    main()
