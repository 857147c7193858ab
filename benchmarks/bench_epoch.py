"""Times one fine-tuning epoch of the real ``minitl finetune`` command on a folder of JPEG files
against a plain PyTorch/torchvision script doing the same work, so that decoding, resizing,
batching, validation and checkpoints count as well as the training step.

    python benchmarks/bench_epoch.py                                   # MobileNetV2 and ResNet50, 300 images
    python benchmarks/bench_epoch.py --models mobilenet_v2 --images 40 --rounds 1
    python benchmarks/bench_epoch.py --data /tmp/epoch-data --rounds 3 --head avg --optimizer adam

The data: ``--images`` JPEG files written with Pillow (quality 90) under ``--data`` (a temporary
folder by default; a folder made earlier with the same settings is reused), in ``train/`` and
``val/`` (4 of 5 images train), ``--classes`` class folders each. Every image is a noisy
background of its class's colour with random ellipses, rectangles and stripes, 224 to 480
pixels a side (aspect ratios vary, so every image is resized; both sides reach 448 on a few,
where minitl's JPEG draft decoding halves them).

minitl: ``python -m minitl finetune --arch ARCH --image-size 224 --unfreeze-blocks 2
--freeze-epochs 0 --epochs 1 --batch-size 16 --optimizer sgd --no-cache --quiet`` (random
weights: no ``--weights``), with the default head (Flatten, Dense(1024, relu), Dense(512,
relu), Dense(K); ``--head avg``: global average pooling and Dense(K), ``--pooling avg --hidden``),
the default augmentation (none), schedule (one-cycle over the epoch's batches) and ``--lr-mult``
(10). Its epoch time is the ``seconds`` of the epoch in the run's ``record.json``: the training
pass, from asking for the first batch to the last update (decoding and preparing every batch
in the main thread, forward, loss, backward, update, the schedule), without the validation
pass and the checkpoint that follow it.

PyTorch (skipped with a message when it is not installed), in its own process with
``torch.set_num_threads(--threads)``: ``torchvision.datasets.ImageFolder`` on ``train/`` and
``val/``; ``Resize(224)`` (shorter side to 224, bilinear, as minitl's cover-resize of a square
target) and ``CenterCrop(224)``, no augmentation; the backbone's own preprocessing (MobileNetV2
x/127.5 - 1; ResNet50 RGB to BGR minus the ImageNet mean); a ``DataLoader`` with batch 16,
shuffled, ``num_workers=0`` (minitl decodes in the main process, one batch at a time); the
PyTorch twins of ``bench_train.py`` in PyTorch's default layout (``--layout channels_last``
for the other), all but the last 2 blocks frozen with their BatchNorm in inference mode, and
the same head; SGD with momentum 0.9 (or Adam) in one group per unfrozen block and one for
the head at minitl's rates (lr / 10 ... lr), ``OneCycleLR`` as minitl's one-cycle. Its epoch time
is measured the same way (iterator start to last update); then the validation pass (eval
mode, no_grad) and a checkpoint (weights, optimizer state and the best weights, as
``torch.save``), which minitl's run also does after its epoch.

Each contestant also has its whole command timed (process start to exit: imports, scanning
the folders, minitl's check that every image decodes, building the model, the epoch,
validation, checkpoints, minitl's record and curves). Both sides start with an untimed
warm-up run of their command on a few of the images (so Numba's cache and the files are
warm), then alternate ``--rounds`` times; the table shows the medians, and the ratio is the
median of the per-round ratios minitl / PyTorch (below 1: minitl is faster).
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MODELS = ("mobilenet_v2", "resnet50")
BATCH = 16
SIZE = 224
UNFREEZE = 2
LR = {"sgd": 0.01, "adam": 0.003}                 # minitl finetune's default head rates
LR_MULT = 10.0
DATA_VERSION = 1


# ---- the data -----------------------------------------------------------------------------
def make_image(rng, label, classes):
    """A Pillow RGB image of class ``label``: its colour, noise and random shapes, 224 to 480 a side."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFilter
    w, h = (int(v) for v in rng.integers(224, 481, size=2))
    hue = np.array([np.cos(2 * np.pi * (label / classes + k / 3)) for k in range(3)])
    base = 128 + 90 * hue
    pixels = base + rng.normal(0, 25, size=(h // 4 + 1, w // 4 + 1, 3))
    img = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).resize((w, h), Image.BILINEAR)
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(4, 10))):
        x0, y0 = int(rng.integers(0, w - 20)), int(rng.integers(0, h - 20))
        x1, y1 = x0 + int(rng.integers(20, w // 2)), y0 + int(rng.integers(20, h // 2))
        colour = tuple(int(v) for v in np.clip(base[::-1] + rng.normal(0, 60, 3), 0, 255))
        kind = (label + int(rng.integers(0, 2))) % 3
        if kind == 0:
            draw.ellipse((x0, y0, x1, y1), fill=colour)
        elif kind == 1:
            draw.rectangle((x0, y0, x1, y1), fill=colour)
        else:
            for k in range(x0, x1, 12):
                draw.line((k, y0, k + (y1 - y0) // 3, y1), fill=colour, width=4)
    img = img.filter(ImageFilter.GaussianBlur(0.8))
    noise = rng.normal(0, 6, size=(h, w, 3))
    return Image.fromarray(np.clip(np.asarray(img, dtype=np.float32) + noise, 0, 255).astype(np.uint8))


def make_data(folder, images, classes, seed=0):
    """Write (or reuse) ``images`` JPEG files in folder/train and folder/val, class folders in each."""
    import numpy as np
    spec = {"version": DATA_VERSION, "images": images, "classes": classes, "seed": seed}
    marker = os.path.join(folder, "bench_epoch.json")
    if os.path.exists(marker):
        with open(marker) as f:
            if json.load(f) == spec:
                return False
    for split in ("train", "val"):
        shutil.rmtree(os.path.join(folder, split), ignore_errors=True)
    rng = np.random.default_rng(seed)
    for i in range(images):
        label = i % classes
        split = "val" if (i // classes) % 5 == 4 else "train"
        path = os.path.join(folder, split, f"class{label}")
        os.makedirs(path, exist_ok=True)
        make_image(rng, label, classes).save(os.path.join(path, f"img{i:05d}.jpg"), quality=90)
    with open(marker, "w") as f:
        json.dump(spec, f)
    return True


def warmup_data(folder, data, classes):
    """A small copy of the data (two batches of training images, one of validation) for the warm-up runs."""
    for split, per_class in (("train", -(-2 * BATCH // classes)), ("val", -(-BATCH // classes))):
        for c in range(classes):
            src, dst = os.path.join(data, split, f"class{c}"), os.path.join(folder, split, f"class{c}")
            os.makedirs(dst, exist_ok=True)
            for name in sorted(os.listdir(src))[:per_class]:
                shutil.copy(os.path.join(src, name), dst)


# ---- minitl -------------------------------------------------------------------------------
def thread_env(threads):
    env = dict(os.environ)
    for key in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env[key] = str(threads)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)
    return env


def minitl_command(name, data, out, args):
    head = ["--pooling", "avg", "--hidden"] if args.head == "avg" else []
    return [sys.executable, "-m", "minitl", "finetune", "--data", data, "--out", out, "--arch", name,
            "--image-size", str(SIZE), "--unfreeze-blocks", str(UNFREEZE), "--freeze-epochs", "0", "--epochs", "1",
            "--batch-size", str(BATCH), "--optimizer", args.optimizer, "--no-cache", "--quiet", *head]


def run_minitl(name, data, out, args):
    """(epoch seconds from the run's record, whole command seconds)."""
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    done = subprocess.run(minitl_command(name, data, out, args), capture_output=True, text=True,
                          env=thread_env(args.threads), cwd=ROOT)
    wall = time.perf_counter() - t0
    if done.returncode:
        raise SystemExit(f"minitl finetune failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    with open(os.path.join(out, "record.json")) as f:
        history = json.load(f)["history"]
    return history[-1]["seconds"], wall


# ---- PyTorch ------------------------------------------------------------------------------
def torch_epoch(args):
    """The PyTorch script: one training epoch, validation and a checkpoint; prints its times as JSON."""
    start = time.perf_counter()
    import torch
    from torch import nn
    torch.set_num_threads(args.threads)
    import torchvision
    from torchvision import transforms

    sys.path.insert(0, HERE)
    import bench_train
    bench_train.torch, bench_train.nn = torch, nn

    name, data, out = args.torch_child
    if name == "mobilenet_v2":                          # Keras' 'tf' preprocessing: x / 127.5 - 1
        prep = transforms.Normalize([0.5] * 3, [0.5] * 3)
    else:                                               # 'caffe': RGB -> BGR, minus the ImageNet mean (0..255)
        mean = torch.tensor([103.939, 116.779, 123.68]).view(3, 1, 1)

        def prep(x):
            return x.flip(0).mul(255.0).sub_(mean)
    pipeline = transforms.Compose([transforms.Resize(SIZE), transforms.CenterCrop(SIZE), transforms.ToTensor(), prep])
    train_set = torchvision.datasets.ImageFolder(os.path.join(data, "train"), pipeline)
    val_set = torchvision.datasets.ImageFolder(os.path.join(data, "val"), pipeline)
    train_loader = torch.utils.data.DataLoader(train_set, BATCH, shuffle=True, num_workers=0)
    val_loader = torch.utils.data.DataLoader(val_set, BATCH, num_workers=0)
    classes = len(train_set.classes)

    torch.manual_seed(0)
    blocks, channels = bench_train.torch_base(name)
    if args.head == "avg":
        head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, classes))
    else:
        head = nn.Sequential(nn.Flatten(), nn.Linear(channels * (SIZE // 32) ** 2, 1024), nn.ReLU(inplace=True),
                             nn.Linear(1024, 512), nn.ReLU(inplace=True), nn.Linear(512, classes))
        for layer in head:
            if isinstance(layer, nn.Linear):
                nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
                nn.init.zeros_(layer.bias)
    model = nn.Sequential(*blocks, head)
    frozen, trained = blocks[:-UNFREEZE], blocks[-UNFREEZE:]
    for block in frozen:
        for p in block.parameters():
            p.requires_grad = False
    if args.layout == "channels_last":
        model = model.to(memory_format=torch.channels_last)

    lr = LR[args.optimizer]
    rates = [lr * LR_MULT ** (-(UNFREEZE - j) / UNFREEZE) for j in range(UNFREEZE)] + [lr]
    groups = [{"params": list(m.parameters()), "lr": r} for m, r in zip([*trained, head], rates)]
    if args.optimizer == "sgd":
        optimizer = torch.optim.SGD(groups, lr=lr, momentum=0.9)
    else:
        optimizer = torch.optim.Adam(groups, lr=lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, rates, total_steps=len(train_loader), pct_start=0.25,
                                                   div_factor=25.0, final_div_factor=1e5 / 25.0,
                                                   base_momentum=0.85, max_momentum=0.95)
    loss_fn = nn.CrossEntropyLoss()

    def mode(training):
        model.train(training)
        for block in frozen:                            # BatchNorm on its moving statistics, as Keras
            block.eval()

    def inputs(x):
        return x.contiguous(memory_format=torch.channels_last) if args.layout == "channels_last" else x

    mode(True)
    total, correct, seen = 0.0, 0, 0
    t0 = time.perf_counter()
    setup_s = t0 - start
    for x, y in train_loader:
        logits = model(inputs(x))
        loss = loss_fn(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        total, seen = total + loss.item() * len(y), seen + len(y)
        correct += int((logits.detach().argmax(1) == y).sum())
    train_s = time.perf_counter() - t0

    mode(False)
    t0 = time.perf_counter()
    val_logits, val_labels = [], []
    with torch.no_grad():
        for x, y in val_loader:
            val_logits.append(model(inputs(x)))
            val_labels.append(y)
    val_logits, val_labels = torch.cat(val_logits), torch.cat(val_labels)
    val_loss = float(loss_fn(val_logits, val_labels))
    val_accuracy = float((val_logits.argmax(1) == val_labels).float().mean())
    val_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    os.makedirs(out, exist_ok=True)
    torch.save(model.state_dict(), os.path.join(out, "checkpoint.pt"))
    torch.save(optimizer.state_dict(), os.path.join(out, "optimizer.pt"))
    torch.save(model.state_dict(), os.path.join(out, "best.pt"))
    save_s = time.perf_counter() - t0
    print(json.dumps({"setup_s": setup_s, "train_s": train_s, "val_s": val_s, "save_s": save_s, "loss": total / seen,
                      "accuracy": correct / seen, "val_loss": val_loss, "val_accuracy": val_accuracy}))


def run_torch(name, data, out, args):
    """(the script's times as a dict, whole command seconds)."""
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, "--torch-child", name, data, out, "--threads", str(args.threads),
                           "--optimizer", args.optimizer, "--head", args.head, "--layout", args.layout],
                          capture_output=True, text=True, env=thread_env(args.threads), cwd=ROOT)
    wall = time.perf_counter() - t0
    if done.returncode:
        raise SystemExit(f"the PyTorch script failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1]), wall


def have_torch():
    code = "import torch, torchvision"
    return subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def load():
    with open("/proc/loadavg") as f:
        return f.read().split()[0]


# ---- the benchmark ------------------------------------------------------------------------
def bench(args, data, work):
    torch_ok = have_torch()
    if not torch_ok:
        print("PyTorch or torchvision is not installed: timing minitl alone (pip install torch torchvision)")
    warm = os.path.join(work, "warmup-data")
    warmup_data(warm, data, args.classes)
    for name in args.models:                            # untimed: Numba's cache, the files, the imports
        run_minitl(name, warm, os.path.join(work, "warm-minitl"), args)
        if torch_ok:
            run_torch(name, warm, os.path.join(work, "warm-torch"), args)

    results = {name: {"minitl": [], "minitl_wall": [], "torch": [], "torch_wall": []} for name in args.models}
    load_before = load()
    for r in range(args.rounds):
        for name in args.models:
            res = results[name]
            epoch, wall = run_minitl(name, data, os.path.join(work, "minitl-run"), args)
            res["minitl"].append(epoch)
            res["minitl_wall"].append(wall)
            line = f"round {r + 1} {name}: minitl epoch {epoch:.2f} s, command {wall:.2f} s"
            if torch_ok:
                times, wall = run_torch(name, data, os.path.join(work, "torch-run"), args)
                res["torch"].append(times)
                res["torch_wall"].append(wall)
                line += (f"; PyTorch imports and setup {times['setup_s']:.2f} s, epoch {times['train_s']:.2f} s, "
                         f"validation {times['val_s']:.2f} s, checkpoint {times['save_s']:.2f} s, command {wall:.2f} s")
            print(line, flush=True)
    load_after = load()

    n_train = sum(len(files) for _, _, files in os.walk(os.path.join(data, "train")))
    n_val = sum(len(files) for _, _, files in os.walk(os.path.join(data, "val")))
    head = "global average pooling, Dense(K)" if args.head == "avg" else \
        "Flatten, Dense(1024), Dense(512), Dense(K)"
    print(f"\n## one fine-tuning epoch, {n_train} training and {n_val} validation JPEGs, {args.classes} classes, "
          f"{SIZE}x{SIZE}, batch {BATCH}, last {UNFREEZE} blocks + head ({head}), {args.optimizer}, "
          f"{args.threads} threads, PyTorch {args.layout} layout, {args.rounds} rounds, load {load_before} -> "
          f"{load_after}")
    print("(seconds, medians over rounds; epoch: the training pass, data loading included; command: the whole "
          "process; ratio = minitl / PyTorch, the median of the rounds' ratios)\n")
    print("| model | minitl epoch | PyTorch epoch | ratio | PyTorch validation + checkpoint | minitl command "
          "| PyTorch command | ratio |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, res in results.items():
        mine, wall = statistics.median(res["minitl"]), statistics.median(res["minitl_wall"])
        if not torch_ok:
            print(f"| {name} | {mine:.2f} | - | - | - | {wall:.2f} | - | - |")
            continue
        theirs = [t["train_s"] for t in res["torch"]]
        extra = statistics.median(t["val_s"] + t["save_s"] for t in res["torch"])
        ratio = statistics.median(a / b for a, b in zip(res["minitl"], theirs))
        wall_ratio = statistics.median(a / b for a, b in zip(res["minitl_wall"], res["torch_wall"]))
        print(f"| {name} | {mine:.2f} | {statistics.median(theirs):.2f} | {ratio:.2f} | {extra:.2f} | {wall:.2f} | "
              f"{statistics.median(res['torch_wall']):.2f} | {wall_ratio:.2f} |", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    p.add_argument("--images", type=int, default=300, help="JPEG files in all, 4 of 5 for training (300)")
    p.add_argument("--classes", type=int, default=5)
    p.add_argument("--data", help="folder for the images, reused when made with the same --images and --classes "
                                  "(default: a temporary folder)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2, help="alternated rounds (the medians are printed)")
    p.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd",
                   help="sgd (momentum 0.9, lr 0.01) or adam (lr 0.003) on both sides")
    p.add_argument("--head", choices=("default", "avg"), default="default",
                   help="minitl finetune's default head, or global average pooling and Dense(K)")
    p.add_argument("--layout", choices=("default", "channels_last"), default="default", help="PyTorch's layout")
    p.add_argument("--torch-child", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.torch_child:
        torch_epoch(args)
        return
    if args.images < 5 * args.classes:
        p.error(f"--images must be at least 5 per class ({5 * args.classes})")
    with tempfile.TemporaryDirectory(prefix="bench_epoch-") as work:
        data = args.data or os.path.join(work, "data")
        os.makedirs(data, exist_ok=True)
        t0 = time.perf_counter()
        if make_data(data, args.images, args.classes):
            print(f"wrote {args.images} JPEG files in {data} ({time.perf_counter() - t0:.1f} s)", flush=True)
        bench(args, data, work)


if __name__ == "__main__":
    main()
