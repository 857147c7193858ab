"""The offline transfer-learning demo on animal silhouettes (``minitl demo``).

Source task: a small backbone pretrained by minitl on five animals (bear, bird, cat, cow,
dog; 4,500 training images), saved without its top in Keras' layout, like the published
notop files: ``minitl/resources/demo_vgg16_animals_notop.h5`` (VGG16 of width 1/8) and
``minitl/resources/demo_mobilenet_v2_animals_notop.h5`` (MobileNetV2 with alpha 0.35), both for
32×32 inputs.

Target task: five other animals (elephant, giraffe, horse, sheep, zebra) with only
a few labelled images each. The demo compares, on one held-out test set:
  scratch    the same network trained from random weights,
  frozen     the pretrained base, frozen, with a new head (features cached),
  finetuned  then the last blocks unfrozen and trained with a lower learning rate.
"""
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from minitl import functional as F
from minitl import io as weights_io
from minitl.applications import get_backbone
from minitl.data import ArrayDataset, DataLoader, get_preprocess
from minitl.datasets import load_animal_shapes
from minitl.errors import WeightsError
from minitl.files import write_json
from minitl.metrics import format_report
from minitl.nn import BatchNormalization, manual_seed
from minitl.optim import make_schedule
from minitl.runs import BEST, RunFolder, Settings, new_record, read_record
from minitl.train import MixBatches, evaluate, fit, run_callbacks, update_batchnorm_statistics
from minitl.transfer import build_model, cached_features, make_loss, make_optimizer, set_trainable_blocks

SOURCE = ("bear", "bird", "cat", "cow", "dog")
TARGET = ("elephant", "giraffe", "horse", "sheep", "zebra")
SIZE = 32
BN_MOMENTUM = 0.9


@dataclass(frozen=True)
class Recipe:
    """How the frozen and the fine-tuned settings train: the two phases of `minitl finetune`.

    The frozen setting trains the new head on the base's cached features for
    ``frozen_epochs`` at ``frozen_lr``; the fine-tuned one starts from its best epoch,
    unfreezes the last ``unfreeze_blocks`` blocks and trains ``finetune_epochs`` at ``lr``
    for the head, spread down to lr/``lr_mult`` over the blocks, on flipped and shifted
    images when ``augment``, its batches mixed with ``mixup`` and ``cutmix``. Both use
    ``optimizer`` and ``schedule`` over their batches, ``label_smoothing`` and
    ``class_weight`` in the loss, and ``balanced_sampling``; ``tta`` evaluates both with
    test-time augmentation (`minitl.train.tta_views`). Each demo base has its own
    (`DEMO_BASES`), chosen on the validation images over seeds 0, 1 and 2 (README, "The
    fine-tuning recipe").
    """
    frozen_epochs: int = 10
    frozen_lr: float = 3e-3
    finetune_epochs: int = 20
    lr: float = 3e-3
    lr_mult: float = 10.0
    optimizer: str = "adam"
    schedule: str = "onecycle"
    unfreeze_blocks: int = 2
    train_bn: bool = False
    augment: bool = True
    label_smoothing: float = 0.0
    mixup: float = 0.0
    cutmix: float = 0.0
    class_weight: str = None
    balanced_sampling: bool = False
    tta: bool = False


@dataclass(frozen=True)
class DemoBase:
    """A backbone the demo runs on: its width, its shipped pretrained base, its first
    convolution (see `input_aware_init`), how many epochs the base was pretrained for, and
    the `Recipe` of its frozen and fine-tuned settings."""
    arch: str
    width: float
    file: str
    first_conv: str
    pretrain_epochs: int
    recipe: Recipe

    @property
    def preprocessing(self):
        return get_backbone(self.arch).PREPROCESSING


DEMO_BASES = {
    "vgg16": DemoBase("vgg16", 1 / 8, "demo_vgg16_animals_notop.h5", "block1_conv1", 8, Recipe(unfreeze_blocks=5)),
    "mobilenet_v2": DemoBase("mobilenet_v2", 0.35, "demo_mobilenet_v2_animals_notop.h5", "Conv1", 8,
                             Recipe(frozen_epochs=30, frozen_lr=1e-3, lr=1e-3)),
}


def demo_base(arch):
    if arch not in DEMO_BASES:
        raise ValueError(f"the demo runs on {', '.join(DEMO_BASES)}, not {arch!r}")
    return DEMO_BASES[arch]


def demo_weights_path(arch="vgg16"):
    """minitl/resources/demo_<arch>_animals_notop.h5, package data installed with minitl (else the
    file of that name in minitl's weights folder)."""
    name = demo_base(arch).file
    shipped = Path(__file__).resolve().parent / "resources" / name
    if shipped.is_file():
        return shipped
    from minitl.hub import weights_dir
    return weights_dir() / name


def to_input(images, preprocessing="caffe"):
    """28×28 gray silhouettes → 32×32 RGB (zero border), preprocessed float32 ('caffe' or 'tf')."""
    x = np.zeros((len(images), SIZE, SIZE, 3), np.float32)
    x[:, 2:30, 2:30, :] = images[..., None]
    return get_preprocess(preprocessing)(x)


def split_target(images, labels, names, per_class_train, per_class_val, per_class_test, seed, preprocessing="caffe"):
    """Few labelled images per target class for training (``per_class_train``: one number, or
    one per class for an unbalanced set), a few for validation, a fixed test set."""
    rng = np.random.default_rng(seed)
    parts = {"train": [], "val": [], "test": []}
    train_counts = np.broadcast_to(per_class_train, len(TARGET))
    for new_label, name in enumerate(TARGET):
        idx = rng.permutation(np.flatnonzero(labels == names.index(name)))
        counts = (int(train_counts[new_label]), per_class_val, per_class_test)
        start = 0
        for part, n in zip(parts, counts):
            parts[part] += [(i, new_label) for i in idx[start:start + n]]
            start += n
    out = {}
    for part, rows in parts.items():
        idx, lab = np.array([r[0] for r in rows]), np.array([r[1] for r in rows])
        ds = ArrayDataset(to_input(images[idx], preprocessing), lab)
        ds.classes = list(TARGET)
        out[part] = ds
        out[f"{part}_index"] = idx
    return out


def input_aware_init(model, base, x):
    """Divide the first convolution's He-normal kernel by the input's standard deviation.

    He init assumes inputs of unit scale; caffe-preprocessed pixels span about ±128,
    which makes the first logits huge and training VGG16 from random weights diverge.
    """
    layer = model.get_layer(base.first_conv)
    layer.kernel.data /= np.float32(x.std())


def build_demo_model(cfg):
    """`build_model`, with every BatchNormalization's moving statistics following momentum
    0.9 instead of the model's own (0.999 for MobileNetV2, as Keras builds it).

    The demo trains for a few hundred steps. At momentum 0.999 the moving statistics would
    still be half their initial values (0.999⁵⁰⁰ ≈ 0.6), and a model evaluated in inference
    mode would be far worse than it trained; 0.9 forgets the start in about 50 steps.
    """
    model = build_model(cfg)
    for layer in model.layers():
        if isinstance(layer, BatchNormalization):
            layer.momentum = BN_MOMENTUM
    return model


def config(base, num_classes, hidden=(1024, 512), dropout=0.5):
    """The demo's model entry: the small backbone at 32×32 with a flatten head."""
    return Settings(arch=base.arch, width=base.width, hidden=hidden, dropout=dropout).model_config(
        num_classes, (SIZE, SIZE))


def pretrain(arch="vgg16", out=None, epochs=None, batch_size=64, lr=0.01, seed=0, progress=True, log=print):
    """Train the arch's small backbone on the five source animals and save its base without top."""
    base = demo_base(arch)
    epochs = epochs or base.pretrain_epochs
    images, labels, names = load_animal_shapes()
    keep = np.isin(labels, [names.index(n) for n in SOURCE])
    x, y = to_input(images[keep], base.preprocessing), np.array([SOURCE.index(names[l]) for l in labels[keep]])
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    test, train = order[:500], order[500:]
    train_set, test_set = ArrayDataset(x[train], y[train]), ArrayDataset(x[test], y[test])
    manual_seed(seed)
    model = build_demo_model(config(base, len(SOURCE), hidden=(256, 128), dropout=0.0))
    input_aware_init(model, base, train_set.images[:1000])
    optimizer = make_optimizer(model, lr, momentum=0.9, clip_norm=5.0)
    start = time.perf_counter()
    fit(model, optimizer, DataLoader(train_set, batch_size, shuffle=True, seed=seed), DataLoader(test_set, 250),
        epochs, run_callbacks(seed=seed, progress=progress, log=log))
    seconds = time.perf_counter() - start
    report = evaluate(model, DataLoader(test_set, 250), list(SOURCE))
    if update_batchnorm_statistics(model, DataLoader(train_set, 250)):
        log(f"held-out accuracy {report['accuracy']:.3f} with the moving BatchNorm statistics; "
            "those statistics recomputed over the training images:")
        report = evaluate(model, DataLoader(test_set, 250), list(SOURCE))
    out = Path(out) if out else demo_weights_path(arch)
    weights_io.save_weights(model[0], out)
    log(f"pretrained {arch} on {len(train)} images of {', '.join(SOURCE)} in {seconds:.0f} s; "
        f"held-out accuracy {report['accuracy']:.3f}; base saved to {out}")
    return report, seconds


class _Target:
    """What the three settings share: the target data and loaders, the model entry, the run folders."""

    def __init__(self, out, base, data, seed, batch_size, device, progress, log):
        self.out, self.base, self.data, self.seed = out, base, data, seed
        self.device, self.progress, self.log = device, progress, log
        self.cfg = config(base, len(TARGET))
        self.batch_size = batch_size
        self.train_loader = DataLoader(data["train"], batch_size, shuffle=True, seed=seed)
        self.val_loader = DataLoader(data["val"], 100)
        self.test_loader = DataLoader(data["test"], 250)
        self.reports, self.tta = {}, False

    def fit(self, name, model, optimizer, train_loader, val_loader, epochs, save_model=None, schedule=None,
            loss=None, extra=(), **entries):
        """Train one setting into out/<name>, then evaluate its best epoch on the test set."""
        run_dir = self.out / name
        run_dir.mkdir(exist_ok=True)
        record = new_record(TARGET, (SIZE, SIZE), self.cfg, self.seed, preprocessing=self.base.preprocessing,
                            setting=name, **entries)
        start = time.perf_counter()
        callbacks = run_callbacks(run_dir, record, self.seed, schedule=schedule, progress=self.progress, log=self.log,
                                  save_model=save_model)
        fit(model, optimizer, train_loader, val_loader, epochs, [*callbacks, *extra],
            loss=loss or F.softmax_cross_entropy, device=self.device)
        seconds = time.perf_counter() - start
        model = model if save_model is None else save_model
        weights_io.load_weights(model, run_dir / BEST)  # the epoch with the lowest validation loss
        report = evaluate(model, self.test_loader, list(TARGET), self.device, tta=self.tta)
        best = min(record["history"], key=lambda row: row["val_loss"])
        val_accuracy = evaluate(model, self.val_loader, list(TARGET), self.device, tta=True)["accuracy"] \
            if self.tta else best["val_accuracy"]
        report.update(val_accuracy=val_accuracy, best_epoch=best["epoch"], seconds=seconds)
        write_json(run_dir / "metrics.json", report)
        self.reports[name] = report
        self.log(f"{name}: test accuracy {report['accuracy']:.3f}, macro F1 {report['macro_f1']:.3f}")


def _scratch(task, epochs, lr):
    """The same network from random weights, every layer trained."""
    task.log(f"\n[1/3] scratch: the same {task.base.arch} from random weights")
    manual_seed(task.seed)
    model = build_demo_model(task.cfg)
    input_aware_init(model, task.base, task.data["train"].images)
    model.to(task.device)
    set_trainable_blocks(model[0], len(model[0].blocks()))
    opt = make_optimizer(model, lr, clip_norm=5.0)
    task.fit("scratch", model, opt, task.train_loader, task.val_loader, epochs)


def flip_and_shift(x, rng, shift=2):
    """A random left-right flip, then a random shift of up to ``shift`` pixels each way (the
    silhouettes' 2-pixel background border rolls round, so nothing of an animal is lost)."""
    if rng.random() < 0.5:
        x = x[:, ::-1]
    dy, dx = rng.integers(-shift, shift + 1, size=2)
    return np.roll(x, (dy, dx), axis=(0, 1))


def _frozen(task, weights, recipe):
    """The pretrained base (loaded like the published notop file), frozen, with a new head
    trained on the base's cached features; returns the model."""
    task.log(f"\n[2/3] frozen: pretrained base from {weights.name}, new head, base frozen")
    manual_seed(task.seed)
    model = build_demo_model(task.cfg)
    base, head = model[0], model[1]
    weights_io.load_weights(base, weights)
    model.to(task.device)
    set_trainable_blocks(base, 0)
    (task.out / "frozen").mkdir(exist_ok=True)
    loaders = {"train": DataLoader(task.data["train"], 100), "val": task.val_loader}
    feats = cached_features(task.out / "frozen", base, loaders, task.device)
    opt = make_optimizer(model, recipe.frozen_lr, optimizer=recipe.optimizer)
    task.fit("frozen", head, opt, DataLoader(ArrayDataset(*feats["train"]), task.batch_size, shuffle=True,
                                             seed=task.seed, balanced=recipe.balanced_sampling),
             DataLoader(ArrayDataset(*feats["val"]), 100), recipe.frozen_epochs, save_model=model,
             schedule=make_schedule(recipe.schedule), loss=make_loss(recipe, task.data["train"]),
             weights=str(weights))
    return model


def _finetuned(task, model, weights, recipe):
    """From the frozen result: the last blocks unfrozen, each at its own lower rate."""
    blocks = recipe.unfreeze_blocks
    task.log(f"\n[3/3] finetuned: last {blocks} blocks unfrozen, learning rate {recipe.lr:g} "
             f"(down to {recipe.lr / recipe.lr_mult:g})")
    set_trainable_blocks(model[0], blocks, recipe.train_bn)
    opt = make_optimizer(model, recipe.lr, recipe.lr_mult, optimizer=recipe.optimizer)
    train = task.data["train"]
    data = ArrayDataset(train.images, train.labels, flip_and_shift if recipe.augment else None, seed=task.seed)
    loader = DataLoader(data, task.batch_size, shuffle=True, seed=task.seed, balanced=recipe.balanced_sampling)
    mixing = [MixBatches(len(TARGET), recipe.mixup, recipe.cutmix, task.seed)] if recipe.mixup or recipe.cutmix else []
    task.fit("finetuned", model, opt, loader, task.val_loader, recipe.finetune_epochs,
             schedule=make_schedule(recipe.schedule), loss=make_loss(recipe, train), extra=mixing,
             weights=str(weights), unfreeze_blocks=blocks)


def run(out=None, arch="vgg16", weights=None, train_per_class=20, epochs=30, recipe=None, lr=0.01, batch_size=32,
        seed=0, progress=True, log=print, device="cpu", scratch=True):
    """Scratch (``epochs`` at ``lr``; skipped unless ``scratch``) vs frozen vs fine-tuned
    (``recipe``, by default the base's) on the target animals with the arch's small
    backbone; returns the results: per setting, the test accuracy and macro F1 of its best
    epoch (lowest validation loss), that epoch's validation accuracy and the training time."""
    t_start = time.perf_counter()
    base = demo_base(arch)
    recipe = recipe or base.recipe
    weights = Path(weights) if weights else demo_weights_path(arch)
    if not weights.is_file():  # before any training: the frozen and fine-tuned settings need it
        problem = "is not a file" if weights.exists() else "does not exist"
        raise WeightsError(f"pretrained demo weights {weights} {problem} "
                           f"(minitl demo --arch {arch} --pretrain builds them)")
    out = Path(out) if out else Path("runs") / time.strftime(f"demo-{arch}-%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    folder = RunFolder(out)
    folder.lock(log)  # one writer at a time
    try:
        return _run(out, base, recipe, weights, arch, train_per_class, epochs, lr, batch_size, seed, progress, log,
                    device, scratch, t_start)
    finally:
        folder.unlock()


def _run(out, base, recipe, weights, arch, train_per_class, epochs, lr, batch_size, seed, progress, log, device,
         scratch, t_start):
    """`run` in the folder ``out``, once it is locked."""
    images, labels, names = load_animal_shapes()
    data = split_target(images, labels, names, train_per_class, 10, 100, seed, base.preprocessing)
    log(f"backbone {arch} (width {base.width:g}, {SIZE}×{SIZE}); target task: {', '.join(TARGET)}; "
        f"{len(data['train'])} training images, {len(data['val'])} validation, {len(data['test'])} test")
    task = _Target(out, base, data, seed, batch_size, device, progress, log)
    task.tta = recipe.tta
    if scratch:
        _scratch(task, epochs, lr)
    model = _frozen(task, weights, recipe)
    _finetuned(task, model, weights, recipe)
    reports = task.reports
    results = {name: {k: r[k] for k in ("accuracy", "macro_f1", "val_accuracy", "seconds")}
               for name, r in reports.items()}
    samples = _save_samples(out / "samples", images, labels, names, data["test_index"])
    seconds = time.perf_counter() - t_start
    write_json(out / "results.json", {**results, "arch": arch, "seed": seed, "seconds": seconds,
                                      "train_per_class": train_per_class, "test_images": len(data["test"]),
                                      "recipe": dataclasses.asdict(recipe)})
    _plots(out, reports)
    _summary(out, arch, reports, results, seconds, samples, log)
    return results


def lr_find(out=None, arch="vgg16", weights=None, train_per_class=20, batch_size=32, seed=0, progress=True,
            log=print):
    """`minitl.train.lr_find` on the demo's frozen phase (the new head on the base's cached
    features, with the base's recipe); writes lr_find.json and lr_find.png into ``out`` and
    returns the sweep."""
    from minitl import train
    base = demo_base(arch)
    recipe = base.recipe
    out = Path(out) if out else Path("runs") / f"demo-{arch}-lr-find"
    out.mkdir(parents=True, exist_ok=True)
    images, labels, names = load_animal_shapes()
    data = split_target(images, labels, names, train_per_class, 10, 100, seed, base.preprocessing)
    manual_seed(seed)
    model = build_demo_model(config(base, len(TARGET)))
    weights_io.load_weights(model[0], Path(weights) if weights else demo_weights_path(arch))
    set_trainable_blocks(model[0], 0)
    feats = cached_features(out, model[0], {"train": DataLoader(data["train"], 100)}, progress=progress)
    loader = DataLoader(ArrayDataset(*feats["train"]), batch_size, shuffle=True, seed=seed)
    result = train.lr_find(model[1], make_optimizer(model, recipe.frozen_lr, optimizer=recipe.optimizer), loader)
    write_json(out / "lr_find.json", result)
    try:
        from minitl.plots import plot_lr_find
        plot_lr_find(result, out / "lr_find.png")
    except ImportError:  # matplotlib is optional
        pass
    log(f"{arch}: swept the head's learning rate ({recipe.optimizer}) over {len(result['lrs'])} batches; suggested "
        f"{result['minimum']:.2g} (the minimum's rate / 10; the valley rule gives {result['valley']:.2g}); the demo's "
        f"recipe uses "
        f"{recipe.frozen_lr:g}; saved {out / 'lr_find.json'}")
    return result


def _summary(out, arch, reports, results, seconds, samples, log):
    log("\n" + format_report(reports["finetuned"]))
    log(f"\n{'setting':<10}  {'accuracy':>8}  {'macro F1':>8}")
    for name, r in results.items():
        log(f"{name:<10}  {r['accuracy']:8.3f}  {r['macro_f1']:8.3f}")
    log(f"\nran in {seconds:.0f} s; results in {out / 'results.json'}")
    log("\nNext: predict with the fine-tuned model (the test images in samples/ are PNG files)\n"
        f"  minitl predict {out / 'finetuned'} {samples[0]} {samples[-1]}\n"
        f"  minitl evaluate {out / 'finetuned'} --data {out / 'samples'}\n"
        f"The same recipe on your own photos (one sub-folder per class) with the published {arch} weights:\n"
        f"  minitl weights fetch {arch}-notop\n"
        f"  minitl finetune --arch {arch} --data PHOTOS/ --weights weights/{_published_notop(arch)} "
        "--out runs/my-photos --epochs 10\n"
        "  minitl predict runs/my-photos PHOTO.jpg")


def _published_notop(arch):
    from minitl.hub import file_name
    return file_name(f"{arch}-notop")


def _save_samples(folder, images, labels, names, index, per_class=4):
    """A few test images per class as 32×32 PNG files in class folders, as the model sees them."""
    from PIL import Image
    paths = []
    for name in TARGET:
        (folder / name).mkdir(parents=True, exist_ok=True)
        rows = [i for i in index if labels[i] == names.index(name)][:per_class]
        for i in rows:
            a = np.zeros((SIZE, SIZE), np.uint8)
            a[2:30, 2:30] = images[i]
            path = folder / name / f"{name}_{i}.png"
            Image.fromarray(a).convert("RGB").save(path)
            paths.append(path)
    return paths


def _plots(out, reports):
    from minitl.plots import plot_confusion, plot_history
    try:
        for name in reports:
            record = read_record(out / name)
            plot_history(record["history"], out / name / "curves.png")
            plot_confusion(reports[name], out / name / "confusion.png")
    except ImportError:  # matplotlib is optional
        pass
