"""``minitl compare``: the same recipe on several backbones and seeds, one run folder each, and
a table of accuracy, macro F1, training time, inference time, size and cost per backbone.

Each arch/seed is a normal `minitl.transfer.finetune` run in ``out/ARCH/seedN``; after it,
its best model is evaluated and the numbers are written beside it (``evaluation.json``).
The table is built from those files, so a re-run with ``resume`` skips the finished runs.
The seeds of one arch share its frozen base's features (``out/ARCH/features/``, one file per
base and data), so the base's feature pass runs once per arch and split, not once per seed.

`minitl.transfer.compare` hands over to `compare`: this module sits above the recipe
(docs/architecture.md), since it runs the recipe once per backbone and seed.
"""
import dataclasses
import os
import sys
import time
from pathlib import Path

import numpy as np

from minitl.applications import get_backbone, multiply_adds
from minitl.data import DataLoader, ImageFolder, train_val_folders
from minitl.errors import MinitlError, WeightsError
from minitl.files import atomic_write, write_json
from minitl.runs import BEST, RECORD, Settings, read_record
from minitl.tensor import Tensor, no_grad
from minitl.train import evaluate

# ImageNet top-1 accuracy of the Keras weights, from the Keras Applications table
PUBLISHED_TOP1 = {"vgg16": 0.713, "vgg19": 0.713, "resnet50": 0.749, "inception_v3": 0.779, "mobilenet_v2": 0.713}
PUBLISHED_SOURCE = "Keras Applications table, https://keras.io/api/applications/"
EVALUATION = "evaluation.json"
TEST_NAMES = ("test", "testing")
METRICS = ("val_accuracy", "val_macro_f1", "test_accuracy", "test_macro_f1", "train_seconds")


def find_test_folder(root):
    """root/test (or testing) when root also holds train/ and val/ folders, else None."""
    from minitl.data import find_splits
    if find_splits(root) is None:
        return None
    for name in sorted(os.listdir(root)):
        if name.lower() in TEST_NAMES and os.path.isdir(os.path.join(root, name)):
            return os.path.join(root, name)
    return None


def weights_file(arch, weights_dir=None):
    """The published notop file of ``arch`` in the weights folder (`minitl.hub.weights_dir`)."""
    from minitl.hub import file_name
    from minitl.hub import weights_dir as folder
    return folder(weights_dir) / file_name(f"{arch}-notop")


def finished(run_dir):
    """Whether ``run_dir`` holds a finished run with its evaluation."""
    run_dir = Path(run_dir)
    if not (run_dir / RECORD).is_file() or not (run_dir / EVALUATION).is_file():
        return False
    return read_record(run_dir).get("status") == "finished"


def ms_per_image(model, image_size, batch_size, repeat=3):
    """Best of ``repeat`` forward passes of a batch of random images, in milliseconds per image."""
    a = np.random.default_rng(0).normal(size=(batch_size, *image_size, 3)).astype(np.float32)
    x = Tensor(a)
    with no_grad():
        model(Tensor(a[:1]))  # compiles the kernels
        best = float("inf")
        for _ in range(repeat):
            start = time.perf_counter()
            model(x)
            best = min(best, time.perf_counter() - start)
    return best / batch_size * 1e3


def _evaluate_run(run_dir, val_set, test_set, seconds, device):
    """Evaluate the best model of ``run_dir`` and write its numbers into it."""
    from minitl.transfer import load_run
    model, record = load_run(run_dir, BEST, device)
    val = evaluate(model, DataLoader(val_set, 32), record["classes"], device)
    numbers = {"val_accuracy": val["accuracy"], "val_macro_f1": val["macro_f1"], "train_seconds": seconds,
               "test_accuracy": None, "test_macro_f1": None}
    if test_set is not None:
        test = evaluate(model, DataLoader(test_set, 32), record["classes"], device)
        numbers.update(test_accuracy=test["accuracy"], test_macro_f1=test["macro_f1"])
    write_json(Path(run_dir) / EVALUATION, numbers)


def read_run(run_dir):
    """The numbers of one arch/seed run, read back from its folder."""
    import json
    run_dir = Path(run_dir)
    numbers = json.loads((run_dir / EVALUATION).read_text())
    best = run_dir / BEST
    return {**numbers, "run": str(run_dir), "weights_bytes": best.stat().st_size if best.is_file() else None}


def _summary(values):
    """(mean, standard deviation) of the values that are not None; (None, None) when none is."""
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def arch_row(arch, runs, image_size):
    """The table's row of ``arch``: means and spreads over its runs, cost and inference time (of
    the first run's best model)."""
    from minitl.transfer import load_run
    model, _ = load_run(runs[0]["run"], BEST)
    row = {"arch": arch, "seeds": len(runs), "runs": [r["run"] for r in runs], "error": None,
           "image_size": list(image_size), "parameters": model.count_params(),
           "multiply_adds": multiply_adds(model[0], (*image_size, 3)),
           "weights_bytes": runs[0]["weights_bytes"], "published_top1": PUBLISHED_TOP1.get(arch),
           "ms_batch1": ms_per_image(model, image_size, 1), "ms_batch32": ms_per_image(model, image_size, 32)}
    for name in METRICS:
        row[name], row[name + "_spread"] = _summary([r[name] for r in runs])
    return row


def score(row):
    """The accuracy the table ranks by: test accuracy when there is a test set, else validation."""
    return row["test_accuracy"] if row["test_accuracy"] is not None else row["val_accuracy"]


def recommend(rows, budget_ms=None):
    """One line: the most accurate backbone, and the most accurate within ``budget_ms`` (batch 1)."""
    done = [r for r in rows if r["error"] is None and score(r) is not None]
    if not done:
        return "no backbone finished: nothing to recommend"
    which = "test" if done[0]["test_accuracy"] is not None else "validation"
    best = max(done, key=score)
    line = (f"most accurate: {best['arch']} ({which} accuracy {score(best):.3f}, "
            f"{best['ms_batch1']:.1f} ms/image at batch 1)")
    if budget_ms is None:
        return line
    within = [r for r in done if r["ms_batch1"] <= budget_ms]
    if not within:
        fastest = min(done, key=lambda r: r["ms_batch1"])
        return line + f"; none within {budget_ms:g} ms/image (the fastest, {fastest['arch']}, takes " \
                      f"{fastest['ms_batch1']:.1f} ms)"
    pick = max(within, key=score)
    if pick is best:
        return line + f"; it is within the budget of {budget_ms:g} ms/image"
    return line + (f"; within {budget_ms:g} ms/image: {pick['arch']} ({which} accuracy {score(pick):.3f}, "
                   f"{pick['ms_batch1']:.1f} ms; {best['arch']} takes {best['ms_batch1']:.1f} ms)")


def _cell(mean, spread, digits=3):
    return "-" if mean is None else f"{mean:.{digits}f} ± {spread:.{digits}f}"


def markdown(table):
    """The table as Markdown, with the recommendation and the source of the published accuracies."""
    lines = [("| arch | val accuracy | val macro F1 | test accuracy | test macro F1 | train s | ms/image (1) | "
             "ms/image (32) | parameters | multiply-adds | weights MB | ImageNet top-1 (Keras) |"),
             "|" + "---|" * 12]
    for r in table["rows"]:
        top1 = "-" if r.get("published_top1") is None else f"{r['published_top1'] * 100:.1f} %"
        if r["error"] is not None:
            lines.append(f"| {r['arch']} | {r['error']} |" + " |" * 10 + f" {top1} |")
            continue
        mb = "-" if r["weights_bytes"] is None else f"{r['weights_bytes'] / 1e6:.1f}"
        lines.append(f"| {r['arch']} | {_cell(r['val_accuracy'], r['val_accuracy_spread'])} | "
                     f"{_cell(r['val_macro_f1'], r['val_macro_f1_spread'])} | "
                     f"{_cell(r['test_accuracy'], r['test_accuracy_spread'])} | "
                     f"{_cell(r['test_macro_f1'], r['test_macro_f1_spread'])} | "
                     f"{_cell(r['train_seconds'], r['train_seconds_spread'], 0)} | {r['ms_batch1']:.1f} | "
                     f"{r['ms_batch32']:.1f} | {r['parameters']:,} | {r['multiply_adds'] / 1e9:.3g} G | {mb} | "
                     f"{top1} |")
    lines += ["", f"Mean ± standard deviation over {table['seeds']} seed(s). {table['note']}",
              f"ImageNet top-1: {PUBLISHED_SOURCE}.", "", table["recommendation"]]
    return "\n".join(lines) + "\n"


def save(table, out):
    """compare.json, compare.md and (with matplotlib) compare.png in ``out``."""
    out = Path(out)
    write_json(out / "compare.json", table)
    with atomic_write(out / "compare.md") as tmp:
        tmp.write_text(markdown(table))
    try:
        from minitl.plots import plot_compare
        rows = [r for r in table["rows"] if r["error"] is None and score(r) is not None]
        test = bool(rows) and rows[0]["test_accuracy"] is not None
        points = [(r["arch"], r["ms_batch1"], score(r), r["test_accuracy_spread" if test else "val_accuracy_spread"])
                  for r in rows]
        plot_compare(points, out / "compare.png", "test accuracy" if test else "validation accuracy")
    except ImportError:  # matplotlib is optional
        pass


def compare(data, archs, out="runs/compare", settings=None, *, weights_dir=None, weights=None, seeds=1,
            budget_ms=None, resume=False, validation_split=0.2, device="cpu", progress=False, log=print):
    """Fine-tune each of ``archs`` with ``settings`` (a `minitl.runs.Settings`; its seed is the
    first of ``seeds``) on the image folder ``data``, once per seed, into ``out/ARCH/seedN``;
    returns the table as plain data and writes it (`save`).

    Each seed's split is `minitl.data.train_val_folders`' with that seed, as in ``minitl
    finetune --seed``. While the base is frozen, the seeds of an arch take its features from
    one file in ``out/ARCH/features/`` when their data is the same (train/ and val/ folders);
    a split that moves with the seed gets a file of its own. ``progress``: a bar per arch and
    one over all runs, with the time left, on a terminal only.

    ``weights``: {arch: notop file}; else each arch's published notop file in ``weights_dir``.
    An arch whose weights file is missing, or whose minimum input is above the image size, gets
    a row with the reason and the others still run. ``resume``: skip the finished runs and
    continue the interrupted ones.
    """
    from minitl.transfer import finetune
    settings = settings or Settings()
    out = Path(out)
    test_dir = find_test_folder(data)
    with _Bars(len(archs), seeds, progress, log) as bars:
        log, rows = bars.log, []
        for arch in archs:
            backbone = get_backbone(arch)
            path = Path((weights or {}).get(arch) or weights_file(arch, weights_dir))
            image_size = settings.image_size or (224, 224)
            try:
                if not path.is_file():
                    raise WeightsError(f"{arch}: weights file {path} does not exist "
                                       f"(get it with: minitl weights fetch {arch}-notop)")
                backbone.check_input_shape((*image_size, 3), given=f"--image-size {image_size[0]}x{image_size[1]}")
            except MinitlError as e:
                log(f"{arch}: skipped: {e}")
                rows.append({"arch": arch, "error": str(e), "published_top1": PUBLISHED_TOP1.get(arch)})
                bars.skip()
                continue
            runs = []
            bars.start(arch)
            for i in range(seeds):
                seed = settings.seed + i
                run_dir = out / arch / f"seed{seed}"
                if resume and finished(run_dir):
                    log(f"{arch} seed {seed}: finished in {run_dir}, skipped")
                    runs.append(read_run(run_dir))
                    bars.done()
                    continue
                log(f"{arch} seed {seed} ({len(runs) + 1}/{seeds}): training into {run_dir}")
                run_settings = dataclasses.replace(settings, arch=arch, seed=seed, image_size=image_size)
                train_set, val_set = train_val_folders(data, image_size, validation_split=validation_split, seed=seed,
                                                       augment=settings.augment, preprocess=backbone.PREPROCESSING)
                test_set = None if test_dir is None else ImageFolder(test_dir, image_size, classes=train_set.classes,
                                                                     preprocess=backbone.PREPROCESSING)
                again = resume and (run_dir / RECORD).is_file()
                start = time.perf_counter()
                finetune(train_set, val_set, run_dir, run_settings, weights=None if again else path, resume=again,
                         shared_features=out / arch / "features", device=device, progress=bars.inner, log=log)
                _evaluate_run(run_dir, val_set, test_set, time.perf_counter() - start, device)
                runs.append(read_run(run_dir))
                bars.done()
            rows.append(arch_row(arch, runs, image_size))
    note = "Test accuracy: the images of test/." if test_dir else \
        "No test/ folder: validation only (test columns empty)."
    return _table(out, rows, str(data), seeds, settings.training(), note, budget_ms)


class _Bars:
    """The progress of a comparison: a tqdm bar over all the arch/seed runs and one over the
    current arch's seeds, each with the estimated time left. They show on a terminal only
    (stderr), where the training's own bars go below them and ``log``'s lines (when it is
    ``print``) above them; elsewhere nothing but the log lines is written."""

    def __init__(self, archs, seeds, progress, log=print):
        from tqdm import tqdm
        self.tqdm, self.seeds = tqdm, seeds
        self.on = bool(progress) and sys.stderr.isatty()
        self.inner = self.on  # the bars of each run's epochs and feature pass
        self.log = tqdm.write if self.on and log is print else log
        self.overall = self._bar(archs * seeds, "compare", 0)
        self.arch = None

    def start(self, arch):
        """A bar for the seeds of ``arch``."""
        self.arch = self._bar(self.seeds, f"  {arch}", 1)

    def _bar(self, total, desc, position):
        # updated once a run, so each update is shown (no minimum interval)
        return self.tqdm(total=total, desc=desc, unit="run", disable=not self.on, position=position, leave=False,
                         mininterval=0, file=sys.stderr)

    def done(self):
        """One run finished."""
        self.arch.update()
        self.overall.update()
        if self.arch.n == self.seeds:
            self.arch.close()

    def skip(self):
        """An arch that could not run: its seeds count as done."""
        self.overall.update(self.seeds)

    def __enter__(self):
        return self

    def __exit__(self, *error):
        if self.arch is not None:
            self.arch.close()
        self.overall.close()


def _table(out, rows, data, seeds, settings, note, budget_ms):
    table = {"data": data, "seeds": seeds, "settings": settings, "rows": rows, "note": note,
             "published_source": PUBLISHED_SOURCE, "recommendation": recommend(rows, budget_ms)}
    save(table, out)
    return table


def compare_demo(out="runs/compare-demo", seeds=1, budget_ms=None, resume=False, device="cpu", progress=False,
                 log=print):
    """`compare` on the demo's target animals with the two demo bases (`minitl.demo.DEMO_BASES`),
    offline: per base and seed, the demo's frozen and fine-tuned settings (`minitl.demo.run`
    without scratch) in ``out/ARCH/seedN``; the table's run is the fine-tuned one. Each seed
    draws its own split of the animals, as ``minitl demo --seed`` does, so each seed makes its
    own feature pass (150 images of 32×32)."""
    from minitl import demo
    from minitl.datasets import load_animal_shapes
    out = Path(out)
    images, labels, names = load_animal_shapes()
    with _Bars(len(demo.DEMO_BASES), seeds, progress, log) as bars:
        log, rows = bars.log, []
        for arch, base in demo.DEMO_BASES.items():
            runs = []
            bars.start(arch)
            for seed in range(seeds):
                folder = out / arch / f"seed{seed}"
                run_dir = folder / "finetuned"
                if resume and finished(run_dir):
                    log(f"{arch} seed {seed}: finished in {run_dir}, skipped")
                    runs.append(read_run(run_dir))
                    bars.done()
                    continue
                log(f"{arch} seed {seed} ({len(runs) + 1}/{seeds}): training into {folder}")
                results = demo.run(out=folder, arch=arch, seed=seed, scratch=False, device=device, progress=bars.inner,
                                   log=lambda *a: None)
                data = demo.split_target(images, labels, names, 20, 10, 100, seed, base.preprocessing)
                seconds = results["frozen"]["seconds"] + results["finetuned"]["seconds"]
                _evaluate_run(run_dir, data["val"], data["test"], seconds, device)
                runs.append(read_run(run_dir))
                bars.done()
            rows.append(arch_row(arch, runs, (demo.SIZE, demo.SIZE)))
    note = (f"The demo bases ({', '.join(f'{b.arch} of width {b.width:g}' for b in demo.DEMO_BASES.values())}, "
            f"pretrained by minitl on other animals) on {', '.join(demo.TARGET)}: 20 training, 10 validation and "
            "100 test images per class; the published ImageNet accuracies are those of the full-size Keras weights.")
    recipes = {arch: dataclasses.asdict(b.recipe) for arch, b in demo.DEMO_BASES.items()}
    return _table(out, rows, "demo", seeds, recipes, note, budget_ms)
