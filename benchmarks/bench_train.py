"""Times one fine-tuning step (forward, loss, backward, SGD update) of minitl's backbones against
the same networks in PyTorch, on the same threads, and shows where minitl's step spends its time.

    python benchmarks/bench_train.py                                   # ResNet50 and MobileNetV2, batch 16 x 224
    python benchmarks/bench_train.py --models vgg16 vgg19 inception_v3 --rounds 2 --repeat 2
    python benchmarks/bench_train.py --models mobilenet_v2 --modes all --parts profile
    python benchmarks/bench_train.py --parts memory accuracy

The step: a base without its top, global average pooling and a new 10-class Dense layer (as
``minitl finetune --pooling avg --hidden``), softmax cross-entropy on random labels, then SGD
with momentum 0.9, through ``minitl.transfer.make_optimizer``. ``--modes``: ``all`` trains every
layer (BatchNorm in training mode), ``last2`` the last 2 blocks and the top (``minitl finetune
--unfreeze-blocks 2``: the frozen blocks' BatchNorm in inference mode, no gradient below them).

Parts (``--parts``):
- ``time``: minitl against PyTorch in its default layout (NCHW) and channels_last, in a worker
  process, asked in turn ``--rounds`` times for the best of ``--repeat`` steps (after a warm-up
  step). Printed: the medians of the seconds per step and of the per-round ratios minitl /
  PyTorch (below 1: minitl is faster), with the load average before and after.
- ``profile``: minitl's step split by op kind, forward and backward (every ``Function``'s
  forward and backward timed; convolutions by algorithm), plus the loss, the optimizer and
  what is left: the graph's own bookkeeping (recording ops, the backward walk, summing
  gradients).
- ``memory``: the peak resident memory that two steps add (VmHWM over the RSS once the model,
  batch and optimizer are built), each framework in a fresh process.
- ``accuracy``: in training mode (every layer, BatchNorm on batch statistics), how far a
  float32 step is from the same step in float64: max |y32 − y64| / max |y64| over the logits
  and ‖g32 − g64‖ / ‖g64‖ over all parameter gradients, medians over ``--accuracy-seeds`` draws
  of weights and batch; minitl with the 'auto', 'im2col', 'winograd' (F(2×2, 3×3)) and
  'winograd4' (F(4×4, 3×3)) convolutions, PyTorch against its own float64 run (its weights
  drawn as minitl draws them, He normal).

PyTorch's twins: ResNet50 and MobileNetV2 as ``bench_backbones.py`` writes them (Keras'
layout, layer for layer), VGG16 and VGG19 written here, InceptionV3 from torchvision
(``aux_logits=False``; skipped without torchvision). All with random weights.
"""
import argparse
import itertools
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

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import bench_backbones  # its PyTorch models, with torch imported under --child-torch as here
from bench_backbones import best_of, load, memory_status

MODELS = ("vgg16", "vgg19", "resnet50", "inception_v3", "mobilenet_v2")
MODES = ("all", "last2")
CLASSES = 10


def batch_data(batch, size, seed=0):
    import numpy as np
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, size, size, 3)).astype(np.float32)
    return x, rng.integers(0, CLASSES, size=batch)


# ---- minitl's step ----------------------------------------------------------------------
def minitl_model(name, mode, size, dtype="float32", seed=0):
    """The transfer model (base, global average pooling, Dense(10)) with ``mode``'s blocks trainable."""
    from minitl import nn as mnn
    from minitl.transfer import base_and_head, build_model, set_trainable_blocks
    mnn.manual_seed(seed)
    model = build_model({"arch": name, "input_shape": (size, size, 3), "num_classes": CLASSES,
                         "hidden": (), "pooling": "avg"})
    base, _ = base_and_head(model)
    set_trainable_blocks(base, len(base.blocks()) if mode == "all" else 2)
    if dtype != "float32":
        for p in model.parameters() + model.buffers():
            p.data = p.data.astype(dtype)
    return model.train()


def minitl_step(name, mode, batch, size, model=None):
    """(step, model, optimizer): step() runs one SGD step on a fixed random batch."""
    import minitl.functional as F
    from minitl import Tensor
    from minitl.transfer import make_optimizer
    model = model or minitl_model(name, mode, size)
    optimizer = make_optimizer(model, lr=1e-3, momentum=0.9)
    x, y = batch_data(batch, size)
    x = Tensor(x)

    def step():
        optimizer.zero_grad()
        loss = F.softmax_cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
    return step, model, optimizer


# ---- PyTorch's twins ----------------------------------------------------------------------
def torch_vgg(convs):
    layers, cin = [], 3
    for n, filters in zip(convs, (64, 128, 256, 512, 512)):
        block = []
        for _ in range(n):
            block += [nn.Conv2d(cin, filters, 3, padding=1), nn.ReLU(inplace=True)]
            cin = filters
        layers.append(nn.Sequential(*block, nn.MaxPool2d(2)))
    return layers, 512


def torch_base(name):
    """(the base's blocks in input order as modules, output channels)."""
    if name == "vgg16":
        return torch_vgg((2, 2, 3, 3, 3))
    if name == "vgg19":
        return torch_vgg((2, 2, 4, 4, 4))
    if name == "resnet50":
        layers = list(bench_backbones.torch_resnet50())[:-4]     # without pool, flatten, Dense, softmax
        bounds = (0, 6, 9, 13, 19, 22)                           # conv1 (stem), conv2 … conv5 as Keras names them
        return [nn.Sequential(*layers[a:b]) for a, b in itertools.pairwise(bounds)], 2048
    if name == "mobilenet_v2":
        layers = list(bench_backbones.torch_mobilenet_v2())[:-4]
        bounds = (0, 4, 5, 7, 10, 14, 17, 20, 21, 24)            # conv1, bottleneck1 … 7, conv_1
        return [nn.Sequential(*layers[a:b]) for a, b in itertools.pairwise(bounds)], 1280
    if name == "inception_v3":
        import torchvision
        net = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False,
                                              transform_input=False)
        stem = nn.Sequential(net.Conv2d_1a_3x3, net.Conv2d_2a_3x3, net.Conv2d_2b_3x3, net.maxpool1,
                             net.Conv2d_3b_1x1, net.Conv2d_4a_3x3, net.maxpool2)
        mixed = [net.Mixed_5b, net.Mixed_5c, net.Mixed_5d, net.Mixed_6a, net.Mixed_6b, net.Mixed_6c, net.Mixed_6d,
                 net.Mixed_6e, net.Mixed_7a, net.Mixed_7b, net.Mixed_7c]
        return [stem, *mixed], 2048
    raise ValueError(name)


def he_normal_(model):
    """minitl's initialisation (``build_model``: He normal, zero biases) instead of PyTorch's own,
    so that float32 errors compare on weights of the same scale."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            fan_in = m.weight[0].numel()
            nn.init.normal_(m.weight, std=(2 / fan_in) ** 0.5)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def torch_step(name, mode, batch, size, layout, dtype=None, seed=0):
    """(step, model, x, y): step() runs one SGD step (momentum 0.9) on a fixed random batch."""
    torch.manual_seed(seed)
    blocks, channels = torch_base(name)
    top = [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, CLASSES)]
    model = nn.Sequential(*blocks, *top).train()
    if dtype is not None:
        he_normal_(model)
    frozen = blocks[:-2] if mode == "last2" else []
    for block in frozen:
        block.eval()                                    # BatchNorm on its moving statistics, as Keras
        for p in block.parameters():
            p.requires_grad = False
    if dtype is not None:
        model = model.to(dtype)
    x, y = batch_data(batch, size, seed)
    x, y = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(y)
    if dtype is not None:
        x = x.to(dtype)
    if layout == "channels_last":
        x, model = x.contiguous(memory_format=torch.channels_last), model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        optimizer.step()
    return step, model, x, y


def torch_worker(args):
    """Answers lines "MODEL MODE LAYOUT REPEAT" on stdin with the best of REPEAT steps (seconds)."""
    torch.set_num_threads(args.threads)
    steps = {}
    for name in args.models:
        for mode in args.modes:
            for layout in ("default", "channels_last"):
                step = torch_step(name, mode, args.batch, args.size, layout)[0]
                step()
                steps[name, mode, layout] = step
    print("ready", flush=True)
    for line in sys.stdin:
        name, mode, layout, repeat = line.split()
        print(json.dumps(best_of(steps[name, mode, layout], int(repeat))), flush=True)


def child_env(threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    env.pop("OMP_WAIT_POLICY", None)                     # minitl.kernels' setting is for Numba only
    return env


# ---- time ---------------------------------------------------------------------------------
def part_time(args):
    steps = {}
    for name in args.models:
        for mode in args.modes:
            steps[name, mode] = minitl_step(name, mode, args.batch, args.size)[0]
            steps[name, mode]()                         # warm-up: compiles, touches the buffers
    child = subprocess.Popen([sys.executable, __file__, "--child-torch", "--models", *args.models,
                              "--modes", *args.modes, "--batch", str(args.batch), "--size", str(args.size),
                              "--threads", str(args.threads)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=child_env(args.threads))
    assert child.stdout.readline().strip() == "ready"

    def ask_torch(key, layout):
        child.stdin.write(f"{key[0]} {key[1]} {layout} {args.repeat}\n")
        child.stdin.flush()
        return json.loads(child.stdout.readline())

    times = {(key, who): [] for key in steps for who in ("minitl", "default", "channels_last")}
    load_before = load()
    for _ in range(args.rounds):
        for key, step in steps.items():
            times[key, "minitl"].append(best_of(step, args.repeat))
            for layout in ("default", "channels_last"):
                time.sleep(args.pause)
                times[key, layout].append(ask_torch(key, layout))
            time.sleep(args.pause)
    child.stdin.close()
    child.wait()
    print(f"\n## training step, batch {args.batch} x {args.size}x{args.size}, {args.threads} threads, "
          f"{args.rounds} rounds of best of {args.repeat}, load {load_before} -> {load()}")
    print("(seconds per step; ratio = minitl / PyTorch, the median of the rounds' ratios)\n")
    print("| model | trains | minitl | PyTorch default | PyTorch channels-last | ratio default | ratio channels-last "
          "| rounds' ratios (default; channels-last) |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for key in steps:
        mine = times[key, "minitl"]
        ratios = {lay: [a / b for a, b in zip(mine, times[key, lay])] for lay in ("default", "channels_last")}
        med = {who: statistics.median(times[key, who]) for who in ("minitl", "default", "channels_last")}
        print(f"| {key[0]} | {'every layer' if key[1] == 'all' else 'last 2 blocks + top'} | {med['minitl']:.3f} | "
              f"{med['default']:.3f} | {med['channels_last']:.3f} | {statistics.median(ratios['default']):.2f} | "
              f"{statistics.median(ratios['channels_last']):.2f} | "
              + " ".join(f"{r:.2f}" for r in ratios["default"]) + "; "
              + " ".join(f"{r:.2f}" for r in ratios["channels_last"]) + " |", flush=True)


# ---- profile ------------------------------------------------------------------------------
def op_label(fn, args):
    """What to file an op's time under: its kind, convolutions by kernel, stride and algorithm."""
    kind = type(fn).__name__.removesuffix("Function")
    if kind == "Conv2D":
        kh, kw = args[1].shape[:2]
        stride = "/2" if max(fn.stride) > 1 else ""
        how = "reference" if getattr(fn, "reference", False) else \
            f"winograd F({fn.tile}x{fn.tile})" if getattr(fn, "tile", None) else \
            "matmul" if fn._pointwise(args[1]) else "im2col"
        return f"conv {kh}x{kw}{stride} {how}"
    if kind == "DepthwiseConv2D":
        return f"depthwise {args[1].shape[0]}x{args[1].shape[1]}{'/2' if max(fn.stride) > 1 else ''}"
    if kind == "BatchNorm":
        return "batchnorm " + ("training" if fn.training else "inference")
    return kind


class OpProfile:
    """Times every Function's forward and backward while active, filed by ``op_label``."""

    def __init__(self):
        from minitl.tensor import Function
        self.classes = list(Function.registry.values())
        self.times = {}
        self.saved = []

    def _wrap(self, cls, method):
        original = cls.__dict__[method]
        times = self.times

        def timed(fn, *args):
            t0 = time.perf_counter()
            out = original(fn, *args)
            dt = time.perf_counter() - t0
            if method == "forward":
                fn._profile_label = op_label(fn, args)
            entry = times.setdefault(getattr(fn, "_profile_label", type(fn).__name__), [0.0, 0.0, 0])
            entry[method == "backward"] += dt
            entry[2] += method == "forward"
            return out
        self.saved.append((cls, method, original))
        setattr(cls, method, timed)

    def __enter__(self):
        for cls in self.classes:
            for method in ("forward", "backward"):
                if method in cls.__dict__:
                    self._wrap(cls, method)
        return self

    def __exit__(self, *exc):
        for cls, method, original in self.saved:
            setattr(cls, method, original)


def profile_step(name, mode, batch, size, repeat):
    """{label: [forward s, backward s, count]} of the fastest of ``repeat`` profiled steps, with the
    loss, optimizer and the bookkeeping left over."""
    import minitl.functional as F
    step, model, optimizer = minitl_step(name, mode, batch, size)
    step()
    x, y = batch_data(batch, size)
    from minitl import Tensor
    x = Tensor(x)
    best = None
    for _ in range(repeat):
        with OpProfile() as prof:
            t0 = time.perf_counter()
            optimizer.zero_grad()
            loss = F.softmax_cross_entropy(model(x), y)
            t1 = time.perf_counter()
            loss.backward()
            t2 = time.perf_counter()
            optimizer.step()
            t3 = time.perf_counter()
        times = prof.times
        ops_fwd = sum(v[0] for v in times.values())
        ops_bwd = sum(v[1] for v in times.values())
        times["optimizer step"] = [0.0, t3 - t2, 1]
        times["graph bookkeeping"] = [t1 - t0 - ops_fwd, t2 - t1 - ops_bwd, 1]
        if best is None or t3 - t0 < best[0]:
            best = (t3 - t0, times)
    return best


def part_profile(args):
    for name in args.models:
        for mode in args.modes:
            total, times = profile_step(name, mode, args.batch, args.size, args.repeat)
            print(f"\n## minitl's step by op: {name}, {'every layer' if mode == 'all' else 'last 2 blocks + top'}, "
                  f"batch {args.batch} x {args.size}, {args.threads} threads: {total:.3f} s (best of {args.repeat})\n")
            print("| op | count | forward ms | backward ms | total ms | share |")
            print("| --- | ---: | ---: | ---: | ---: | ---: |")
            for label, (fwd, bwd, count) in sorted(times.items(), key=lambda kv: -(kv[1][0] + kv[1][1])):
                print(f"| {label} | {count} | {fwd * 1e3:.1f} | {bwd * 1e3:.1f} | {(fwd + bwd) * 1e3:.1f} | "
                      f"{(fwd + bwd) / total:.1%} |")
            sys.stdout.flush()


# ---- memory -------------------------------------------------------------------------------
def child_memory(args):
    """Prints how far two steps raised the peak RSS over the RSS before the first (bytes), once
    the model, its batch and the optimizer are built: the step's activations, gradients,
    optimizer state and workspace. (Over the RSS before a second step, a process that keeps
    freed memory, as minitl does and PyTorch's allocators may, would show almost nothing.)"""
    name, mode, who = args.memory_of
    if who == "minitl":
        import minitl.kernels  # noqa: F401  (first: it sets OMP_WAIT_POLICY before Numba starts its threads)
        # isort: split
        import numba
        numba.set_num_threads(args.threads)
        step = minitl_step(name, mode, 1, args.size)[0]
        step()                                          # compiles (or loads) the kernels on a batch of 1
        step = minitl_step(name, mode, args.batch, args.size)[0]
    else:
        torch.set_num_threads(args.threads)
        step = torch_step(name, mode, args.batch, args.size, who)[0]
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")                                    # resets VmHWM to the current RSS
    before, _ = memory_status()
    step()
    step()
    print(memory_status()[1] - before)


def part_memory(args):
    print(f"\n## peak memory of two steps (MB the peak RSS rose over the RSS of the built model, batch and "
          f"optimizer), batch {args.batch} x "
          f"{args.size}\n")
    print("| model | trains | minitl | PyTorch default | PyTorch channels-last | minitl / default "
          "| minitl / channels-last |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for name in args.models:
        for mode in args.modes:
            rise = {}
            for who in ("minitl", "default", "channels_last"):
                flag = [] if who == "minitl" else ["--child-torch"]
                out = subprocess.run([sys.executable, __file__, *flag, "--memory-of", name, mode, who,
                                      "--batch", str(args.batch), "--size", str(args.size),
                                      "--threads", str(args.threads)],
                                     capture_output=True, text=True, env=child_env(args.threads), check=True)
                rise[who] = int(out.stdout.split()[-1]) / 2**20
            print(f"| {name} | {'every layer' if mode == 'all' else 'last 2 blocks + top'} | {rise['minitl']:.0f} | "
                  f"{rise['default']:.0f} | {rise['channels_last']:.0f} | {rise['minitl'] / rise['default']:.2f} | "
                  f"{rise['minitl'] / rise['channels_last']:.2f} |", flush=True)


# ---- accuracy -----------------------------------------------------------------------------
def relative_errors(y32, y64, g32, g64):
    import numpy as np
    out = float(np.abs(y32 - y64).max() / np.abs(y64).max())
    num = sum(float(((a.astype(np.float64) - b) ** 2).sum()) for a, b in zip(g32, g64))
    den = sum(float((b ** 2).sum()) for b in g64)
    return out, (num / den) ** 0.5


def minitl_logits_and_grads(name, batch, size, dtype, algorithm, seed):
    import numpy as np

    import minitl.functional as F
    from minitl import Tensor
    from minitl.conv import algorithm as conv_algorithm
    model = minitl_model(name, "all", size, dtype, seed)
    x, y = batch_data(batch, size, seed)
    with conv_algorithm(algorithm):
        logits = model(Tensor(x.astype(dtype)))
        F.softmax_cross_entropy(logits, y).backward()
    params = [p for p in model.parameters() if p.requires_grad]
    return np.asarray(logits.data), [np.asarray(p.grad) for p in params]


def child_torch_accuracy(args):
    """Prints the float32 step's errors against float64 for PyTorch's twin (default layout), per seed."""
    torch.set_num_threads(args.threads)
    errors = []
    for seed in range(args.accuracy_seeds):
        results = []
        for dtype in (torch.float32, torch.float64):
            _, model, x, y = torch_step(args.accuracy_of, "all", args.accuracy_batch, args.accuracy_size, "default",
                                        dtype, seed)
            logits = model(x)
            nn.CrossEntropyLoss()(logits, y).backward()
            results.append((logits.detach().double().numpy(),
                            [p.grad.double().numpy() for p in model.parameters() if p.requires_grad]))
        (y32, g32), (y64, g64) = results
        errors.append(relative_errors(y32, y64, g32, g64))
    print(json.dumps(errors))


ACCURACY_ALGORITHMS = ("auto", "im2col", "winograd", "winograd4")


def accuracy_cell(errors):
    """'logits, grads' as medians over the seeds."""
    return "{:.2g}, {:.2g}".format(*(statistics.median(e[i] for e in errors) for i in (0, 1)))


def part_accuracy(args):
    print(f"\n## float32 against float64 in training mode (BatchNorm on batch statistics), He-normal random "
          f"weights, batch {args.accuracy_batch} x {args.accuracy_size}: max |y32 - y64| / max |y64| of the logits, "
          f"||g32 - g64|| / ||g64|| of all gradients, medians over {args.accuracy_seeds} seeds\n")
    print("| model | minitl 'auto' | im2col | winograd F(2x2) | winograd F(4x4) | PyTorch |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name in args.models:
        errors = {a: [] for a in ACCURACY_ALGORITHMS}
        for seed in range(args.accuracy_seeds):
            y64, g64 = minitl_logits_and_grads(name, args.accuracy_batch, args.accuracy_size, "float64", "im2col",
                                               seed)
            for algorithm in ACCURACY_ALGORITHMS:
                y32, g32 = minitl_logits_and_grads(name, args.accuracy_batch, args.accuracy_size, "float32",
                                                   algorithm, seed)
                errors[algorithm].append(relative_errors(y32, y64, g32, g64))
        out = subprocess.run([sys.executable, __file__, "--child-torch", "--accuracy-of", name,
                              "--accuracy-batch", str(args.accuracy_batch), "--accuracy-size", str(args.accuracy_size),
                              "--accuracy-seeds", str(args.accuracy_seeds), "--threads", str(args.threads)],
                             capture_output=True, text=True, env=child_env(args.threads))
        torch_cell = accuracy_cell(json.loads(out.stdout.split("\n")[-2])) if out.returncode == 0 \
            else "failed: " + out.stderr.strip().splitlines()[-1]
        print(f"| {name} | " + " | ".join(accuracy_cell(errors[a]) for a in ACCURACY_ALGORITHMS)
              + f" | {torch_cell} |", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", choices=MODELS, default=["resnet50", "mobilenet_v2"])
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    p.add_argument("--parts", nargs="+", choices=("time", "profile", "memory", "accuracy"),
                   default=["time", "profile"])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=3, help="steps per contestant and round (the best counts)")
    p.add_argument("--rounds", type=int, default=3, help="alternated rounds (the medians are printed)")
    p.add_argument("--pause", type=float, default=0.5, help="seconds between contestants")
    p.add_argument("--accuracy-batch", type=int, default=4)
    p.add_argument("--accuracy-size", type=int, default=96)
    p.add_argument("--accuracy-seeds", type=int, default=3)
    p.add_argument("--child-torch", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--memory-of", nargs=3, help=argparse.SUPPRESS)
    p.add_argument("--accuracy-of", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.memory_of:
        child_memory(args)
        return
    if args.accuracy_of:
        child_torch_accuracy(args)
        return
    if args.child_torch:
        torch_worker(args)
        return
    import minitl.kernels  # noqa: F401  (first: it sets OMP_WAIT_POLICY before Numba starts its threads)
    # isort: split
    import numba
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    for part in args.parts:
        {"time": part_time, "profile": part_profile, "memory": part_memory, "accuracy": part_accuracy}[part](args)


if __name__ == "__main__":
    main()
