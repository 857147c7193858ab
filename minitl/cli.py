"""The ``minitl`` command line.

Each subcommand is a function ``cmd_<name>(args)`` registered in ``build_parser``.
Errors that minitl raises on purpose print one line and exit with status 1; ``--debug``
shows the traceback instead.
"""
import argparse
import os
import platform
import shlex
import signal
import sys
import warnings

from minitl import __version__
from minitl.errors import DiskFullError, MinitlError


def cmd_info(args):
    import numba
    import numpy as np

    from minitl.backend import gpu_status
    usable, reason = gpu_status()
    rows = [
        ("minitl", __version__),
        ("python", platform.python_version()),
        ("numpy", np.__version__),
        ("numba", (f"{numba.__version__} ({numba.get_num_threads()} threads; "
                  f"NUMBA_DISABLE_JIT={os.environ.get('NUMBA_DISABLE_JIT', '0')})")),
        ("h5py", _version("h5py")),
        ("Pillow", _version("PIL")),
        ("backend", "numpy (CPU)" + (", cupy (GPU)" if usable else "")),
        ("gpu", ("usable: " if usable else "not usable: ") + reason),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    return 0


def _version(module):
    try:
        return __import__(module).__version__
    except Exception as e:  # an optional package that is missing or broken
        return f"not available ({type(e).__name__})"


def _device(name):
    from minitl.backend import device_available, normalize_device
    from minitl.errors import DeviceError
    device = normalize_device(name)
    if not device_available(device):
        from minitl.backend import gpu_status
        raise DeviceError(f"device {name!r} is not available: {gpu_status()[1]}")
    return device


def _training_data(args, resume=False):
    """(settings, train_set, val_set) of ``minitl finetune`` and ``minitl lr-find``."""
    from minitl.applications import get_backbone
    from minitl.data import train_val_folders
    from minitl.errors import DataError, TrainingError, WeightsError
    from minitl.runs import RESUME_ENTRIES, Settings, read_record
    if not os.path.isdir(args.data):
        problem = "is not a folder" if os.path.exists(args.data) else "does not exist"
        raise DataError(f"data folder {args.data} {problem}")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise TrainingError(f"run directory --out {args.out} is a file, not a folder")
    if args.weights is not None and not os.path.isfile(args.weights):
        problem = "is not a file" if os.path.exists(args.weights) else "does not exist"
        raise WeightsError(f"weights file {args.weights} {problem} "
                           f"(get the published one with: minitl weights fetch {args.arch}-notop)")
    settings = Settings.from_options(args)
    if resume:  # the run's own settings; its epochs unless given
        settings = Settings.from_record(read_record(args.out, RESUME_ENTRIES), args.epochs)
    h, w = settings.image_size
    backbone = get_backbone(settings.arch)
    backbone.check_input_shape((h, w, 3), given=f"--image-size {h}x{w}")
    train_set, val_set = train_val_folders(args.data, settings.image_size, validation_split=args.validation_split,
                                           seed=settings.seed, augment=settings.augment,
                                           preprocess=backbone.PREPROCESSING)
    print(f"{len(train_set)} training and {len(val_set)} validation images, classes: {', '.join(train_set.classes)}")
    return settings, train_set, val_set


def cmd_finetune(args):
    from minitl.transfer import finetune
    device = _device(args.device)
    settings, train_set, val_set = _training_data(args, args.resume)
    try:
        finetune(train_set, val_set, args.out, settings, weights=args.weights, resume=args.resume,
                 allow_partial_weights=args.allow_partial_weights, cache_features=not args.no_cache,
                 device=device, progress=not args.quiet)
    except DiskFullError as e:
        if not e.resume:
            raise
        command = shlex.join(["minitl", "finetune", "--data", args.data, "--out", args.out, "--resume"])
        raise DiskFullError(f"{e}: {command}") from None
    print(f"run saved in {args.out}; next: minitl evaluate {args.out} --data DIR, "
          f"minitl predict {args.out} IMAGE")
    return 0


def cmd_lr_find(args):
    from minitl.transfer import find_lr
    device = _device(args.device)
    settings, train_set, _ = _training_data(args)
    result = find_lr(train_set, args.out, settings, weights=args.weights, num=args.batches,
                     cache_features=not args.no_cache, allow_partial_weights=args.allow_partial_weights,
                     device=device, progress=not args.quiet)
    if result["valley"] is None:
        print("the sweep stopped before its first batch's loss: no suggestion")
        return 1
    print(f"swept the head's learning rate from {result['lrs'][0]:.2g} to {result['lrs'][-1]:.2g} over "
          f"{result['batches']} batches, training {result['trained']}")
    print(f"suggested --lr: {result['minimum']:.2g} (the minimum's rate / 10; the valley rule gives "
          f"{result['valley']:.2g}); the settings use {settings.head_lr():g}")
    print(f"saved {os.path.join(args.out, 'lr_find.json')} and lr_find.png")
    return 0


def cmd_compare(args):
    from minitl.compare import compare, compare_demo, markdown
    from minitl.errors import DataError
    from minitl.runs import Settings
    device = _device(args.device)
    out = args.out or ("runs/compare-demo" if args.demo else "runs/compare")
    if args.demo:
        table = compare_demo(out, args.seeds, args.budget_ms, args.resume, device,
                             progress=not args.quiet)
    else:
        if args.data is None:
            raise DataError("compare needs --data DIR (or --demo)")
        if not os.path.isdir(args.data):
            problem = "is not a folder" if os.path.exists(args.data) else "does not exist"
            raise DataError(f"data folder {args.data} {problem}")
        settings = Settings.from_options(args)
        table = compare(args.data, args.arch, out, settings, weights_dir=args.weights_dir,
                        seeds=args.seeds, budget_ms=args.budget_ms, resume=args.resume,
                        validation_split=args.validation_split, device=device, progress=not args.quiet)
    print()
    print(markdown(table), end="")
    print(f"saved compare.json, compare.md and compare.png in {out}")
    return 0


def cmd_evaluate(args):
    from pathlib import Path

    from minitl.data import DataLoader, ImageFolder
    from minitl.files import write_json
    from minitl.metrics import format_report
    from minitl.runs import BEST, CHECKPOINT
    from minitl.train import predict_proba, report_from_probabilities
    from minitl.transfer import load_run
    device = _device(args.device)
    model, record = load_run(args.run_dir, BEST if args.best else CHECKPOINT, device)
    data = ImageFolder(args.data, tuple(record["image_size"]), classes=record["classes"],
                       preprocess=record.get("preprocessing", "caffe"))
    probs, labels = predict_proba(model, DataLoader(data, args.batch_size), device, args.tta, progress=not args.quiet)
    report = report_from_probabilities(probs, labels, record["classes"], args.tta)
    print(format_report(report))
    if report["most_confused"]:
        print("\nmost confused (true → predicted: images, share of the true class)")
        for pair in report["most_confused"]:
            print(f"  {pair['true']} → {pair['predicted']}: {pair['count']}, {pair['share']:.0%}")
    out = Path(args.out) if args.out else Path(args.run_dir) / "evaluation.json"
    write_json(out, report)
    errors = write_errors(out.with_name("errors.csv"), data, probs, labels, record["classes"])
    try:
        from minitl.plots import plot_confusion
        plot_confusion(report, out.with_suffix(".png"))
        plot_losses(out.with_name("top_losses.png"), data, probs, labels, record["classes"], args.top_losses)
        pictures = f", {out.with_suffix('.png').name} and top_losses.png"
    except ImportError:
        pictures = ""
    print(f"saved {out}{pictures}; {errors} misclassified images in {out.with_name('errors.csv')}")
    return 0


def write_errors(path, data, probs, labels, classes):
    """errors.csv: file, true class, predicted class, its probability and the loss of every
    misclassified image, highest loss first; returns how many."""
    import csv

    from minitl.files import atomic_write
    from minitl.train import image_losses
    losses, predicted = image_losses(probs, labels), probs.argmax(axis=1)
    wrong = sorted((i for i in range(len(labels)) if predicted[i] != labels[i]), key=lambda i: -losses[i])
    with atomic_write(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "true", "predicted", "probability", "loss"])
        for i in wrong:
            writer.writerow([data.samples[i][0], classes[labels[i]], classes[predicted[i]],
                             f"{probs[i, predicted[i]]:.4f}", f"{losses[i]:.4f}"])
    return len(wrong)


def plot_losses(path, data, probs, labels, classes, k):
    """top_losses.png: the k images with the highest loss, titled true / predicted / probability / loss."""
    import numpy as np

    from minitl.data import open_image, resize_and_crop
    from minitl.plots import plot_top_losses
    from minitl.train import image_losses
    losses, predicted = image_losses(probs, labels), probs.argmax(axis=1)
    top = np.argsort(-losses, kind="stable")[:k]
    images = [resize_and_crop(open_image(data.samples[i][0]), (160, 160)) for i in top]
    titles = [f"{classes[labels[i]]} → {classes[predicted[i]]}\np {probs[i, predicted[i]]:.2f}, loss {losses[i]:.2f}"
              for i in top]
    plot_top_losses(images, titles, path)


def cmd_predict(args):
    import numpy as np

    from minitl.data import image_files, load_image
    from minitl.errors import DataError
    from minitl.functional import softmax
    from minitl.runs import BEST, CHECKPOINT
    from minitl.tensor import Tensor
    from minitl.train import predict_on_batch, tta_views
    from minitl.transfer import load_run
    device = _device(args.device)
    model, record = load_run(args.run_dir, BEST if args.best else CHECKPOINT, device)
    classes = record["classes"]
    paths, problems = image_files(args.images)  # a folder stands for the images in it
    for problem in problems:  # reported; the other images are still classified
        print(f"minitl predict: error: {problem}", file=sys.stderr)

    def show(batch):  # one forward pass (6 with --tta) for a batch of (path, image) pairs
        x = np.stack([x for _, x in batch])
        views = tta_views(x) if args.tta else [x]
        probs = np.mean([softmax(Tensor(predict_on_batch(model, np.ascontiguousarray(v), device))).numpy()
                         for v in views], axis=0)
        for (path, _), p in zip(batch, probs):
            print(path)
            for i in np.argsort(-p)[:args.top]:
                print(f"  {classes[i]:<20} {p[i]:.4f}")

    batch, failed = [], 0
    for path in paths:
        try:
            batch.append((path, load_image(path, tuple(record["image_size"]), record.get("preprocessing", "caffe"))))
        except DataError as e:  # report it and go on with the other images
            print(f"minitl predict: error: {e}", file=sys.stderr)
            failed += 1
        if len(batch) == args.batch_size:
            show(batch)
            batch = []
    if batch:
        show(batch)
    return 1 if failed or problems else 0


def cmd_export(args):
    from minitl.runs import BEST, CHECKPOINT
    from minitl.transfer import export_onnx, export_run
    which = BEST if args.best else CHECKPOINT
    if args.format == "onnx":
        model, script = export_onnx(args.run_dir, args.out, which, args.with_preprocessing)
        print(f"saved {model} (ONNX) and {script}; with ONNX Runtime: python {script.name} IMAGE...")
        return 0
    if args.with_preprocessing:
        raise ValueError("--with-preprocessing applies to --format onnx only")
    weights, script = export_run(args.run_dir, args.out, which)
    print(f"saved {weights} (Keras legacy .h5) and {script}; in Keras: from {script.stem} import build_model")
    return 0


def cmd_summary(args):
    from minitl.applications import get_backbone
    from minitl.transfer import load_run
    if args.run_dir:
        model, _record = load_run(args.run_dir)
        model.summary()
    else:
        backbone = get_backbone(args.arch)
        kwargs = {backbone.WIDTH_ARGUMENT: args.width}
        if args.image_size is not None:
            kwargs["input_shape"] = (*args.image_size, 3)
        backbone(include_top=not args.notop, **kwargs).summary()
    return 0


def cmd_models(args):
    import time

    import numba
    import numpy as np

    from minitl.applications import BACKBONES, multiply_adds
    from minitl.tensor import Tensor, no_grad
    size = args.image_size
    archs = args.arch or list(BACKBONES)
    print(f"{'arch':<14} {'parameters':>12} {'multiply-adds':>14} {'ms/image':>9}  preprocessing  min size  blocks")
    for arch in archs:
        backbone = BACKBONES[arch]
        model = backbone(input_shape=(*size, 3), **{backbone.WIDTH_ARGUMENT: args.width}).eval()
        macs = multiply_adds(model, (*size, 3))
        ms = "-"
        if not args.no_time:
            with no_grad():
                model(Tensor(np.zeros((1, *size, 3), np.float32)))  # compiles the kernels, warms the caches
                x = Tensor(np.random.default_rng(0).normal(size=(args.batch_size, *size, 3)).astype(np.float32))
                best = float("inf")
                for _ in range(args.repeat):
                    t0 = time.perf_counter()
                    model(x)
                    best = min(best, time.perf_counter() - t0)
            ms = f"{best / args.batch_size * 1e3:9.1f}"
        print(f"{arch:<14} {model.count_params():>12,} {macs / 1e9:>12.3g} G {ms:>9}  {backbone.PREPROCESSING:<13}  "
              f"{backbone.MIN_SIZE:>8}  {len(model.blocks())}")
        del model
    timing = ("" if args.no_time else f"; time: forward of a batch of {args.batch_size}, best of {args.repeat}, "
              f"{numba.get_num_threads()} threads")
    print(f"at {size[0]}x{size[1]} with the classifier (1000 classes){timing}")
    return 0


def cmd_weights(args):
    from minitl import hub
    if args.action == "list":
        rows = hub.list_weights(args.dir, verify=args.verify)
        print(f"{'name':<30} {'file':<72} {'MB':>7}  status")
        for r in rows:
            mb = f"{r.bytes / 1e6:7.1f}" if r.bytes is not None else f"{'?':>7}"
            print(f"{r.name:<30} {r.file:<72} {mb}  {r.status}")
        print(f"folder: {hub.weights_dir(args.dir)}")
        return 0
    for name in args.names:
        path = hub.fetch(name, args.dir, progress=not args.quiet, url=args.url)
        if hub.is_verifiable(name):
            print(f"{name}: {path}")
        else:
            print(f"{name}: {path} (could not be verified: the publisher gives no md5 for this file)")
    return 0


def cmd_demo(args):
    from minitl import demo
    if args.pretrain:
        demo.pretrain(args.arch, out=args.weights, progress=not args.quiet)
    elif args.lr_find:
        demo.lr_find(out=args.out, arch=args.arch, weights=args.weights, train_per_class=args.train_per_class,
                     seed=args.seed, progress=not args.quiet)
    else:
        demo.run(out=args.out, arch=args.arch, weights=args.weights, train_per_class=args.train_per_class,
                 epochs=args.epochs, seed=args.seed, progress=not args.quiet, device=_device(args.device))
    return 0


WEIGHTS_DIR_HELP = ("weights folder (default: $MINITL_HOME/weights; else weights/ of the source checkout "
                    "minitl runs from; else ~/.minitl/weights)")


def _add_common(p, device=True):
    if device:
        p.add_argument("--device", default="cpu", help="cpu, gpu or auto (the GPU when usable); default cpu")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_info(sub):
    p = sub.add_parser("info", help="versions, backend, Numba threads and whether a GPU is usable",
                       description="Print versions, the array backend, Numba threads and GPU status.")
    p.set_defaults(func=cmd_info)


def _add_demo(sub):
    from minitl.demo import DEMO_BASES
    from minitl.runs import Bounded, positive_int
    p = sub.add_parser("demo", help="the offline transfer-learning demo (VGG16: about 90 s of CPU time; "
                                    "it prints its run time)",
                       description="Pretrained base vs training from scratch on animal silhouettes, offline: "
                                   "trains three models and prints their test accuracy and macro F1.")
    p.add_argument("--arch", choices=list(DEMO_BASES), default="vgg16",
                   help="the backbone: " + "; ".join(f"{b.arch} of width {b.width:g}" for b in DEMO_BASES.values())
                        + " (default vgg16)")
    p.add_argument("--out", help="run directory (default: a new folder under runs/)")
    p.add_argument("--weights", help="pretrained base weights (default: minitl/resources/demo_ARCH_animals_notop.h5)")
    p.add_argument("--train-per-class", type=positive_int, default=20, help="labelled training images per class (20)")
    p.add_argument("--epochs", type=positive_int, default=30, help="epochs of the scratch setting (30)")
    p.add_argument("--seed", type=Bounded(int, 0, 2**32 - 1), default=0,
                   help="seed of the split, the initial weights and the shuffling (0)")
    p.add_argument("--pretrain", action="store_true", help="rebuild the pretrained demo weights instead")
    p.add_argument("--lr-find", action="store_true",
                   help="instead, sweep the learning rate of the frozen setting's head and suggest one")
    _add_common(p)
    p.set_defaults(func=cmd_demo)


def _add_finetune(sub):
    p = sub.add_parser("finetune", help="fine-tune a pretrained backbone on a folder of images "
                                        "(one sub-folder per class)",
                       description="Replace the backbone's head (--arch, VGG16 by default) and fine-tune in "
                                   "two phases of one run: the new head alone on the frozen base (--freeze-epochs, "
                                   "features cached), then with the last --unfreeze-blocks blocks, each block at "
                                   "its own lower rate (--lr-mult), each phase under its own schedule (--schedule); "
                                   "the run directory keeps every epoch and --resume continues in either phase.")
    p.add_argument("--out", default="runs/finetune", help="run directory (default runs/finetune)")
    _add_training_options(p)
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint, with its recorded settings")
    _add_common(p)
    p.set_defaults(func=cmd_finetune)


def _add_training_options(p):
    """The data, weights and settings options that ``finetune`` and ``lr-find`` share."""
    p.add_argument("--data", required=True, help="folder with one sub-folder per class, or train/ and val/")
    p.add_argument("--weights", help="the backbone's notop weights (.h5, Keras layout; minitl weights fetch "
                                     "ARCH-notop); omit to train from scratch")
    _add_settings_options(p)
    p.add_argument("--allow-partial-weights", action="store_true",
                   help="let base layers that --weights lacks keep their initial weights (listed); "
                        "by default every layer must be in the file")
    p.add_argument("--no-cache", action="store_true", help="do not cache the frozen base's features")


def _add_compare(sub):
    from minitl.applications import BACKBONES
    from minitl.runs import positive, positive_int
    p = sub.add_parser("compare", help="fine-tune several backbones with the same settings and seeds, and "
                                       "compare accuracy, speed and size",
                       description="Run minitl finetune once per backbone and seed (each a run folder under "
                                   "--out), then print and save a table (compare.json, compare.md, compare.png) "
                                   "and recommend a backbone.")
    p.add_argument("--data", help="folder with one sub-folder per class, or train/ and val/ (and test/)")
    p.add_argument("--demo", action="store_true", help="compare the two demo bases on the demo's animals, offline")
    p.add_argument("--arch", nargs="+", choices=list(BACKBONES), default=["vgg16", "resnet50", "mobilenet_v2"],
                   help="the backbones (vgg16 resnet50 mobilenet_v2)")
    p.add_argument("--weights-dir", help="folder of the published notop files (minitl weights fetch ARCH-notop); "
                                         + WEIGHTS_DIR_HELP)
    p.add_argument("--seeds", type=positive_int, default=1, help="runs per backbone, seeds --seed, --seed + 1, ... (1)")
    p.add_argument("--out", help="folder of the runs and the table (default runs/compare, runs/compare-demo)")
    p.add_argument("--budget-ms", type=positive, help="also recommend the most accurate backbone within this many "
                                                      "milliseconds per image (batch 1)")
    p.add_argument("--resume", action="store_true", help="skip the finished runs in --out, continue the others")
    _add_settings_options(p, skip=("arch",))
    _add_common(p)
    p.set_defaults(func=cmd_compare)


def _add_settings_options(p, skip=()):
    """An option per field of `minitl.runs.Settings` (but ``skip``), and --validation-split."""
    from minitl.runs import Bounded, Settings
    for name, option in Settings.options():  # --epochs, --batch-size, ... --seed
        if name not in skip:
            p.add_argument("--" + name.replace("_", "-"), **option)
    p.add_argument("--validation-split", type=Bounded(float, 0, 1, "()"), default=0.2,
                   help="share held out when there is no val/, between 0 and 1 (0.2)")


def _add_lr_find(sub):
    from minitl.runs import Bounded
    p = sub.add_parser("lr-find", help="sweep the learning rate over a few batches and suggest one",
                       description="The learning-rate range test: train the model that minitl finetune's first "
                                   "phase would train (with the same options) on up to --batches batches while the "
                                   "head's learning rate grows from 1e-7 to 10, stopping once the smoothed loss "
                                   "passes 4 times its minimum; the weights are not kept. Prints the suggested "
                                   "rates and writes lr_find.json and lr_find.png into --out.")
    p.add_argument("--out", default="runs/lr-find", help="folder for lr_find.json and lr_find.png (runs/lr-find)")
    p.add_argument("--batches", type=Bounded(int, 2, 1000), default=100, help="batches at most (100)")
    _add_training_options(p)
    _add_common(p)
    p.set_defaults(func=cmd_lr_find)


def _add_evaluate(sub):
    from minitl.runs import positive_int
    p = sub.add_parser("evaluate", help="accuracy, precision, recall, F1 and confusion matrix of a run",
                       description="Evaluate a run directory's model on a folder of images.")
    p.add_argument("run_dir", help="run directory written by minitl finetune or minitl demo")
    p.add_argument("--data", required=True, help="folder with one sub-folder per class")
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--best", action="store_true", help="use best.h5 (lowest val loss) instead of the last epoch")
    p.add_argument("--out", help="JSON report path (default RUN_DIR/evaluation.json); errors.csv and "
                                 "top_losses.png are written beside it")
    p.add_argument("--tta", action="store_true", help="average the probabilities over 6 views of each image: "
                                                      "itself, its mirror image and 4 shifted crops (6 times the time)")
    p.add_argument("--top-losses", type=positive_int, default=9, help="images in top_losses.png (9)")
    _add_common(p)
    p.set_defaults(func=cmd_evaluate)


def _add_predict(sub):
    from minitl.runs import positive_int
    p = sub.add_parser("predict", help="top-k classes with probabilities for image files",
                       description="Classify image files with a run directory's model. A file that "
                                   "cannot be read is reported and skipped (exit status 1).")
    p.add_argument("run_dir", help="run directory written by minitl finetune or minitl demo")
    p.add_argument("images", nargs="+", help="image files, or folders (the images in them, recursively)")
    p.add_argument("--top", type=positive_int, default=3, help="how many classes to show (3)")
    p.add_argument("--batch-size", type=positive_int, default=32, help="images per forward pass (32)")
    p.add_argument("--best", action="store_true", help="use best.h5 instead of the last checkpoint")
    p.add_argument("--tta", action="store_true", help="average over 6 views of each image (as evaluate --tta)")
    _add_common(p)
    p.set_defaults(func=cmd_predict)


def _add_export(sub):
    p = sub.add_parser("export", help="a run's model as a Keras .h5 with the Keras script that loads it, or as ONNX",
                       description="Write a run's weights in Keras' legacy .h5 layout and, beside them, "
                                   "FILE_keras.py: a Keras script that rebuilds the model (keras.applications "
                                   "backbone, then the same head), loads the file and prepares images as "
                                   "the run did. --format onnx: the whole model (base, head, softmax) as "
                                   "FILE.onnx, and FILE_onnx.py, which runs it on image files with ONNX Runtime.")
    p.add_argument("run_dir", help="run directory written by minitl finetune or minitl demo")
    p.add_argument("--out", required=True, help="FILE.h5 (FILE_keras.py is written beside it) or, with --format "
                                                "onnx, FILE.onnx (and FILE_onnx.py)")
    p.add_argument("--best", action="store_true", help="export best.h5 (lowest val loss) instead of the last epoch")
    p.add_argument("--format", choices=("keras", "onnx"), default="keras", help="keras (the default) or onnx")
    p.add_argument("--with-preprocessing", action="store_true",
                   help="ONNX: the model takes uint8 RGB images and applies the run's preprocessing itself")
    p.set_defaults(func=cmd_export)


def _add_summary(sub):
    from minitl.runs import ARCHS, parse_image_size, width_multiplier
    p = sub.add_parser("summary", help="layer table of a backbone or of a run's model",
                       description="Print a Keras-like summary: layers, output shapes, parameter counts.")
    p.add_argument("run_dir", nargs="?", help="a run directory (default: the backbone --arch)")
    p.add_argument("--arch", choices=ARCHS, default="vgg16", help="the backbone (vgg16)")
    p.add_argument("--notop", action="store_true", help="the backbone without its top")
    p.add_argument("--image-size", type=parse_image_size, help="input size (the backbone's default: 224, "
                                                                 "InceptionV3 299)")
    p.add_argument("--width", type=width_multiplier, default=1.0, help="width multiplier (MobileNetV2's alpha)")
    p.set_defaults(func=cmd_summary)


def _add_models(sub):
    from minitl.runs import ARCHS, parse_image_size, positive_int, width_multiplier
    p = sub.add_parser("models", help="compare the backbones: parameters, multiply-adds, CPU time per image",
                       description="For each backbone: its parameters, the multiply-adds of one image "
                                   "(from its layers' shapes), and the measured forward time per image on "
                                   "this machine's CPU threads.")
    p.add_argument("--arch", nargs="+", choices=ARCHS, help="only these backbones (default: all)")
    p.add_argument("--image-size", type=parse_image_size, default=(224, 224), help="input size (224)")
    p.add_argument("--width", type=width_multiplier, default=1.0, help="width multiplier (MobileNetV2's alpha); 1.0")
    p.add_argument("--batch-size", type=positive_int, default=8, help="images per timed forward pass (8)")
    p.add_argument("--repeat", type=positive_int, default=3, help="timed passes; the best is shown (3)")
    p.add_argument("--no-time", action="store_true", help="skip the timing")
    p.set_defaults(func=cmd_models)


def _add_weights(sub):
    p = sub.add_parser("weights", help="list or download the published Keras weight files",
                       description="List the published Keras files of every backbone, or download them "
                                   "(resumable, size and md5 checked where Keras publishes them) into the "
                                   "weights folder.")
    wsub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    w = wsub.add_parser("list", help="files, sizes and whether they are present")
    w.add_argument("--verify", action="store_true", help="check the md5 of present files")
    w.add_argument("--dir", help=WEIGHTS_DIR_HELP)
    w.set_defaults(func=cmd_weights)
    w = wsub.add_parser("fetch", help="download files: vgg16-notop, resnet50-notop, mobilenet_v2-notop, ...")
    w.add_argument("names", nargs="+", help="vgg16-notop, vgg19-notop, resnet50-notop, inception_v3-notop, "
                                            "mobilenet_v2-notop (or without -notop, with the classifier), "
                                            "imagenet-class-index; minitl weights list shows them all")
    w.add_argument("--dir", help=WEIGHTS_DIR_HELP)
    w.add_argument("--url", help=argparse.SUPPRESS)
    w.add_argument("--quiet", action="store_true", help="no progress bar")
    w.set_defaults(func=cmd_weights)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="minitl",
        description="minitl: transfer learning with VGG16, VGG19, ResNet50, InceptionV3 or MobileNetV2 "
                    "on a from-scratch NumPy/Numba engine.")
    parser.add_argument("--version", action="version", version=f"minitl {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_info(sub)
    _add_demo(sub)
    _add_finetune(sub)
    _add_lr_find(sub)
    _add_compare(sub)
    _add_evaluate(sub)
    _add_predict(sub)
    _add_export(sub)
    _add_summary(sub)
    _add_models(sub)
    _add_weights(sub)
    return parser


def _warning_line(command):
    """Show warnings as 'minitl COMMAND: warning: ...', without Python's file and line."""
    def show(message, category, filename, lineno, file=None, line=None):
        print(f"minitl {command}: warning: {message}", file=sys.stderr if file is None else file)
    return show


def _tolerant_output():
    """Print what cannot be encoded (a file name that is not UTF-8, on a strict UTF-8 output)
    with backslash escapes instead of failing."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")


def main(argv=None):
    _tolerant_output()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    from minitl.runs import StopOnSignals, signal_name
    try:
        with warnings.catch_warnings(), StopOnSignals():
            if not args.debug:
                warnings.showwarning = _warning_line(args.command)
            return args.func(args) or 0
    except BrokenPipeError:  # the reader stopped early (minitl ... | head): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0
    except (MinitlError, OSError, ValueError, MemoryError) as e:
        if args.debug:
            raise
        what = f"not enough memory ({e})" if isinstance(e, MemoryError) else str(e)
        print(f"minitl {args.command}: error: {what}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM and SIGHUP (minitl.runs.Stopped)
        signum = getattr(e, "signum", signal.SIGINT)
        how = "interrupted" if signum == signal.SIGINT else f"stopped by {signal_name(signum)}"
        print(f"minitl {args.command}: {how}", file=sys.stderr)
        return 128 + signum


if __name__ == "__main__":
    sys.exit(main())
