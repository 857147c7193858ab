"""Transfer learning, step by step: take a pretrained base, replace its head, freeze the base,
fine-tune with a lowered learning rate, and evaluate.

The base is any backbone of `minitl.applications.BACKBONES` (VGG16, VGG19, ResNet50,
InceptionV3, MobileNetV2): this module asks it for its blocks by name (``base.blocks()``)
and its preprocessing mode (``PREPROCESSING``) and never reads layer names itself.
What a run writes, and the settings it is made with, are in `minitl.runs`.
"""
import dataclasses
import functools
import json
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np

from minitl import functional as F
from minitl.applications import get_backbone
from minitl.backend import normalize_device
from minitl.data import AUGMENTATIONS, ArrayDataset, DataLoader, dataset_labels
from minitl.errors import DataError, DiskFullError, ShapeError, TrainingError, WeightsError
from minitl.files import atomic_write, link_or_copy, write_json
from minitl.io import load_weights, save_weights
from minitl.nn import BatchNormalization, Dense, Dropout, Flatten, GlobalAvgPool2D, Sequential, manual_seed
from minitl.optim import SGD, Adam, make_schedule
from minitl.runs import (
    BEST,
    CHECKPOINT,
    FEATURES,
    OPTIMIZER,
    RECORD,
    RESUME_ENTRIES,
    RunFolder,
    Settings,
    check_resume,
    features_key,
    load_optimizer,
    new_record,
    read_features,
    read_record,
    write_features,
)
from minitl.train import MixBatches, fit, lr_find, predict, run_callbacks

__all__ = [
    "BEST",
    "CHECKPOINT",
    "Settings",
    "base_and_head",
    "block_learning_rates",
    "build_head",
    "build_model",
    "cached_features",
    "class_weights",
    "compare",
    "export_onnx",
    "export_run",
    "find_lr",
    "finetune",
    "keras_script",
    "load_run",
    "make_loss",
    "make_optimizer",
    "onnx_script",
    "set_trainable_blocks",
]


# ---- model surgery ------------------------------------------------------------
def build_head(num_classes, hidden=(1024, 512), dropout=0.0, pooling="flatten"):
    """The new output layers: Flatten (or global average pooling) → Dense(relu)… → Dense(num_classes)."""
    layers = [Flatten(name="head_flatten") if pooling == "flatten" else GlobalAvgPool2D(name="head_pool")]
    for i, units in enumerate(hidden, start=1):
        layers.append(Dense(units, activation="relu", kernel_initializer="he_normal", name=f"head_dense{i}"))
        if dropout:
            layers.append(Dropout(dropout, name=f"head_dropout{i}"))
    layers.append(Dense(num_classes, name="head_predictions"))
    return Sequential(layers, name="head")


def build_model(config):
    """The transfer model (a base without top, then the head) from a run record's 'model' entry."""
    backbone = get_backbone(config.get("arch", "vgg16"))
    width = {backbone.WIDTH_ARGUMENT: config.get("width", 1.0)}  # MobileNetV2 calls it alpha
    base = backbone(include_top=False, input_shape=tuple(config["input_shape"]), kernel_initializer="he_normal",
                    **width)
    head = build_head(config["num_classes"], tuple(config.get("hidden", (1024, 512))),
                      config.get("dropout", 0.0), config.get("pooling", "flatten"))
    return Sequential([base, head], name="transfer", input_shape=tuple(config["input_shape"]))


def base_and_head(model):
    return model[0], model[1]


def set_trainable_blocks(base, blocks, train_bn=False):
    """Freeze the base except its last ``blocks`` blocks (0: all frozen; all of them: all trainable).

    A frozen BatchNormalization runs in inference mode with its moving statistics (Keras'
    rule); ``train_bn=True`` keeps every BatchNormalization trainable instead (fastai's
    rule): its scale and offset train and, in training mode, it normalises with the batch's
    statistics and updates its moving ones.
    """
    named = list(base.blocks().values())
    if not 0 <= blocks <= len(named):
        raise ValueError(f"{base.name} has {len(named)} blocks ({', '.join(base.blocks())}): cannot unfreeze {blocks}")
    base.freeze()
    for layers in named[len(named) - blocks:]:
        for layer in layers:
            layer.unfreeze()
    if train_bn:
        for m in base.modules():
            if isinstance(m, BatchNormalization):
                m.unfreeze()


def unfrozen_blocks(base):
    """How many of the base's last blocks are trainable, every layer of them."""
    count = 0
    for layers in reversed(list(base.blocks().values())):
        if not all(m.trainable for layer in layers for m in layer.modules()):
            break
        count += 1
    return count


def block_learning_rates(lr, lr_mult, blocks):
    """[η_1, …, η_K, η_head]: the rates of K unfrozen blocks and the head, geometric from lr/M
    at the first unfrozen block to lr at the head (fastai's ``slice(lr/M, lr)``):
    η_j = lr · M^(−(K − j)/K) for j = 1 … K, η_head = lr."""
    return [lr * lr_mult ** (-(blocks - j) / blocks) for j in range(blocks)] + [lr]


def make_optimizer(model, lr, lr_mult=1.0, momentum=0.9, weight_decay=0.0, clip_norm=None, optimizer="sgd"):
    """SGD (or Adam) with a parameter group per unfrozen block of the base and one for the head,
    at the rates of `block_learning_rates` (``lr_mult`` 1: all at ``lr``). Trainable
    parameters of frozen blocks (BatchNormalization with ``train_bn``) go in a first group
    at lr/M."""
    base, head = base_and_head(model)
    blocks = list(base.blocks().items())
    k = unfrozen_blocks(base)
    rates = block_learning_rates(lr, lr_mult, k)
    in_blocks = {id(p) for _, layers in blocks[len(blocks) - k:] for layer in layers for p in layer.parameters()}
    groups = [{"name": "frozen blocks", "lr": lr / lr_mult,
               "params": [p for p in base.parameters() if p.requires_grad and id(p) not in in_blocks]}]
    for (name, layers), rate in zip(blocks[len(blocks) - k:], rates):
        groups.append({"name": name, "lr": rate, "params": [p for layer in layers for p in layer.parameters()]})
    groups.append({"name": "head", "lr": lr, "params": head.parameters()})
    if optimizer == "sgd":
        return SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay, clip_norm=clip_norm)
    if optimizer == "adam":
        return Adam(groups, lr=lr, weight_decay=weight_decay, clip_norm=clip_norm)
    raise ValueError(f"unknown optimizer {optimizer!r}: use sgd or adam")


def cached_features(run_dir, base, loaders, device="cpu", progress=False, shared=None):
    """{'train': (features, labels), ...}: read from features.h5 if it was made by the same base
    weights from the same data (see `minitl.runs.features_key`), else computed and stored.

    ``shared``: a folder of feature files that several runs share (`minitl.compare.compare`'s
    seeds of one arch), each named by its key, so that a different base or different data never
    reuses one; the run's features.h5 becomes a hard link to (or a copy of) the one it uses."""
    path = Path(run_dir) / FEATURES
    key = features_key(base, loaders)
    found = read_features(path, key, loaders)
    if found is not None:
        return found
    common = None if shared is None else Path(shared) / f"{key}.h5"
    if common is not None:
        found = read_features(common, key, loaders)
    if found is None:
        found = {name: predict(base, loader, device, progress, desc=f"features ({name})")
                 for name, loader in loaders.items()}
        write_features(common or path, key, found)
    if common is not None:
        link_or_copy(common, path)
    return found


# ---- the recipe ---------------------------------------------------------------
def _check_data(train_set, image_size, settings):
    if len(train_set.classes) < 2:
        where = f" in {train_set.root}" if hasattr(train_set, "root") else ""
        raise DataError(f"a classifier needs at least two classes, found {len(train_set.classes)}{where}: "
                        f"{', '.join(train_set.classes)} (one sub-folder per class)")
    if settings.image_size is not None and image_size is not None and settings.image_size != image_size:
        raise ShapeError(f"the training images are {image_size[0]}x{image_size[1]}, the settings say "
                         f"image_size {settings.image_size[0]}x{settings.image_size[1]}")


def _start(run, model, train_set, image_size, settings, weights, allow_partial, log):
    """A new run: the pretrained base's weights (every layer of them, unless ``allow_partial``)
    and a fresh record."""
    _load_base(model, weights, allow_partial, settings, log)
    config = settings.model_config(len(train_set.classes), image_size)
    run.record = new_record(train_set.classes, image_size, config, settings.seed, type(model[0]).PREPROCESSING,
                            weights=str(Path(weights).resolve()) if weights else None, training=settings.training(),
                            augmentation=AUGMENTATIONS[settings.augment])


def _load_base(model, weights, allow_partial, settings, log):
    if weights is not None:
        try:
            report = load_weights(model[0], weights, strict=not allow_partial)
        except WeightsError as e:
            if not e.missing:
                raise
            named = e.missing[:8] + ([f"and {len(e.missing) - 8} more"] if len(e.missing) > 8 else [])
            raise WeightsError(f"{weights}: has no weights for {len(e.missing)} layers of the {settings.arch} base; "
                               f"nothing was loaded (--allow-partial-weights, allow_partial_weights=True in Python, "
                               f"lets them keep their initial weights): {', '.join(named)}", e.missing) from None
        log(f"loaded {len(report.loaded)} layers from {weights}")
        if report.untouched:
            log(f"kept their initial weights (not in {weights}): {', '.join(report.untouched)}")


def _restore(run, model, settings, log):
    """A resumed run: its last checkpoint, or the pretrained base when it stopped in its first epoch."""
    record = run.record
    if record["status"] == "finished" and record["epoch"] >= settings.total_epochs():
        log(f"{run} already finished {record['epoch']} epochs")
    else:
        log(f"resuming {run} after epoch {record['epoch']} of {settings.total_epochs()}, with the settings in "
            f"{RECORD}")
    if run.has(CHECKPOINT):
        load_weights(model, run.path / CHECKPOINT)
    elif record.get("weights"):
        load_weights(model[0], record["weights"])


def _loaders(train_set, val_set, settings, device):
    prefetch = 1 if normalize_device(device) == "gpu" else 0  # decode the next batch while the GPU works
    train = DataLoader(train_set, settings.batch_size, shuffle=True, seed=settings.seed, prefetch=prefetch,
                       balanced=settings.balanced_sampling)
    val = DataLoader(val_set, settings.batch_size, prefetch=prefetch) if val_set is not None and len(val_set) else None
    return train, val


def class_weights(settings, train_set):
    """The (K,) class weights of ``settings.class_weight``: 'balanced', n / (K · n_k) for the n_k
    images of class k among n, so that every class weighs as much in the loss; or a JSON file
    {class name: weight}; None without it."""
    spec = settings.class_weight
    if spec is None:
        return None
    classes = list(train_set.classes)
    if spec == "balanced":
        counts = np.bincount(dataset_labels(train_set), minlength=len(classes))
        return [len(train_set) / (len(classes) * c) if c else 0.0 for c in counts]
    try:
        given = json.loads(Path(spec).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise DataError(f"--class-weight {spec}: not 'balanced' nor a readable JSON file ({e})") from None
    if not isinstance(given, dict):
        raise DataError(f"--class-weight {spec}: expected a JSON object {{class: weight}}")
    missing = [c for c in classes if c not in given]
    bad = [c for c in classes if c in given and not (isinstance(given[c], (int, float)) and not
                                                      isinstance(given[c], bool) and 0 <= given[c] < float("inf"))]
    if missing or bad:
        raise DataError(f"--class-weight {spec}: " + (f"no weight for {', '.join(missing)}" if missing else
                                                      f"weights must be numbers of at least 0: {', '.join(bad)}"))
    return [float(given[c]) for c in classes]


def make_loss(settings, train_set):
    """The training loss: softmax cross-entropy, with ``label_smoothing`` and class weights."""
    weights = class_weights(settings, train_set)
    if not settings.label_smoothing and weights is None:
        return F.softmax_cross_entropy
    return functools.partial(F.softmax_cross_entropy, label_smoothing=settings.label_smoothing, class_weights=weights)


def _warn_if_unbalanced(train_set, settings):
    counts = np.bincount(dataset_labels(train_set), minlength=len(train_set.classes))
    large, small = int(np.argmax(counts)), int(np.argmin(counts))
    if counts[large] > 3 * counts[small] and settings.class_weight is None and not settings.balanced_sampling:
        warnings.warn(f"the classes are unbalanced: {train_set.classes[large]} has {counts[large]} training images, "
                      f"{train_set.classes[small]} {counts[small]}; --class-weight balanced or --balanced-sampling "
                      f"lets the small classes count as much", stacklevel=3)


def _train_phase(run, model, optimizer, train_set, val_set, settings, phase, cache_features, shared_features, device,
                 progress, log):
    """One phase, epochs ``first`` to ``end`` with ``blocks`` unfrozen: the head alone on the
    base's cached features while the base is frozen (its BatchNormalization too) and nothing
    is random in the data; else the whole model on the images."""
    first, end, blocks = phase
    train_loader, val_loader = _loaders(train_set, val_set, settings, device)
    # a frozen phase before unfrozen ones caches the features of the centre crops; augmentation is for the latter
    use_cache = cache_features and blocks == 0 and not settings.train_bn and \
        (settings.augment == "none" or end < settings.total_epochs())
    if blocks == 0 or "feature_cache" not in run.record:
        run.record["feature_cache"] = use_cache
    schedule = make_schedule(settings.schedule, settings.warmup_epochs / (end - first))
    options = {"record": run.record, "seed": settings.seed, "patience": settings.patience, "schedule": schedule,
               "first_epoch": first, "progress": progress, "log": log, "last": end == settings.total_epochs()}
    loss = make_loss(settings, train_set)
    if not use_cache:
        callbacks = run_callbacks(run.path, **options)
        if settings.mixup or settings.cutmix:  # images, not cached features, are mixed
            callbacks.append(MixBatches(len(train_set.classes), settings.mixup, settings.cutmix, settings.seed))
        return fit(model, optimizer, train_loader, val_loader, end, callbacks, loss=loss, device=device)
    base, head = base_and_head(model)
    plain = train_set.plain() if hasattr(train_set, "plain") else train_set
    loaders = {"train": DataLoader(plain, settings.batch_size)}
    if val_loader is not None:
        loaders["val"] = val_loader
    t0 = time.perf_counter()
    feats = cached_features(run.path, base, loaders, device, progress, shared_features)
    run.record["feature_seconds"] = time.perf_counter() - t0
    train_loader = DataLoader(ArrayDataset(*feats["train"]), settings.batch_size, shuffle=True, seed=settings.seed,
                              balanced=settings.balanced_sampling)
    val_loader = DataLoader(ArrayDataset(*feats["val"]), settings.batch_size) if "val" in feats else None
    return fit(head, optimizer, train_loader, val_loader, end, run_callbacks(run.path, save_model=model, **options),
               loss=loss, device=device)


def finetune(train_set, val_set, run_dir, settings=None, *, weights=None, resume=False, cache_features=True,
             shared_features=None, allow_partial_weights=False, device="cpu", progress=True, log=print, **changes):
    """The whole recipe on two datasets; returns (model, record).

    Builds the base without top (``settings.arch``, VGG16 by default; loading ``weights``,
    the published notop file or any file in Keras' layouts, which must hold every layer of
    the base unless ``allow_partial_weights``) and adds a new head. With ``freeze_epochs``
    and ``unfreeze_blocks``, it trains in two phases in one run: the head alone on the
    frozen base, then the last ``unfreeze_blocks`` blocks too for ``epochs`` more; else one
    phase of ``epochs`` with ``unfreeze_blocks`` unfrozen. The ``optimizer`` ('sgd' or
    'adam', head at ``lr``, by default 0.01 for SGD and 0.001 for Adam) gives each unfrozen
    block its own rate (`make_optimizer`, ``lr_mult``) and follows ``schedule`` over each
    phase's batches; each phase starts with a fresh optimizer state. ``settings``: a
    `minitl.runs.Settings`; ``changes``: fields of it to change (``epochs=3, lr=0.001``).
    ``resume``: go on with the run in ``run_dir``, in whichever phase it stopped, with its
    recorded settings; only ``epochs`` may change. While the whole base is frozen and there
    is no random augmentation, the base's features are computed once and cached; in a frozen
    phase before unfrozen ones, they are the features of the centre crops, and ``augment``
    applies once blocks train. ``shared_features``: a folder where runs of the same base on the
    same data find each other's features (`cached_features`).

    The run folder takes one writer at a time: it is locked while the run goes on
    (`minitl.runs.RunFolder.lock`), and a run started on a folder that another process
    writes is refused.
    """
    run = RunFolder(run_dir)
    try:
        return _finetune(run, train_set, val_set, settings, weights=weights, resume=resume,
                         cache_features=cache_features, shared_features=shared_features,
                         allow_partial_weights=allow_partial_weights, device=device, progress=progress, log=log,
                         **changes)
    except DiskFullError as e:  # what the folder keeps, and how to go on
        if not run.has(RECORD):
            raise DiskFullError(f"{e}; free some space, then start the run again") from None
        epoch = read_record(run.path).get("epoch", 0)
        kept = f"the checkpoint of epoch {epoch} is kept in {run.path / CHECKPOINT}" if epoch else \
            "no epoch was finished yet"
        raise DiskFullError(f"{e}; {kept}; free some space, then continue with --resume", resume=True) from None
    finally:
        run.unlock()


def _finetune(run, train_set, val_set, settings, *, weights, resume, cache_features, shared_features,
              allow_partial_weights, device, progress, log, **changes):
    """`finetune` in the run folder ``run``, which it locks."""
    settings = dataclasses.replace(settings or Settings(), **changes)
    if run.path.is_dir():  # refused early when another process writes it
        run.lock(log)
    image_size = tuple(train_set[0][0].shape[:2]) if len(train_set) else None
    if resume:
        run.record = read_record(run.path, RESUME_ENTRIES)
        check_resume(run.path, run.record, train_set.classes, image_size)
        run.settle()  # finish or drop what a kill left, so the checkpoint is the record's
        settings = Settings.from_record(run.record, settings.epochs)
        run.record["training"] = settings.training()
    elif settings.epochs < 1:
        raise TrainingError(f"epochs must be at least 1, got {settings.epochs}")
    shortest = min(end - first for first, end, _ in settings.phases())
    if settings.warmup_epochs >= shortest:
        raise TrainingError(f"the warm-up of {settings.warmup_epochs:g} epochs must be shorter than each phase "
                            f"(the shortest has {shortest} epochs)")
    _check_data(train_set, image_size, settings)
    class_weights(settings, train_set)  # a bad --class-weight file, before anything is written
    _warn_if_unbalanced(train_set, settings)
    manual_seed(settings.seed)
    model = build_model(run.record["model"] if resume else settings.model_config(len(train_set.classes), image_size))
    if resume:
        _restore(run, model, settings, log)
    else:
        _start(run, model, train_set, image_size, settings, weights, allow_partial_weights, log)
    set_trainable_blocks(model[0], settings.unfreeze_blocks, settings.train_bn)  # checks the count
    model.to(device)
    if not resume:
        run.lock(log)  # creates the folder, once the settings and weights are known to be good
        run.clear(log)
        run.write_record("running")  # from now on, --resume can continue it
    for phase in settings.phases():
        first, end, blocks = phase
        if run.record["epoch"] >= end and phase != settings.phases()[-1]:
            continue
        set_trainable_blocks(model[0], blocks, settings.train_bn)
        optimizer = make_optimizer(model, settings.head_lr(), settings.lr_mult, settings.momentum,
                                   settings.weight_decay, settings.clip_norm, settings.optimizer)
        if run.record["epoch"] > first and run.has(OPTIMIZER):  # this phase's state, not the previous one's
            load_optimizer(run.path / OPTIMIZER, optimizer)
        if len(settings.phases()) > 1:
            log(f"phase {settings.phases().index(phase) + 1}: epochs {first + 1} to {end}, "
                + (f"the last {blocks} blocks unfrozen" if blocks > 1 else "the last block unfrozen" if blocks
                   else "the base frozen"))
        _train_phase(run, model, optimizer, train_set, val_set, settings, phase, cache_features, shared_features,
                     device, progress, log)
    try:
        from minitl.plots import plot_history
        plot_history(run.record["history"], run.path / "curves.png",
                     settings.phases()[0][1] if len(settings.phases()) > 1 else None)
    except ImportError:  # matplotlib is optional
        pass
    return model, run.record


def compare(data, archs, out="runs/compare", settings=None, **options):
    """``minitl compare``: `finetune` with ``settings`` on each of ``archs`` (and seeds) on the
    image folder ``data``, one run folder each under ``out``; returns the table of accuracy,
    macro F1, time and size per backbone as plain data (``table["rows"]``). The work is
    `minitl.compare.compare`'s (``options``: its ``seeds``, ``weights_dir``, ``budget_ms``,
    ``resume``, ...), one layer above this one, since it runs this recipe once per backbone and
    seed; imported here, when called, so that the recipe and its comparison are found together."""
    from minitl.compare import compare as compare_backbones
    return compare_backbones(data, archs, out, settings, **options)


def find_lr(train_set, out, settings=None, *, weights=None, cache_features=True, allow_partial_weights=False,
            num=100, device="cpu", progress=True, log=print, **changes):
    """``minitl lr-find``: `minitl.train.lr_find` on the model that the first phase of
    `finetune` with these settings would train (the head alone on cached features when the
    base starts frozen), from its first batches; writes lr_find.json and lr_find.png (with
    matplotlib) into ``out`` and returns the sweep with its suggestions."""
    settings = dataclasses.replace(settings or Settings(), **changes)
    image_size = tuple(train_set[0][0].shape[:2]) if len(train_set) else None
    _check_data(train_set, image_size, settings)
    manual_seed(settings.seed)
    model = build_model(settings.model_config(len(train_set.classes), image_size))
    _load_base(model, weights, allow_partial_weights, settings, log)
    blocks = settings.phases()[0][2]
    set_trainable_blocks(model[0], blocks, settings.train_bn)
    model.to(device)
    optimizer = make_optimizer(model, settings.head_lr(), settings.lr_mult, settings.momentum, settings.weight_decay,
                               settings.clip_norm, settings.optimizer)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    loader = DataLoader(train_set, settings.batch_size, shuffle=True, seed=settings.seed)
    trained = model
    if cache_features and blocks == 0 and settings.augment == "none" and not settings.train_bn:
        base, trained = base_and_head(model)
        feats = cached_features(out, base, {"train": DataLoader(train_set, settings.batch_size)}, device, progress)
        loader = DataLoader(ArrayDataset(*feats["train"]), settings.batch_size, shuffle=True, seed=settings.seed)
    result = lr_find(trained, optimizer, loader, num=num, device=device)
    result.update(settings=settings.training(), batches=len(result["lrs"]),
                  trained="the head" if blocks == 0 else f"the last {blocks} blocks and the head")
    write_json(out / "lr_find.json", result)
    try:
        from minitl.plots import plot_lr_find
        plot_lr_find(result, out / "lr_find.png")
    except ImportError:  # matplotlib is optional
        pass
    return result


def load_run(run_dir, which=CHECKPOINT, device="cpu"):
    """(model, record) of a run directory, with its checkpoint (``which=BEST``: best.h5) loaded:
    the file its record names, also just after a kill (`RunFolder.committed`)."""
    run_dir = Path(run_dir)
    record = read_record(run_dir)
    try:
        path = RunFolder(run_dir, record).committed(which)
    except TrainingError:  # a training run may have committed its next epoch since: read its record again
        record = read_record(run_dir)
        path = RunFolder(run_dir, record).committed(which)
    if not path.is_file():
        hint = " (it is written when the validation loss improves; a run without validation data has none)" \
            if which == BEST else ""
        raise TrainingError(f"{run_dir} has no {which}: {path} does not exist{hint}")
    model = build_model(record["model"])
    load_weights(model, path)
    return model.to(device).eval(), record



# ---- export to Keras -----------------------------------------------------------
KERAS_SCRIPT = '''"""{title}

Written by `minitl export` (minitl {version}) beside {weights}, the weights of {which}
of the run {run}. It rebuilds the model with Keras and loads them:

    from {module} import build_model, load_images
    probabilities = build_model().predict(load_images(["photo.jpg"]))

or, from a shell: python {script} IMAGE...

The model: keras.applications.{cls} without its top (weights=None: the weights come from
{weights}), then minitl's head, with minitl's layer names. The last layer gives the
probabilities (a softmax over the logits that minitl's head_predictions outputs).
model.load_weights reads {weights} by layer order, the order of this model's layers.
Keras 3 (any backend) and Keras 2 (tf_keras, when TF_USE_LEGACY_KERAS=1) both read it.

Input: {height}x{width} RGB images. minitl resizes an image so that it covers {height}x{width}
(keeping its aspect ratio, bilinear), takes the center, and applies
keras.applications.{arch}.preprocess_input to the pixel values 0..255 ({mode}).

Classes, in the order of the outputs: {class_list}.
"""
import os
import sys

import numpy as np

if os.environ.get("TF_USE_LEGACY_KERAS", "").lower() in ("1", "true"):
    import tf_keras as keras  # Keras 2
else:
    import keras

CLASSES = {classes!r}
INPUT_SHAPE = {input_shape!r}
WEIGHTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), {weights!r})


def build_model(weights=WEIGHTS):
    base = keras.applications.{cls}(include_top=False, weights=None, input_shape=INPUT_SHAPE,{alpha}
                                    pooling=None)
{head}
    model = keras.Model(base.input, x, name="transfer")
    model.load_weights(weights)
    return model


def load_images(paths):
    """Image files -> the model's input, (N, {height}, {width}, 3), as minitl prepares them
    (minitl also puts transparent images on white and scales 16-bit grayscale to 0..255)."""
    from PIL import Image, ImageOps  # Pillow, as keras.utils.load_img needs it too

    height, width = INPUT_SHAPE[:2]
    images = []
    for path in paths:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img).convert("RGB")
        scale = max(height / img.height, width / img.width)
        h, w = max(height, int(img.height * scale + 0.5)), max(width, int(img.width * scale + 0.5))
        if (h, w) != (img.height, img.width):
            img = img.resize((w, h), Image.BILINEAR)
        top, left = (h - height) // 2, (w - width) // 2
        images.append(np.asarray(img.crop((left, top, left + width, top + height)), dtype="float32"))
    return keras.applications.{arch}.preprocess_input(np.stack(images))


if __name__ == "__main__":
    probabilities = build_model().predict(load_images(sys.argv[1:]), verbose=0)
    for path, p in zip(sys.argv[1:], probabilities):
        print(path)
        for i in np.argsort(-p)[:3]:
            print(f"  {{CLASSES[i]:<20}} {{p[i]:.4f}}")
'''

PREPROCESSING_TEXT = {"caffe": "caffe mode: RGB to BGR, minus the ImageNet mean [103.939, 116.779, 123.68]",
                      "tf": "tf mode: x / 127.5 - 1, in [-1, 1]"}


def _keras_head(config):
    """The Keras lines of `build_head`'s layers, applied to ``base.output``."""
    pool = ('keras.layers.Flatten(name="head_flatten")' if config.get("pooling", "flatten") == "flatten"
            else 'keras.layers.GlobalAveragePooling2D(name="head_pool")')
    lines = [f"    x = {pool}(base.output)"]
    for i, units in enumerate(config.get("hidden", (1024, 512)), start=1):
        lines.append(f'    x = keras.layers.Dense({units}, activation="relu", name="head_dense{i}")(x)')
        if config.get("dropout", 0.0):
            lines.append(f'    x = keras.layers.Dropout({config["dropout"]!r}, name="head_dropout{i}")(x)')
    lines.append(f'    x = keras.layers.Dense({config["num_classes"]}, activation="softmax", '
                 f'name="head_predictions")(x)')
    return "\n".join(lines)


def keras_script(record, weights_name, run="", which=BEST, module="model_keras"):
    """The text of a Keras script that rebuilds a run's model (``record``: its record.json) as
    keras.applications.<Backbone> without top plus the same head layers, loads ``weights_name``
    (a file beside the script) with model.load_weights, and prepares images as the run did.
    WeightsError when keras.applications cannot build the backbone (a width other than 1, which
    only MobileNetV2 has, as its alpha)."""
    from minitl import __version__
    config = record["model"]
    arch, width = config.get("arch", "vgg16"), config.get("width", 1.0)
    backbone = get_backbone(arch)
    if backbone.WIDTH_ARGUMENT != "alpha" and width != 1.0:
        raise WeightsError(f"{run or 'the run'}: its {arch} has width {width:g}, which Keras cannot build: "
                           f"keras.applications.{backbone.__name__} has no width multiplier (MobileNetV2's "
                           f"alpha is the only one); export a run of width 1")
    height, w = config["input_shape"][:2]
    mode = record.get("preprocessing", backbone.PREPROCESSING)
    return KERAS_SCRIPT.format(
        title=f"{backbone.__name__} fine-tuned by minitl on {len(record['classes'])} classes, in Keras.",
        version=__version__, weights=weights_name, which="the best epoch (best.h5)" if which == BEST
        else "the last epoch (checkpoint.h5)", run=run, module=module, script=f"{module}.py",
        cls=backbone.__name__, arch=arch, height=height, width=w, mode=PREPROCESSING_TEXT[mode],
        class_list=", ".join(record["classes"]), classes=list(record["classes"]),
        input_shape=tuple(config["input_shape"]),
        alpha=f" alpha={width!r}," if backbone.WIDTH_ARGUMENT == "alpha" else "", head=_keras_head(config))


def export_run(run_dir, out, which=BEST):
    """Write a run's weights (``which``: BEST or CHECKPOINT) to ``out`` (.h5, Keras' legacy layout,
    atomically) and beside it ``<stem>_keras.py``, the Keras script of `keras_script`. Returns
    the two paths. WeightsError for an ``out`` that Keras would not read as that layout (not
    '.h5', or '.weights.h5', Keras 3's own) or that exists and is not a file."""
    out = Path(out)
    if not out.name.endswith(".h5") or out.name.endswith(".weights.h5"):
        raise WeightsError(f"{out}: the name must end in '.h5' but not '.weights.h5' (Keras 3 reads that name "
                           f"as its own layout, not the legacy one written here)")
    script = out.with_name(out.name[:-len(".h5")] + "_keras.py")
    for path in (out, script):
        if path.exists() and not path.is_file():
            raise WeightsError(f"{path} exists and is not a file")
    record = read_record(run_dir)
    text = keras_script(record, out.name, run=str(run_dir), which=which, module=script.stem)
    model, _ = load_run(run_dir, which)
    save_weights(model, out)
    with atomic_write(script) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return out, script



# ---- export to ONNX ------------------------------------------------------------
ONNX_SCRIPT = '''"""{title}

Written by `minitl export --format onnx` (minitl {version}) beside {model}, the ONNX model of
{which} of the run {run}. It runs the model with ONNX Runtime alone (onnxruntime, NumPy and
Pillow; minitl is not needed):

    from {module} import load_images, predict
    probabilities = predict(load_images(["photo.jpg"]))

or, from a shell: python {script} IMAGE...

The model: minitl's {arch} base and head, then a softmax; opset {opset}, any batch size.
{input_text}
Output "{output}": (N, {num_classes}) float32, the probabilities of the classes, in order:
{class_list}.

Images: minitl resizes an image so that it covers {height}x{width} (keeping its aspect ratio,
bilinear, computing only the center crop's pixels), takes the center; load_images does the same.
"""
import os
import sys

import numpy as np

CLASSES = {classes!r}
IMAGE_SIZE = {image_size!r}
PREPROCESSING = {preprocessing!r}  # None: the model applies it to uint8 images itself
MODEL = os.path.join(os.path.dirname(os.path.abspath(__file__)), {model!r})
MEAN_BGR = (103.939, 116.779, 123.68)


def load_images(paths):
    """Image files -> the model's input, (N, {height}, {width}, 3), as minitl prepares them
    (minitl also scales 16-bit grayscale to 0..255)."""
    from PIL import Image, ImageOps

    height, width = IMAGE_SIZE
    images = []
    for path in paths:
        with Image.open(path) as img:
            img.draft(None, (max(IMAGE_SIZE), max(IMAGE_SIZE)))  # a JPEG decoded at 1/2, 1/4 or 1/8 if large
            img = ImageOps.exif_transpose(img)
        if img.mode != "RGB" and ("A" in img.mode or "a" in img.mode or "transparency" in img.info):
            white = Image.new("RGBA", img.size, (255, 255, 255, 255))  # transparent pixels on white
            img = Image.alpha_composite(white, img.convert("RGBA"))
        img = img.convert("RGB")
        scale = max(height / img.height, width / img.width)
        h, w = max(height, int(img.height * scale + 0.5)), max(width, int(img.width * scale + 0.5))
        top, left = (h - height) // 2, (w - width) // 2
        if (h, w) == (img.height, img.width):
            img = img.crop((left, top, left + width, top + height))
        else:
            sy, sx = img.height / h, img.width / w
            img = img.resize((width, height), Image.BILINEAR,
                             box=(left * sx, top * sy, (left + width) * sx, (top + height) * sy))
        images.append(np.asarray(img, dtype=np.uint8))
    x = np.stack(images)
    if PREPROCESSING == "caffe":  # RGB -> BGR, minus the ImageNet mean
        return x[..., ::-1].astype(np.float32) - np.asarray(MEAN_BGR, np.float32)
    if PREPROCESSING == "tf":  # x / 127.5 - 1
        return x.astype(np.float32) / np.float32(127.5) - np.float32(1)
    return x


def predict(images, model=MODEL):
    """The probabilities, (N, {num_classes}), of images prepared by load_images."""
    import onnxruntime

    session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
    return session.run([{output!r}], {{{input!r}: images}})[0]


if __name__ == "__main__":
    probabilities = predict(load_images(sys.argv[1:]))
    for path, p in zip(sys.argv[1:], probabilities):
        print(path)
        for i in np.argsort(-p)[:3]:
            print(f"  {{CLASSES[i]:<20}} {{p[i]:.4f}}")
'''


def onnx_script(record, model_name, with_preprocessing, run="", which=BEST, module="model_onnx"):
    """The text of a script that runs ``model_name`` (the ONNX model of a run, beside it) with
    ONNX Runtime on image files, preparing them as the run did."""
    from minitl import __version__
    from minitl.onnx_export import INPUT, OPSET, OUTPUT
    config = record["model"]
    arch = config.get("arch", "vgg16")
    height, width = config["input_shape"][:2]
    mode = record.get("preprocessing", get_backbone(arch).PREPROCESSING)
    input_text = textwrap.fill(
        f'Input "{INPUT}": ' + (f"(N, {height}, {width}, 3) uint8 RGB pixels; the model applies Keras' "
                                f"preprocess_input ({PREPROCESSING_TEXT[mode]})." if with_preprocessing else
                                f"(N, {height}, {width}, 3) float32, RGB pixels 0..255 after Keras' "
                                f"preprocess_input ({PREPROCESSING_TEXT[mode]})."), 92)
    return ONNX_SCRIPT.format(
        title=f"{get_backbone(arch).__name__} fine-tuned by minitl on {len(record['classes'])} classes, in ONNX "
              f"Runtime.", version=__version__, model=model_name, run=run, module=module, script=f"{module}.py",
        which="the best epoch (best.h5)" if which == BEST else "the last epoch (checkpoint.h5)", arch=arch,
        opset=OPSET, input=INPUT, output=OUTPUT, input_text=input_text, num_classes=len(record["classes"]),
        class_list=", ".join(record["classes"]), classes=list(record["classes"]), image_size=(height, width),
        height=height, width=width, preprocessing=None if with_preprocessing else mode)


def export_onnx(run_dir, out, which=BEST, with_preprocessing=False):
    """Write a run's model (``which``: BEST or CHECKPOINT) to ``out`` (.onnx, atomically) as an
    ONNX graph (`minitl.onnx_export.to_onnx`: the base, the head and a softmax; NHWC input of
    any batch size; with ``with_preprocessing``, uint8 RGB input and the run's preprocessing in
    the graph), and beside it ``<stem>_onnx.py``, the ONNX Runtime script of `onnx_script`.
    Returns the two paths. WeightsError for an ``out`` not named '.onnx' or that exists and is
    not a file."""
    from minitl import __version__
    from minitl.onnx_export import to_onnx
    out = Path(out)
    if not out.name.endswith(".onnx"):
        raise WeightsError(f"{out}: the name must end in '.onnx'")
    script = out.with_name(out.name[:-len(".onnx")] + "_onnx.py")
    for path in (out, script):
        if path.exists() and not path.is_file():
            raise WeightsError(f"{path} exists and is not a file")
    record = read_record(run_dir)
    text = onnx_script(record, out.name, with_preprocessing, run=str(run_dir), which=which, module=script.stem)
    model, _ = load_run(run_dir, which)
    mode = record.get("preprocessing", type(model[0]).PREPROCESSING)
    metadata = {"classes": json.dumps(record["classes"]), "image_size": json.dumps(record["image_size"]),
                "preprocessing": mode, "preprocessing_in_graph": str(bool(with_preprocessing)).lower(),
                "arch": record["model"].get("arch", "vgg16"), "run": str(run_dir), "minitl": __version__}
    proto = to_onnx(model, record["model"]["input_shape"], mode if with_preprocessing else None, metadata,
                    name=f"minitl_{metadata['arch']}")
    with atomic_write(out) as tmp:
        tmp.write_bytes(proto.SerializeToString())
    with atomic_write(script) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return out, script
