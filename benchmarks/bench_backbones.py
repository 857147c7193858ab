"""Times the forward pass of minitl's ResNet50 and MobileNetV2 (with the classifier, inference
mode, under no_grad) against the same networks written in PyTorch, on the same threads.

    python benchmarks/bench_backbones.py                      # batch 8 at 224, 2 threads
    python benchmarks/bench_backbones.py --threads 1 --repeat 5 --models mobilenet_v2

The PyTorch models below are written layer for layer as Keras builds them (ResNet50 v1 with
the stride on the first 1x1 convolution, biases on every convolution; MobileNetV2 with
Keras' widths and asymmetric stride-2 padding), with random weights. PyTorch runs in its
own subprocess after minitl (their OpenMP runtimes must not be interleaved, see
bench_conv.py), once in its default layout (NCHW) and once channels_last.
Figures: best of --repeat after one warm-up pass, in ms per image; the ratio is
minitl / PyTorch, so below 1 means minitl is faster. On a shared machine only repeated,
alternated runs mean anything.
"""
import argparse
import json
import os
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
    run()  # warm-up: compiles, touches the buffers
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t0)
    return best


def time_minitl(name, batch, size, repeat):
    import numpy as np

    from minitl import Tensor, no_grad
    from minitl.applications import MobileNetV2, ResNet50
    model = (ResNet50 if name == "resnet50" else MobileNetV2)(input_shape=(size, size, 3)).eval()
    x = Tensor(np.random.default_rng(0).normal(size=(batch, size, size, 3)).astype(np.float32))

    def run():
        with no_grad():
            model(x)
    return best_of(run, repeat)


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


def time_torch(name, batch, size, repeat, threads):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = (torch_resnet50 if name == "resnet50" else torch_mobilenet_v2)().eval()
    out = {"params": sum(p.numel() for p in model.parameters())}
    for layout in ("default", "channels_last"):
        x = torch.randn(batch, 3, size, size)
        m = model
        if layout == "channels_last":
            x, m = x.contiguous(memory_format=torch.channels_last), model.to(memory_format=torch.channels_last)

        def run():
            with torch.no_grad():
                m(x)
        out[layout] = best_of(run, repeat)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--child-torch", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child_torch:
        print(json.dumps({name: time_torch(name, args.batch, args.size, args.repeat, args.threads)
                          for name in args.models}))
        return
    import numba
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    mine = {name: time_minitl(name, args.batch, args.size, args.repeat) for name in args.models}
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    child = subprocess.run([sys.executable, __file__, "--child-torch", "--models", *args.models,
                            "--batch", str(args.batch), "--size", str(args.size), "--threads", str(args.threads),
                            "--repeat", str(args.repeat)], capture_output=True, text=True, env=env, check=True)
    theirs = json.loads(child.stdout.strip().splitlines()[-1])
    print(f"forward, batch {args.batch} x {args.size}x{args.size}, {args.threads} threads, best of {args.repeat} "
          f"(ms per image; ratio = minitl / PyTorch)")
    print(f"{'model':<14} {'minitl':>9} {'torch':>9} {'torch CL':>9} {'ratio':>7} {'ratio CL':>9}")
    per = 1e3 / args.batch
    for name in args.models:
        t = theirs[name]
        print(f"{name:<14} {mine[name] * per:9.1f} {t['default'] * per:9.1f} {t['channels_last'] * per:9.1f} "
              f"{mine[name] / t['default']:7.2f} {mine[name] / t['channels_last']:9.2f}")


if __name__ == "__main__":
    main()
