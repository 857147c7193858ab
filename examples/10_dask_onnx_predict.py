"""Classify a large image folder in parallel with Dask, each worker running the exported ONNX model.

minitl grows no cluster code of its own: a run exported with
`minitl export RUN --format onnx --with-preprocessing --out model.onnx` is a file that ONNX
Runtime runs anywhere, and `dask.distributed` spreads the images over the workers. The folder
is cut into shards of ``--shard-size`` images; each task reads its shard with the script
written beside the model (``model_onnx.py``: minitl's resizing and cropping, no minitl needed
on the workers), runs the model with ONNX Runtime on one thread, and writes its rows to its
own part file; the client joins the parts into one CSV (path, class, probability, then one
column per class). The model and the image folder must be readable by every worker: on a
cluster, put them on shared storage.

    python examples/10_dask_onnx_predict.py --model model.onnx --images PHOTOS/ --out predictions.csv
    python examples/10_dask_onnx_predict.py ... --scheduler tcp://scheduler:8786   # a real cluster

Without ``--scheduler`` it starts a ``LocalCluster`` of ``--workers`` processes, one thread
each. ``--quick`` makes its own: a run fine-tuned from the demo's VGG16 base on 100 animal
silhouettes, exported to ONNX, and a folder of 1,000 others to classify; it then checks that
the predictions are those of `minitl predict`. Needs ``pip install "dask[distributed]"``
(minitl's ``dask`` extra) and onnxruntime.
"""
import argparse
import contextlib
import csv
import os
import runpy
import time
from pathlib import Path

import numpy as np

SESSIONS = {}  # a worker's: model path -> (ONNX Runtime session, the script's load_images, its classes)


def classify_shard(model, paths, part):
    """Run ``model`` on ``paths`` (one worker, one thread) and write the rows to ``part``; returns how many."""
    if model not in SESSIONS:
        import onnxruntime
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        script = runpy.run_path(str(Path(model).with_name(Path(model).stem + "_onnx.py")))
        SESSIONS[model] = session, script["load_images"], script["CLASSES"]
    session, load_images, classes = SESSIONS[model]
    rows = []
    for i in range(0, len(paths), 32):
        batch = paths[i:i + 32]
        probabilities = session.run(["probabilities"], {"images": load_images(batch)})[0]
        for path, p in zip(batch, probabilities):
            k = int(np.argmax(p))
            rows.append([path, classes[k], f"{p[k]:.6f}", *(f"{v:.6f}" for v in p)])
    tmp = f"{part}.tmp"
    with open(tmp, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    os.replace(tmp, part)
    return len(rows)


def list_images(folder):
    extensions = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
    return sorted(str(p) for p in Path(folder).rglob("*") if p.suffix.lower() in extensions and p.is_file())


def classify_folder(client, model, folder, out, shard_size):
    """Classify every image under ``folder`` on the cluster of ``client``; returns (images, seconds)."""
    paths = list_images(folder)
    model = str(Path(model).resolve())
    classes = runpy.run_path(str(Path(model).with_name(Path(model).stem + "_onnx.py")))["CLASSES"]
    parts_dir = Path(f"{out}.parts")
    parts_dir.mkdir(parents=True, exist_ok=True)
    shards = [paths[i:i + shard_size] for i in range(0, len(paths), shard_size)]
    parts = [str(parts_dir.resolve() / f"part-{i:05d}.csv") for i in range(len(shards))]
    t0 = time.perf_counter()
    futures = client.map(classify_shard, [model] * len(shards), shards, parts, pure=False)
    done = sum(client.gather(futures))
    seconds = time.perf_counter() - t0
    with open(out, "w", newline="") as f:
        csv.writer(f).writerow(["path", "class", "probability", *classes])
        for part in parts:
            f.write(Path(part).read_text())
            os.unlink(part)
    parts_dir.rmdir()
    return done, seconds


def quick_setup(root, train_per_class=20, per_class=200):
    """A run fine-tuned from the demo's VGG16 base, exported to ONNX, and a folder of
    5 · ``per_class`` other silhouettes; returns (run, model, folder)."""
    from PIL import Image

    from minitl.cli import main
    from minitl.datasets import load_animal_shapes
    from minitl.demo import TARGET, demo_weights_path
    from minitl.runs import CHECKPOINT
    from minitl.transfer import export_onnx
    images, labels, names = load_animal_shapes()
    for name in TARGET:
        rows = np.flatnonzero(labels == names.index(name))
        for subset, picked in (("train", rows[:train_per_class]), ("all", rows[train_per_class:][:per_class])):
            (root / subset / name).mkdir(parents=True, exist_ok=True)
            for i in picked:
                Image.fromarray(images[i]).save(root / subset / name / f"{name}_{i}.png")
    run = root / "run"
    assert main(["finetune", "--data", str(root / "train"), "--out", str(run), "--arch", "vgg16", "--width", "0.125",
                 "--weights", str(demo_weights_path()), "--image-size", "32", "--freeze-epochs", "3", "--epochs",
                 "1", "--quiet"]) == 0
    model, _ = export_onnx(run, root / "model.onnx", CHECKPOINT, with_preprocessing=True)
    return run, model, root / "all"


def minitl_predictions(run, paths):
    """The classes `minitl predict` gives these files."""
    from minitl import functional as F
    from minitl.data import load_image
    from minitl.tensor import Tensor
    from minitl.train import predict_on_batch
    from minitl.transfer import load_run
    model, record = load_run(run)
    out = []
    for i in range(0, len(paths), 64):
        x = np.stack([load_image(p, tuple(record["image_size"]), record["preprocessing"]) for p in paths[i:i + 64]])
        out += [record["classes"][k] for k in F.softmax(Tensor(predict_on_batch(model, x))).numpy().argmax(axis=1)]
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="an ONNX model exported with --with-preprocessing (its _onnx.py beside it)")
    p.add_argument("--images", help="the folder to classify (its images, recursively)")
    p.add_argument("--out", default="predictions.csv", help="the CSV to write (predictions.csv)")
    p.add_argument("--scheduler", help="a Dask scheduler's address (default: a LocalCluster)")
    p.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes, one thread each (2)")
    p.add_argument("--shard-size", type=int, default=250, help="images per task (250)")
    p.add_argument("--quick", action="store_true", help="make a run, its ONNX model and 1,000 images, and check")
    args = p.parse_args(argv)
    from dask.distributed import Client, LocalCluster
    run = None
    if args.quick:
        run, args.model, args.images = quick_setup(Path("dask_quick"))
    if not args.model or not args.images:
        p.error("--model and --images are needed (or --quick)")
    with contextlib.ExitStack() as stack:
        if args.scheduler:
            client = stack.enter_context(Client(args.scheduler))
        else:
            cluster = stack.enter_context(LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                                                       dashboard_address=None))
            client = stack.enter_context(Client(cluster))
        workers = len(client.scheduler_info()["workers"])
        done, seconds = classify_folder(client, args.model, args.images, args.out, args.shard_size)
    print(f"{done} images in {seconds:.2f} s on {workers} workers: {done / seconds:.0f} images/s; wrote {args.out}")
    if run is not None:
        with open(args.out, newline="") as f:
            rows = list(csv.reader(f))[1:]
        same = sum(a == b for a, b in zip([r[1] for r in rows], minitl_predictions(run, [r[0] for r in rows])))
        print(f"the same class as minitl predict for {same} of {len(rows)} images")
    return done, seconds


if __name__ == "__main__":
    main()
