"""Transfer learning, step by step: take a pretrained base, replace its head, freeze the base,
fine-tune with a lowered learning rate, and evaluate.

A run directory holds everything a run writes, each file written atomically:
``record.json`` (classes, image size, preprocessing, model and optimizer settings,
epoch, metrics history), ``checkpoint.h5`` (the last good weights, Keras layout),
``best.h5`` (lowest validation loss), ``optimizer.h5`` (momentum buffers),
``features.h5`` (the frozen base's features, when cached) and the evaluation outputs.
"""
import hashlib
import json
import math
import os
import signal
import threading
import time
from pathlib import Path

import h5py
import numpy

from . import functional as F
from . import io as weights_io
from .backend import normalize_device, to_device, to_numpy
from .data import ArrayDataset, DataLoader
from .errors import DataError, TrainingError
from .files import write_h5, write_json
from .metrics import classification_report
from .applications import VGG16
from .nn import Dense, Dropout, Flatten, GlobalAvgPool2D, Sequential, manual_seed
from .optim import SGD, Adam, CosineLR, StepLR
from .tensor import Tensor, no_grad

RECORD, CHECKPOINT, BEST, OPTIMIZER, FEATURES = "record.json", "checkpoint.h5", "best.h5", "optimizer.h5", "features.h5"
RUN_FILES = (RECORD, CHECKPOINT, BEST, OPTIMIZER, "curves.png", "evaluation.json", "evaluation.png")


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
    """The transfer model (a VGG16 base without top, then the head) from a run record's 'model' entry."""
    base = VGG16(include_top=False, input_shape=tuple(config["input_shape"]), width=config.get("width", 1.0),
                 kernel_initializer="he_normal")
    head = build_head(config["num_classes"], tuple(config.get("hidden", (1024, 512))),
                      config.get("dropout", 0.0), config.get("pooling", "flatten"))
    return Sequential([base, head], name="transfer", input_shape=tuple(config["input_shape"]))


def base_and_head(model):
    return model[0], model[1]


def set_trainable_blocks(base, blocks):
    """Freeze the VGG16 base except its last ``blocks`` blocks (0: all frozen, 5: all trainable)."""
    base.freeze()
    for layer in base.layers():
        if layer.name.startswith("block") and int(layer.name[5]) > 5 - blocks:
            layer.unfreeze()


DEFAULT_LR = {"sgd": 0.01, "adam": 0.001}


def make_optimizer(model, lr, base_lr=None, momentum=0.9, weight_decay=0.0, clip_norm=None, optimizer="sgd"):
    """SGD (or Adam) with two parameter groups: the head at ``lr``, unfrozen base layers at ``base_lr`` (lr/10)."""
    base, head = base_and_head(model)
    groups = [{"params": head.parameters(), "lr": lr}]
    groups.append({"params": base.parameters(), "lr": base_lr if base_lr is not None else lr / 10})
    if optimizer == "sgd":
        return SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay, clip_norm=clip_norm)
    if optimizer == "adam":
        return Adam(groups, lr=lr, weight_decay=weight_decay, clip_norm=clip_norm)
    raise ValueError(f"unknown optimizer {optimizer!r}: use sgd or adam")


def make_schedule(optimizer, name, epochs):
    if name in (None, "none", "constant"):
        return None
    if name == "cosine":
        return CosineLR(optimizer, t_max=max(epochs, 1))
    if name == "step":
        return StepLR(optimizer, step_size=max(epochs // 3, 1), gamma=0.1)
    raise ValueError(f"unknown learning-rate schedule {name!r}: use none, step or cosine")


def save_optimizer(path, optimizer):
    """The optimizer's state in HDF5: settings as JSON attributes, buffers under state/<parameter>/<name>."""
    state = optimizer.state_dict()

    def fill(f):
        f.attrs["optimizer"] = state["optimizer"]
        f.attrs["param_groups"] = json.dumps(state["param_groups"])
        for i, buffers in state["state"].items():
            for name, v in buffers.items():
                f.create_dataset(f"state/{i}/{name}", data=v)
    write_h5(path, fill)


def load_optimizer(path, optimizer):
    try:
        with h5py.File(path, "r") as f:
            state = {"optimizer": f.attrs["optimizer"], "param_groups": json.loads(f.attrs["param_groups"]),
                     "state": {i: {name: d[()] for name, d in g.items()} for i, g in f.get("state", {}).items()}}
        optimizer.load_state_dict(state)
    except (OSError, KeyError, ValueError) as e:
        raise TrainingError(f"{path}: cannot restore the optimizer: {e}") from e


def clear_run(run_dir, log=print):
    """Delete a previous run's outputs in run_dir (the record first), so that a new run never
    mixes with them. features.h5 stays: its key tells whether it fits the new run."""
    old = [Path(run_dir) / name for name in RUN_FILES if (Path(run_dir) / name).is_file()]
    if old:
        log(f"replacing the previous run in {run_dir}")
    for path in old:
        path.unlink()


def _check_resume(run_dir, record, train_set, image_size):
    classes, size = record["classes"], record["image_size"]
    if list(train_set.classes) != classes or list(image_size) != size:
        raise TrainingError(f"cannot resume {run_dir}: it was trained on classes {', '.join(classes)} at "
                            f"{size[0]}x{size[1]}, the data given has classes {', '.join(train_set.classes)} at "
                            f"{image_size[0]}x{image_size[1]}")


def read_record(run_dir):
    path = Path(run_dir) / RECORD
    if not path.is_file():
        raise TrainingError(f"{run_dir} is not a minitl run directory (no {RECORD})")
    return json.loads(path.read_text())


# ---- forward passes -----------------------------------------------------------
def _batch(x, y, device):
    return Tensor(to_device(x, device)), to_device(y, device)


def predict_logits(model, loader, device="cpu"):
    """(logits as a NumPy array, labels) over a loader, in eval mode and without a graph."""
    model.eval()
    outs, labels = [], []
    with no_grad():
        for x, y in loader.batches(0):
            outs.append(to_numpy(model(Tensor(to_device(x, device))).data))
            labels.append(y)
    return numpy.concatenate(outs), numpy.concatenate(labels)


def evaluate(model, loader, class_names, device="cpu"):
    """Loss, accuracy, per-class precision/recall/F1, macro averages and the confusion matrix."""
    logits, labels = predict_logits(model, loader, device)
    report = classification_report(labels, logits.argmax(axis=1), class_names)
    report["loss"] = float(F.softmax_cross_entropy(Tensor(logits), labels).item())
    return report


def compute_features(base, loader, device="cpu", progress=False, desc="features"):
    """The frozen base's outputs for every batch of ``loader`` (in order), as NumPy arrays."""
    from tqdm import tqdm
    base.eval()
    feats, labels = [], []
    with no_grad():
        for x, y in tqdm(loader.batches(0), total=len(loader), desc=desc, disable=not progress, leave=False):
            feats.append(to_numpy(base(Tensor(to_device(x, device))).data))
            labels.append(y)
    return numpy.concatenate(feats), numpy.concatenate(labels)


def _dataset_key(dataset):
    """What a dataset's items depend on: its files (size, mtime) and preparation, or its arrays."""
    if hasattr(dataset, "samples"):
        files = []
        for path, label in dataset.samples:
            st = os.stat(path)
            files.append((str(path), int(label), st.st_size, st.st_mtime_ns))
        steps = [getattr(dataset, k, None) for k in ("image_size", "crop", "flip", "resize")]
        steps += [getattr(getattr(dataset, k, None), "__qualname__", None) for k in ("transform", "preprocess")]
        return repr((files, steps)).encode()
    h = hashlib.sha256(str(len(dataset)).encode())
    for k in ("labels", "images"):
        if getattr(dataset, k, None) is not None:
            h.update(numpy.ascontiguousarray(getattr(dataset, k)).tobytes())
    return h.digest()


def features_key(base, loaders):
    """sha256 of the base's weights and of each dataset: features.h5 is reused only when it matches."""
    h = hashlib.sha256()
    for p in base.parameters():
        a = numpy.ascontiguousarray(to_numpy(p.data))
        h.update(f"{a.shape}{a.dtype.str}".encode())
        h.update(a.tobytes())
    for name in sorted(loaders):
        h.update(name.encode())
        h.update(_dataset_key(loaders[name].dataset))
    return h.hexdigest()


def cached_features(run_dir, base, loaders, device="cpu", progress=False):
    """{'train': (features, labels), ...}: read from features.h5 if it was made by the same base
    weights from the same data (see features_key), else computed and stored."""
    path = Path(run_dir) / FEATURES
    key = features_key(base, loaders)
    if path.is_file():
        with h5py.File(path, "r") as f:
            if f.attrs.get("key") == key and all(name in f for name in loaders):
                return {name: (f[name]["features"][()], f[name]["labels"][()]) for name in loaders}
    out = {name: compute_features(base, loader, device, progress, desc=f"features ({name})")
           for name, loader in loaders.items()}

    def fill(f):
        f.attrs["key"] = key
        for name, (x, y) in out.items():
            g = f.create_group(name)
            g.create_dataset("features", data=x)
            g.create_dataset("labels", data=y)
    write_h5(path, fill)
    return out


# ---- training -----------------------------------------------------------------
class HeldInterrupt:
    """Hold Ctrl-C (SIGINT) inside a ``with`` block; ``caught`` tells whether it came.

    A group of files written together (checkpoint, optimizer state, record) is then never
    left half old, half new. Outside the main thread, or when SIGINT is ignored, it does nothing.
    """

    def __enter__(self):
        self.caught, self._previous = False, None
        if threading.current_thread() is threading.main_thread() \
                and signal.getsignal(signal.SIGINT) not in (signal.SIG_IGN, None):
            self._previous = signal.signal(signal.SIGINT, self._hold)
        return self

    def _hold(self, signum, frame):
        self.caught = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False


def train_epoch(model, loader, optimizer, epoch, device="cpu", progress=True, desc=""):
    """One pass of SGD over ``loader``: forward, L = mean cross-entropy, backward, W ← W − η∇L."""
    from tqdm import tqdm
    model.train()
    total_loss, correct, seen, start = 0.0, 0, 0, time.perf_counter()
    bar = tqdm(total=len(loader), desc=desc, disable=not progress, leave=False, unit="batch")
    for i, (x, y) in enumerate(loader.batches(epoch)):
        xb, yb = _batch(x, y, device)
        logits = model(xb)
        loss = F.softmax_cross_entropy(logits, yb)
        value = float(loss.item())
        if not math.isfinite(value):
            raise TrainingError(f"the loss became {value} at epoch {epoch + 1}, batch {i + 1}")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total_loss += value * len(y)
        correct += int((to_numpy(logits.data).argmax(axis=1) == y).sum())
        seen += len(y)
        rate = seen / max(time.perf_counter() - start, 1e-9)
        # the count and the running loss shown together, once the batch is done
        bar.set_postfix(loss=f"{total_loss / seen:.4f}", acc=f"{correct / seen:.3f}", img_s=f"{rate:.0f}",
                        refresh=False)
        bar.update()
    bar.close()
    seconds = time.perf_counter() - start
    return {"loss": total_loss / max(seen, 1), "accuracy": correct / max(seen, 1), "seconds": seconds,
            "images_per_s": seen / max(seconds, 1e-9)}


def fit(model, optimizer, train_loader, val_loader=None, epochs=10, run_dir=None, record=None,
        schedule=None, patience=None, device="cpu", progress=True, seed=0, log=print, save_model=None):
    """Train for ``epochs`` (continuing from ``record['epoch']`` when resuming), validating after each.

    After each epoch the weights are checkpointed (atomically) with the run record, and
    ``best.h5`` keeps the weights of the lowest validation loss. Early stopping ends
    training when the validation loss has not improved for ``patience`` epochs. A NaN
    or infinite loss stops training with ``TrainingError`` and leaves the last good
    checkpoint in place. Ctrl-C stops after writing the record; the checkpoint of the
    last finished epoch stays, and ``--resume`` continues from it; Ctrl-C while an epoch's
    files are written takes effect once they are all written.
    ``save_model``: the model whose weights are checkpointed, when ``model`` is only
    part of it (the head, trained on cached features).
    """
    record = record if record is not None else {}
    history = record.setdefault("history", [])
    start = record.get("epoch", 0)
    best, waited = record.get("best_val_loss", math.inf), record.get("epochs_without_improvement", 0)
    run_dir = Path(run_dir) if run_dir is not None else None
    save_model = model if save_model is None else save_model
    if schedule is not None:
        schedule.epoch = start
        schedule._apply()

    def checkpoint(name):
        if run_dir is not None:
            weights_io.save_weights(save_model, run_dir / name)

    def save_record(status):
        record["status"] = status
        if run_dir is not None:
            write_json(run_dir / RECORD, record)

    def interrupted(when):
        save_record("interrupted")
        log(f"interrupted {when}; the checkpoint of epoch {record.get('epoch', 0)} is kept"
            + (f" in {run_dir}; continue with --resume" if run_dir is not None else ""))
        raise KeyboardInterrupt from None

    def end_epoch(row):
        """Log, checkpoint, save the optimizer and the record; True to stop early."""
        nonlocal best, waited
        history.append(row)
        msg = f"epoch {row['epoch']}/{epochs}: loss {row['loss']:.4f}, accuracy {row['accuracy']:.3f}"
        if "val_loss" in row:
            msg += f", val_loss {row['val_loss']:.4f}, val_accuracy {row['val_accuracy']:.3f}"
        log(msg + f" ({row['images_per_s']:.0f} images/s)")
        record["epoch"] = row["epoch"]
        if schedule is not None:
            schedule.step()
        stop = False
        if "val_loss" in row:
            if row["val_loss"] < best:
                best, waited = row["val_loss"], 0
                checkpoint(BEST)
            else:
                waited += 1
                stop = patience is not None and waited >= patience
        record["best_val_loss"], record["epochs_without_improvement"] = best, waited
        checkpoint(CHECKPOINT)
        if run_dir is not None:
            save_optimizer(run_dir / OPTIMIZER, optimizer)
        save_record("running")
        return stop

    for epoch in range(start, epochs):
        manual_seed(seed * 1_000_003 + epoch)  # dropout masks of this epoch, the same on resume
        lrs = [g["lr"] for g in optimizer.param_groups]
        try:
            stats = train_epoch(model, train_loader, optimizer, epoch, device, progress,
                                desc=f"epoch {epoch + 1}/{epochs}")
            row = {"epoch": epoch + 1, "lr": lrs[0], **stats}
            if val_loader is not None:
                logits, labels = predict_logits(model, val_loader, device)
                row["val_loss"] = float(F.softmax_cross_entropy(Tensor(logits), labels).item())
                row["val_accuracy"] = float((logits.argmax(axis=1) == labels).mean())
        except TrainingError as e:
            save_record("diverged")
            kept = f"the checkpoint of epoch {epoch} is kept in {run_dir / CHECKPOINT}" \
                if run_dir is not None and (run_dir / CHECKPOINT).is_file() else "no checkpoint was written"
            raise TrainingError(f"{e}: training stopped; {kept}. Try a lower learning rate (--lr).") from None
        except KeyboardInterrupt:
            interrupted(f"during epoch {epoch + 1}")
        with HeldInterrupt() as held:  # the files of one epoch are written together
            stop = end_epoch(row)
        if held.caught:
            interrupted(f"after epoch {epoch + 1}")
        if stop:
            log(f"early stopping: no improvement of the validation loss for {patience} epochs")
            break
    save_record("finished")
    return record


def finetune(train_set, val_set, run_dir, weights=None, width=1.0, hidden=(1024, 512), dropout=0.0,
             pooling="flatten", epochs=10, batch_size=32, optimizer="sgd", lr=None, base_lr=None, momentum=0.9,
             weight_decay=0.0, unfreeze_blocks=0, schedule="none", patience=None, seed=0, device="cpu",
             cache_features=True, resume=False, progress=True, log=print, augment=False, clip_norm=None):
    """The whole recipe on two datasets; returns (model, record).

    Builds VGG16 without top (loading ``weights``, the published notop file or any
    file in Keras' layouts), adds a new head, freezes the base except its last
    ``unfreeze_blocks`` blocks, and trains with ``optimizer``, 'sgd' or 'adam' (head at
    ``lr``, by default 0.01 for SGD and 0.001 for Adam; base at ``base_lr`` = lr/10
    by default). While the whole base is frozen and there is no
    random augmentation, the base's features are computed once and cached.
    """
    run_dir = Path(run_dir)
    image_size = tuple(train_set[0][0].shape[:2]) if len(train_set) else None
    config = {"arch": "vgg16", "input_shape": [*image_size, 3], "width": width, "num_classes": len(train_set.classes),
              "hidden": list(hidden), "dropout": dropout, "pooling": pooling}
    training = {"epochs": epochs, "batch_size": batch_size, "optimizer": optimizer,
         "lr": DEFAULT_LR[optimizer] if lr is None else lr, "base_lr": base_lr, "momentum": momentum,
         "weight_decay": weight_decay, "unfreeze_blocks": unfreeze_blocks, "schedule": schedule,
         "patience": patience, "augment": augment, "clip_norm": clip_norm}
    if resume:  # go on with the recorded model and settings; only epochs may change
        record = read_record(run_dir)
        _check_resume(run_dir, record, train_set, image_size)
        config, seed = record["model"], record["seed"]
        training = record["training"] = {**record["training"], "epochs": max(epochs, record["epoch"])}
    elif epochs < 1:
        raise TrainingError(f"epochs must be at least 1, got {epochs}")
    if len(train_set.classes) < 2:
        where = f" in {train_set.root}" if hasattr(train_set, "root") else ""
        raise DataError(f"a classifier needs at least two classes, found {len(train_set.classes)}{where}: "
                        f"{', '.join(train_set.classes)} (one sub-folder per class)")
    manual_seed(seed)
    model = build_model(config)
    base, head = base_and_head(model)
    if resume:
        if record["status"] == "finished" and record["epoch"] >= epochs:
            log(f"{run_dir} already finished {record['epoch']} epochs")
        else:
            log(f"resuming {run_dir} after epoch {record['epoch']} of {training['epochs']}, "
                f"with the settings in {RECORD}")
        if (run_dir / CHECKPOINT).is_file():
            weights_io.load_weights(model, run_dir / CHECKPOINT)
        elif record.get("weights"):  # stopped in the first epoch: start again from the pretrained base
            weights_io.load_weights(base, record["weights"])
    else:
        if weights is not None:
            weights_io.load_weights(base, weights)
        record = {"classes": list(train_set.classes), "image_size": list(image_size), "preprocessing": "caffe",
                  "model": config, "weights": str(Path(weights).resolve()) if weights else None, "seed": seed,
                  "training": training,
                  "epoch": 0, "history": []}
    set_trainable_blocks(base, training["unfreeze_blocks"])
    model.to(device)
    opt = make_optimizer(model, training["lr"], training["base_lr"], training["momentum"],
                         training["weight_decay"], training["clip_norm"], training["optimizer"])
    if resume and (run_dir / OPTIMIZER).is_file():
        load_optimizer(run_dir / OPTIMIZER, opt)
    sched = make_schedule(opt, training["schedule"], training["epochs"])
    if not resume:
        clear_run(run_dir, log)
    run_dir.mkdir(parents=True, exist_ok=True)  # once the settings and weights are known to be good
    prefetch = 1 if normalize_device(device) == "gpu" else 0  # decode the next batch while the GPU works
    batch_size = training["batch_size"]
    train_loader = DataLoader(train_set, batch_size, shuffle=True, seed=seed, prefetch=prefetch)
    val_loader = DataLoader(val_set, batch_size, prefetch=prefetch) if val_set is not None and len(val_set) else None

    use_cache = cache_features and training["unfreeze_blocks"] == 0 and not training["augment"]
    record["feature_cache"] = use_cache
    if use_cache:
        loaders = {"train": DataLoader(train_set, batch_size)}
        if val_loader is not None:
            loaders["val"] = val_loader
        t0 = time.perf_counter()
        feats = cached_features(run_dir, base, loaders, device, progress)
        record["feature_seconds"] = time.perf_counter() - t0
        train_loader = DataLoader(ArrayDataset(*feats["train"]), batch_size, shuffle=True, seed=seed)
        if "val" in feats:
            val_loader = DataLoader(ArrayDataset(*feats["val"]), batch_size)
        fit(head, opt, train_loader, val_loader, training["epochs"], run_dir, record, sched,
            training["patience"], device, progress, seed, log, save_model=model)
    else:
        fit(model, opt, train_loader, val_loader, training["epochs"], run_dir, record, sched,
            training["patience"], device, progress, seed, log)
    try:
        from .plots import plot_history
        plot_history(record["history"], run_dir / "curves.png")
    except ImportError:  # matplotlib is optional
        pass
    return model, record


def load_run(run_dir, which=CHECKPOINT, device="cpu"):
    """(model, record) of a run directory, with its checkpoint (or best.h5) loaded."""
    run_dir = Path(run_dir)
    record = read_record(run_dir)
    model = build_model(record["model"])
    path = run_dir / which
    if not path.is_file():
        path = run_dir / CHECKPOINT
    weights_io.load_weights(model, path)
    return model.to(device).eval(), record
