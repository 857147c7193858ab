"""Times the forward pass of minitl's ResNet50 and MobileNetV2 (with the classifier, inference
mode, under no_grad) against the same networks written in PyTorch, on the same threads.

    python benchmarks/bench_backbones.py                      # batch 8 at 224, 2 threads
    python benchmarks/bench_backbones.py --threads 1 --repeat 5 --models mobilenet_v2

The PyTorch models below are written layer for layer as Keras builds them (ResNet50 v1 with
the stride on the first 1x1 convolution, biases on every convolution; MobileNetV2 with
Keras' widths and asymmetric stride-2 padding), with random weights. PyTorch runs in its
own worker process (their OpenMP runtimes must not be interleaved, see bench_conv.py),
once in its default layout (NCHW) and once channels_last, built once and asked in turn
with minitl, --rounds times, with --pause seconds between contestants (PyTorch's OpenMP
threads spin for a while after each call).
Figures: per round, each contestant's best of --repeat passes (after one warm-up pass at the
start); printed
are the medians over rounds of those (ms per image) and of the per-round ratios minitl /
PyTorch, so below 1 means minitl is faster. On a shared machine only these alternated
ratios mean anything; the 1-minute load average before and after is printed with them.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

TORCH_CHILD = "--child-torch" in sys.argv
if TORCH_CHILD:
    import torch  # first, so PyTorch's OpenMP starts with its own defaults
    from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

MODELS = ("resnet50", "mobilenet_v2")


def best_of(run, repeat):
    """The fastest of ``repeat`` calls of run() (seconds); the caller warms it up first."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t0)
    return best


def minitl_runner(name, batch, size):
    """A function that runs one forward of minitl's model at batch x size under no_grad."""
    import numpy as np

    from minitl import Tensor, no_grad
    from minitl.applications import MobileNetV2, ResNet50
    model = (ResNet50 if name == "resnet50" else MobileNetV2)(input_shape=(size, size, 3)).eval()
    x = Tensor(np.random.default_rng(0).normal(size=(batch, size, size, 3)).astype(np.float32))

    def run():
        with no_grad():
            model(x)
    return run


# ---- the PyTorch twins ------------------------------------------------------------------
def torch_resnet50():
    def bn(c):
        return nn.BatchNorm2d(c, eps=1.001e-5)

    class Block(nn.Module):
        def __init__(self, cin, filters, stride, projection):
            super().__init__()
            self.shortcut = nn.Sequential(nn.Conv2d(cin, 4 * filters, 1, stride), bn(4 * filters)) \
                if projection else nn.Identity()
            self.body = nn.Sequential(nn.Conv2d(cin, filters, 1, stride), bn(filters), nn.ReLU(inplace=True),
                                      nn.Conv2d(filters, filters, 3, 1, 1), bn(filters), nn.ReLU(inplace=True),
                                      nn.Conv2d(filters, 4 * filters, 1), bn(4 * filters))

        def forward(self, x):
            return torch.relu(self.shortcut(x) + self.body(x))

    layers = [nn.ZeroPad2d(3), nn.Conv2d(3, 64, 7, 2), bn(64), nn.ReLU(inplace=True), nn.ZeroPad2d(1),
              nn.MaxPool2d(3, 2)]
    cin = 64
    for filters, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
        for i in range(blocks):
            layers.append(Block(cin, filters, stride if i == 0 else 1, i == 0))
            cin = 4 * filters
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2048, 1000), nn.Softmax(dim=1)]
    return nn.Sequential(*layers)


def torch_mobilenet_v2():
    def bn(c):
        return nn.BatchNorm2d(c, eps=1e-3, momentum=0.001)

    class Inverted(nn.Module):
        def __init__(self, cin, cout, expansion, stride):
            super().__init__()
            mid = cin * expansion
            layers = [] if expansion == 1 else [nn.Conv2d(cin, mid, 1, bias=False), bn(mid), nn.ReLU6(inplace=True)]
            layers += [nn.ZeroPad2d((0, 1, 0, 1)) if stride == 2 else nn.ZeroPad2d(1),
                       nn.Conv2d(mid, mid, 3, stride, groups=mid, bias=False), bn(mid), nn.ReLU6(inplace=True),
                       nn.Conv2d(mid, cout, 1, bias=False), bn(cout)]
            self.body, self.residual = nn.Sequential(*layers), cin == cout and stride == 1

        def forward(self, x):
            return x + self.body(x) if self.residual else self.body(x)

    layers = [nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(3, 32, 3, 2, bias=False), bn(32), nn.ReLU6(inplace=True)]
    cin = 32
    for t, c, n, s in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                       (6, 320, 1, 1)):
        for i in range(n):
            layers.append(Inverted(cin, c, t, s if i == 0 else 1))
            cin = c
    layers += [nn.Conv2d(320, 1280, 1, bias=False), bn(1280), nn.ReLU6(inplace=True), nn.AdaptiveAvgPool2d(1),
               nn.Flatten(), nn.Linear(1280, 1000), nn.Softmax(dim=1)]
    return nn.Sequential(*layers)


def torch_worker(batch, size, threads, models):
    """Answers lines "MODEL LAYOUT REPEAT" on stdin with the best of REPEAT forwards (seconds)."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    runs = {}
    for name in models:
        model = (torch_resnet50 if name == "resnet50" else torch_mobilenet_v2)().eval()
        for layout in ("default", "channels_last"):
            x = torch.randn(batch, 3, size, size)
            m = model
            if layout == "channels_last":
                x, m = x.contiguous(memory_format=torch.channels_last), model.to(memory_format=torch.channels_last)

            def run(m=m, x=x):
                with torch.no_grad():
                    m(x)
            run()
            runs[name, layout] = run
    print("ready", flush=True)
    for line in sys.stdin:
        name, layout, repeat = line.split()
        print(json.dumps(best_of(runs[name, layout], int(repeat))), flush=True)


def load():
    with open("/proc/loadavg") as f:
        return f.read().split()[0]


def memory_status():
    """(VmRSS, VmHWM) of this process in bytes, from /proc/self/status."""
    values = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) * 1024
    return values["VmRSS"], values["VmHWM"]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=3, help="passes per contestant and round (the best counts)")
    p.add_argument("--rounds", type=int, default=3, help="alternated rounds (the medians are printed)")
    p.add_argument("--pause", type=float, default=0.5, help="seconds between contestants")
    p.add_argument("--child-torch", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child_torch:
        torch_worker(args.batch, args.size, args.threads, args.models)
        return
    import minitl.kernels  # noqa: F401  (first: it sets OMP_WAIT_POLICY before Numba starts its threads)
    # isort: split
    import numba
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    runs = {name: minitl_runner(name, args.batch, args.size) for name in args.models}
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    env.pop("OMP_WAIT_POLICY", None)                     # minitl.kernels' setting is for Numba only
    child = subprocess.Popen([sys.executable, __file__, "--child-torch", "--models", *args.models,
                              "--batch", str(args.batch), "--size", str(args.size), "--threads", str(args.threads)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    assert child.stdout.readline().strip() == "ready"

    def ask_torch(name, layout):
        child.stdin.write(f"{name} {layout} {args.repeat}\n")
        child.stdin.flush()
        return json.loads(child.stdout.readline())

    times = {(name, who): [] for name in args.models for who in ("minitl", "default", "channels_last")}
    load_before = load()
    for name in args.models:
        runs[name]()                                    # warm-up: compiles, touches the buffers
    for _ in range(args.rounds):
        for name in args.models:
            times[name, "minitl"].append(best_of(runs[name], args.repeat))
            for layout in ("default", "channels_last"):
                time.sleep(args.pause)
                times[name, layout].append(ask_torch(name, layout))
            time.sleep(args.pause)
    child.stdin.close()
    child.wait()
    print(f"forward, batch {args.batch} x {args.size}x{args.size}, {args.threads} threads, {args.rounds} rounds "
          f"of best of {args.repeat}, load {load_before} -> {load()} (ms per image; ratio = minitl / PyTorch, "
          f"median of the rounds' ratios)")
    print(f"{'model':<14} {'minitl':>9} {'torch':>9} {'torch CL':>9} {'ratio':>7} {'ratio CL':>9}  rounds' ratios")
    per = 1e3 / args.batch
    for name in args.models:
        mine = times[name, "minitl"]
        ratios = {layout: [a / b for a, b in zip(mine, times[name, layout])] for layout in ("default", "channels_last")}
        median = {k: statistics.median(v) * per for k, v in
                  (("minitl", mine), ("default", times[name, "default"]),
                   ("channels_last", times[name, "channels_last"]))}
        print(f"{name:<14} {median['minitl']:9.1f} {median['default']:9.1f} {median['channels_last']:9.1f} "
              f"{statistics.median(ratios['default']):7.2f} {statistics.median(ratios['channels_last']):9.2f}  "
              + " ".join(f"{r:.2f}" for r in ratios["default"]))


if __name__ == "__main__":
    main()
