"""The run folder: the settings a fine-tuning run is made with, and the files it writes.

A run directory holds everything a run writes, each file written atomically:
``record.json`` (classes, image size, preprocessing, model and training settings,
epoch, metrics history), ``checkpoint.h5`` (the last good weights, Keras layout),
``best.h5`` (lowest validation loss), ``optimizer.h5`` (momentum buffers),
``features.h5`` (the frozen base's features, when cached) and the evaluation outputs.

The files of one epoch change together (`RunFolder.commit_epoch`): after a kill at any
instant, ``--resume`` continues from the last committed epoch as if never stopped.
"""
import argparse
import fcntl
import hashlib
import json
import math
import os
import shlex
import signal
import socket
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path

import h5py
import numpy as np

from minitl.backend import to_numpy
from minitl.errors import TrainingError
from minitl.files import (
    access_error,
    disk_full_error,
    file_digest,
    process_running,
    remove_stale_temporaries,
    write_h5,
    write_json,
)
from minitl.io import save_weights

RECORD, CHECKPOINT, BEST, OPTIMIZER, FEATURES = "record.json", "checkpoint.h5", "best.h5", "optimizer.h5", "features.h5"
LOCK = ".minitl.lock"  # held by the one process that writes the run (RunFolder.lock)
RUN_FILES = (RECORD, CHECKPOINT, BEST, OPTIMIZER, "curves.png", "evaluation.json", "evaluation.png")
EPOCH_FILES = (CHECKPOINT, OPTIMIZER, BEST)  # written by each epoch, named in the record by digest
DEFAULT_LR = {"sgd": 0.01, "adam": 0.003}
SCHEDULES = ("none", "step", "cosine", "onecycle")
AUGMENT_LEVELS = ("none", "light", "standard")  # minitl.data.AUGMENTATIONS
ARCHS = ("vgg16", "vgg19", "resnet50", "inception_v3", "mobilenet_v2")  # the keys of minitl.applications.BACKBONES


# ---- settings -----------------------------------------------------------------
MAX_IMAGE_SIDE = 2048  # VGG16's first activations of one 2048x2048 image take 1 GiB
MAX_WIDTH = 4.0  # VGG16 four times as wide has 16 times its 138 million weights
MAX_UNITS = 1 << 16  # hidden units of one head layer


class Bounded:
    """An option's type: a finite number of ``kind`` (int or float) from ``low`` to ``high``;
    ``ends`` tells whether each end is included: "[]", "(]", "[)" or "()"."""

    def __init__(self, kind, low=None, high=None, ends="[]"):
        self.kind, self.low, self.high, self.ends = kind, low, high, ends

    def __call__(self, text):
        try:
            value = self.kind(text)
        except (TypeError, ValueError, OverflowError):
            value = None
        if value is None or not math.isfinite(value) or not self.holds(value):
            raise argparse.ArgumentTypeError(f"expected {self}, got {text!r}")
        return value

    def holds(self, value):
        low_ok = self.low is None or value > self.low or (self.ends[0] == "[" and value == self.low)
        high_ok = self.high is None or value < self.high or (self.ends[1] == "]" and value == self.high)
        return low_ok and high_ok

    def __str__(self):
        what = "a whole number" if self.kind is int else "a number"
        if self.high is None:
            return f"{what} {'of at least' if self.ends[0] == '[' else 'above'} {self.low}"
        return f"{what} in {self.ends[0]}{self.low}, {self.high}{self.ends[1]}"


positive_int = Bounded(int, 1)
positive = Bounded(float, 0, ends="(]")
fraction = Bounded(float, 0, 1, "[)")  # dropout, validation split
width_multiplier = Bounded(float, 0, MAX_WIDTH, "(]")


def parse_image_size(text):
    """'N' or 'HxW' (or 'H,W') as (H, W), each side from 1 to MAX_IMAGE_SIDE (an option's type)."""
    try:
        parts = [int(p) for p in str(text).lower().replace("x", ",").split(",") if p]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) < 1 or max(parts) > MAX_IMAGE_SIDE:
        raise argparse.ArgumentTypeError(f"image size must be N or HxW, whole numbers from 1 to {MAX_IMAGE_SIDE}, "
                                         f"got {text!r}")
    return tuple(parts)


# what a record written before these settings existed trained with
EARLIER_TRAINING = {"freeze_epochs": 0, "train_bn": False, "schedule": "none", "warmup_epochs": 0.0}


def setting(default, help=None, **option):
    """A field of `Settings`; ``help`` and ``option`` (argparse's type, choices, ...) make its
    ``minitl finetune`` option. ``cli_default`` is the option's default where it differs."""
    return field(default=default, metadata={"help": help, **option})


@dataclass
class Settings:
    """Everything a fine-tuning run is made with: the head, the optimizer and the schedule.

    The ``minitl finetune`` options are made from these fields (one option per field with
    a help text), ``record.json`` stores them (``model`` and ``training``), and
    `Settings.from_record` reads them back for ``--resume``.
    """

    epochs: int = setting(10, "epochs with the blocks unfrozen, after --freeze-epochs (10; with --resume, the "
                              "run's own)", type=positive_int,
                          cli_default=None)
    batch_size: int = setting(32, "images per batch (32)", type=positive_int)
    optimizer: str = setting("adam", "adam (decoupled weight decay) or sgd (with momentum)", choices=("adam", "sgd"))
    lr: float = setting(None, "learning rate of the new head (0.003 for adam, 0.01 for sgd); minitl lr-find "
                              "suggests one", type=positive)
    lr_mult: float = setting(10.0, "spread the rates of the unfrozen blocks geometrically from lr at the head "
                                   "down to lr/M at the first unfrozen block (10)", type=Bounded(float, 1))
    momentum: float = setting(0.9, "SGD momentum, from 0 to below 1 (0.9; onecycle moves it from 0.95 to 0.85 "
                                   "and back)", type=fraction)
    weight_decay: float = setting(0.0, "weight decay (0): L2 for sgd, decoupled (AdamW) for adam",
                                  type=Bounded(float, 0))
    clip_norm: float = setting(None, "clip the global gradient norm to this value", type=positive)
    unfreeze_blocks: int = setting(2, "train the last K named blocks of the backbone too (2; 0: base frozen; "
                                      "VGG 5, ResNet50 5, MobileNetV2 9, InceptionV3 12 blocks)",
                                   type=Bounded(int, 0))
    freeze_epochs: int = setting(10, "first train the head alone on the frozen base for N epochs (features "
                                     "cached), then unfreeze --unfreeze-blocks and train --epochs more (10; "
                                     "unused with --unfreeze-blocks 0)",
                                 type=Bounded(int, 0))
    train_bn: bool = setting(False, "keep the BatchNormalization layers of frozen blocks training (scale, offset "
                                    "and statistics; disables the feature cache)", action="store_true")
    image_size: tuple = setting(None, f"input size N or HxW, up to {MAX_IMAGE_SIDE} (224)", type=parse_image_size,
                                cli_default=(224, 224))
    width: float = setting(1.0, f"the backbone's width multiplier, MobileNetV2's alpha, up to {MAX_WIDTH:g} "
                                "(1.0 for the real one)", type=width_multiplier)
    hidden: tuple = setting((1024, 512), f"hidden units of the head, up to {MAX_UNITS} a layer",
                            type=Bounded(int, 1, MAX_UNITS), nargs="*", cli_default=[1024, 512])
    dropout: float = setting(0.0, "dropout after each hidden head layer, from 0 to below 1", type=fraction)
    pooling: str = setting("flatten", "flatten block5_pool or average it globally", choices=["flatten", "avg"])
    augment: str = setting("none", "augment the training images while blocks train: light (random crops and "
                                   "flips; --augment alone), standard (random resized crops, flips, rotations, "
                                   "brightness, contrast) or none; a frozen phase before them trains on cached "
                                   "features of the centre crops", choices=AUGMENT_LEVELS, nargs="?", const="light")
    label_smoothing: float = setting(0.0, "targets (1 − ε)·onehot + ε/K, from 0 to below 1 (0)", type=fraction)
    mixup: float = setting(0.0, "mix pairs of images and their targets, λ ~ Beta(α, α), while blocks train "
                                "(α; 0: off)", type=Bounded(float, 0))
    cutmix: float = setting(0.0, "paste a box of another image, area share 1 − λ, λ ~ Beta(α, α), while blocks "
                                 "train (α; 0: off)", type=Bounded(float, 0))
    class_weight: str = setting(None, "weigh each image's loss by its class: 'balanced' (n / (K · n_k)) or a JSON "
                                      "file {class: weight}")
    balanced_sampling: bool = setting(False, "draw the classes evenly in every epoch (with replacement)",
                                      action="store_true")
    schedule: str = setting("onecycle", "learning-rate schedule over each phase's batches (onecycle)",
                            choices=SCHEDULES)
    warmup_epochs: float = setting(0.0, "linear warm-up of the rate over this many epochs of each phase "
                                        "(onecycle: its rise, by default a quarter of the phase)",
                                   type=Bounded(float, 0))
    patience: int = setting(None, "stop when val loss has not improved for this many epochs", type=positive_int)
    seed: int = setting(0, "random seed, from 0 to 2**32 - 1 (0)", type=Bounded(int, 0, 2**32 - 1))
    arch: str = setting("vgg16", "the pretrained backbone (minitl models compares them)", choices=ARCHS)

    TRAINING = ("epochs", "batch_size", "optimizer", "lr", "lr_mult", "momentum", "weight_decay", "unfreeze_blocks",
                "freeze_epochs", "train_bn", "schedule", "warmup_epochs", "patience", "augment", "clip_norm",
                "label_smoothing", "mixup", "cutmix", "class_weight", "balanced_sampling")

    def __post_init__(self):
        self.augment = {True: "light", False: "none", None: "none"}.get(self.augment, self.augment)  # earlier records
        self.hidden = tuple(self.hidden)
        self.image_size = tuple(self.image_size) if self.image_size is not None else None

    def head_lr(self):
        """``lr``, or the optimizer's default rate when it is None."""
        if self.lr is not None:
            return self.lr
        if self.optimizer not in DEFAULT_LR:
            raise ValueError(f"unknown optimizer {self.optimizer!r}: use sgd or adam")
        return DEFAULT_LR[self.optimizer]

    def phases(self):
        """[(first epoch, end epoch, unfrozen blocks)]: the frozen phase of ``freeze_epochs``
        when blocks are unfrozen after it, then ``epochs`` with ``unfreeze_blocks`` trainable."""
        if self.unfreeze_blocks and self.freeze_epochs:
            end = self.freeze_epochs + self.epochs
            return [(0, self.freeze_epochs, 0), (self.freeze_epochs, end, self.unfreeze_blocks)]
        return [(0, self.epochs, self.unfreeze_blocks)]

    def total_epochs(self):
        return self.phases()[-1][1]

    def training(self):
        """The record's 'training' entry."""
        return {name: self.head_lr() if name == "lr" else getattr(self, name) for name in self.TRAINING}

    def model_config(self, num_classes, image_size):
        """The record's 'model' entry, from which `minitl.transfer.build_model` builds the model."""
        return {"arch": self.arch, "input_shape": [*image_size, 3], "width": self.width,
                "num_classes": num_classes, "hidden": list(self.hidden), "dropout": self.dropout,
                "pooling": self.pooling}

    @classmethod
    def from_record(cls, record, epochs=None):
        """The settings of a recorded run, to resume it: everything as recorded but ``epochs``
        (when given), and never fewer epochs than the run has done."""
        model, training = record["model"], record.get("training") or {}
        values = {**EARLIER_TRAINING, **{name: training[name] for name in cls.TRAINING if name in training}}
        if training.get("base_lr"):  # --base-lr B of earlier versions: the first unfrozen block at B
            values["lr_mult"] = training["lr"] / training["base_lr"]
        values.update({k: model[k] for k in ("arch", "width", "hidden", "dropout", "pooling") if k in model})
        values.update(seed=record["seed"], image_size=record["image_size"])
        first = values["freeze_epochs"] if values.get("unfreeze_blocks") else 0
        values["epochs"] = max(epochs or training.get("epochs", 1), record["epoch"] - first)
        return cls(**values)

    @classmethod
    def options(cls):
        """(field name, argparse keyword arguments) for each field that is a command-line option."""
        out = []
        for f in fields(cls):
            if f.metadata.get("help"):
                kwargs = dict(f.metadata)
                kwargs["default"] = kwargs.pop("cli_default", f.default)
                out.append((f.name, kwargs))
        return out

    @classmethod
    def from_options(cls, namespace):
        """Settings from parsed options; an option left out (None) takes the field's default."""
        given = {name: getattr(namespace, name) for name, _ in cls.options()}
        return cls(**{k: v for k, v in given.items() if v is not None})


# ---- the record ---------------------------------------------------------------
def new_record(classes, image_size, model, seed, preprocessing="caffe", **entries):
    """A run's record before its first epoch: the data, its preprocess_input mode ('caffe' or
    'tf', the backbone's), the model's settings, the seed, then ``entries`` (weights,
    training, ...); `minitl.train.fit` adds the epochs."""
    return {"classes": list(classes), "image_size": list(image_size), "preprocessing": preprocessing,
            "model": model, "seed": seed, **entries, "epoch": 0, "history": []}


RECORD_ENTRIES = {"classes": list, "image_size": list, "model": dict}  # what every reader of a run uses
RESUME_ENTRIES = {**RECORD_ENTRIES, "seed": int, "epoch": int, "history": list}  # what --resume uses too


def read_record(run_dir, needs=RECORD_ENTRIES):
    """A run's record.json, checked to hold the entries ``needs`` ({name: type}); a
    TrainingError naming the file if it does not."""
    path = Path(run_dir) / RECORD
    if not path.is_file():
        raise TrainingError(f"{run_dir} is not a minitl run directory (no {RECORD})")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise TrainingError(f"{path}: not a readable run record ({e})") from e
    wrong = [name for name, kind in needs.items() if not isinstance(record.get(name), kind)] \
        if isinstance(record, dict) else list(needs)
    if wrong:
        raise TrainingError(f"{path}: not a run record of minitl: {', '.join(wrong)} missing or of the wrong type")
    return record


def check_resume(run_dir, record, classes, image_size):
    """TrainingError unless the data to resume with has the recorded classes and image size."""
    recorded, size = record["classes"], record["image_size"]
    if list(classes) != recorded or list(image_size) != size:
        raise TrainingError(f"cannot resume {run_dir}: it was trained on classes {', '.join(recorded)} at "
                            f"{size[0]}x{size[1]}, the data given has classes {', '.join(classes)} at "
                            f"{image_size[0]}x{image_size[1]}")


# ---- optimizer state ----------------------------------------------------------
def save_optimizer(path, optimizer):
    """The optimizer's state in HDF5: settings as JSON attributes; each kind of buffer
    (momentum, Adam's m, v and step) as one dataset ``buffers/<name>/values``, the buffers of
    the parameters listed in ``buffers/<name>/params`` flattened one after the other (a few
    datasets per file instead of one per parameter and buffer: an epoch's commit stays fast)."""
    state = optimizer.state_dict()
    by_name = {}
    for i, buffers in state["state"].items():
        for name, v in buffers.items():
            by_name.setdefault(name, []).append((int(i), np.asarray(v)))

    def fill(f):
        f.attrs["optimizer"] = state["optimizer"]
        f.attrs["param_groups"] = json.dumps(state["param_groups"])
        for name, items in by_name.items():
            f.create_dataset(f"buffers/{name}/params", data=np.array([i for i, _ in items], np.int64))
            f.create_dataset(f"buffers/{name}/values", data=np.concatenate([v.ravel() for _, v in items]))
    write_h5(path, fill)


def _read_buffers(f, params):
    """{parameter position: {name: array}} from save_optimizer's datasets (or, in files of
    earlier versions, from one dataset per parameter and buffer, state/<i>/<name>)."""
    if "state" in f:
        return {i: {name: d[()] for name, d in g.items()} for i, g in f["state"].items()}
    state = {}
    for name, group in f.get("buffers", {}).items():
        positions, values, start = group["params"][()], group["values"][()], 0
        for i in positions:
            if not 0 <= i < len(params):
                raise ValueError(f"buffers for parameter {i}, the optimizer has {len(params)}")
            shape = params[i].shape if values.dtype.kind == "f" else ()  # Adam's step count is one number
            size = int(np.prod(shape))
            if start + size > len(values):
                raise ValueError(f"{name}: {len(values)} numbers do not fill the parameters' shapes")
            state.setdefault(str(i), {})[name] = values[start:start + size].reshape(shape)
            start += size
        if start != len(values):
            raise ValueError(f"{name}: {len(values)} numbers, the parameters' shapes take {start}")
    return state


def load_optimizer(path, optimizer):
    try:
        with h5py.File(path, "r") as f:
            state = {"optimizer": f.attrs["optimizer"], "param_groups": json.loads(f.attrs["param_groups"]),
                     "state": _read_buffers(f, optimizer._params())}
        optimizer.load_state_dict(state)
    except (OSError, KeyError, ValueError) as e:
        raise TrainingError(f"{path}: cannot restore the optimizer: {e}") from e


# ---- the folder ---------------------------------------------------------------
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP (``signum``), handled as Ctrl-C is: a run stops at a safe point and
    keeps its last epoch; ``args`` ends with "committed" when it was raised after an epoch's commit."""

    def __init__(self, signum, *args):
        super().__init__(signum, *args)
        self.signum = signum


def signal_name(signum):
    return signal.Signals(signum).name


class StopOnSignals:
    """Inside a ``with`` block, SIGTERM (kill, timeout, docker stop, batch schedulers) and
    SIGHUP (the terminal went away) raise `Stopped`, as Ctrl-C raises KeyboardInterrupt.
    A signal that is ignored (nohup) stays ignored; outside the main thread it does nothing."""

    def __enter__(self):
        self._previous = {}
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS[1:]:
                if signal.getsignal(signum) == signal.SIG_DFL:
                    self._previous[signum] = signal.signal(signum, self._stop)
        return self

    @staticmethod
    def _stop(signum, frame):
        raise Stopped(signum)

    def __exit__(self, *exc):
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        return False


class HeldInterrupt:
    """Hold Ctrl-C (SIGINT), and SIGTERM and SIGHUP where `StopOnSignals` handles them, inside
    a ``with`` block; ``caught`` is the signal that came (0: none).

    A group of files written together (checkpoint, optimizer state, record) is then never
    left half old, half new. Outside the main thread, or for a signal that is ignored or left
    to the system's default action, it does nothing.
    """

    def __enter__(self):
        self.caught, self._previous = 0, {}
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                if callable(signal.getsignal(signum)):
                    self._previous[signum] = signal.signal(signum, self._hold)
        return self

    def _hold(self, signum, frame):
        self.caught = self.caught or signum

    def __exit__(self, *exc):
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        return False


_HELD_LOCKS = {}  # the real path of each run folder this process writes: [lock file descriptor, holders]


def _lock_holder(fd):
    """What a lock file says of its writer: {'pid', 'host', 'command', 'started'}, or {}."""
    try:
        holder = json.loads(os.pread(fd, 1 << 16, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _describe(holder):
    if not holder:
        return "another process (it has not written its name yet)"
    return (f"{holder.get('command', 'a minitl command')!s} (PID {holder.get('pid')} on {holder.get('host')}, "
            f"since {holder.get('started')})")


def _program():
    """How this process was started: 'python -m minitl', 'minitl', 'pytest', ..."""
    path = Path(sys.argv[0])
    return f"python -m {path.parent.name}" if path.name == "__main__.py" else path.name


def _take_lock(path, option, log):
    """The descriptor of ``path`` (a run folder's LOCK), locked for this process, with its name written in."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _lock_holder(fd)
            os.close(fd)
            wait = (f"wait until it ends (tail --pid={holder['pid']} -f /dev/null)"
                    if holder.get("host") == socket.gethostname() else "wait until it ends")
            raise TrainingError(f"{path.parent} is being written by {_describe(holder)}: one run folder takes one "
                                f"writer at a time; {wait}, or choose another {option}") from None
        except BaseException:
            os.close(fd)
            raise
        try:  # the file locked must still be the lock's: the last holder deletes it when it ends
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        left = _lock_holder(fd)
        if left:
            pid = left.get("pid")
            gone = left.get("host") == socket.gethostname() and isinstance(pid, int) and not process_running(pid)
            why = "is no longer running" if gone else "no longer holds it"
            log(f"note: taking over the lock of {path.parent} from {_describe(left)}, which {why}")
        me = {"pid": os.getpid(), "host": socket.gethostname(),
              "command": f"{_program()} {shlex.join(sys.argv[1:])}".strip(),
              "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
    except BaseException as e:
        os.close(fd)
        raise (disk_full_error(e, path) if isinstance(e, OSError) else None) or e
    return fd


class RunFolder:
    """A run directory and its record. With ``path=None`` the record is kept in memory only.

    An epoch's files change together, so that a kill at any instant leaves a run that
    resumes exactly: `commit_epoch` writes them under staged names, then record.json
    with their sha256 digests (the commit), then renames them into place; `settle`
    finishes those renames after a kill and drops what an uncommitted epoch left.
    """

    def __init__(self, path, record=None):
        self.path = Path(path) if path is not None else None
        self.record = record if record is not None else {}
        self._locked = False

    def lock(self, log=print, option="--out"):
        """Make this process the folder's one writer until `unlock` (or its end), creating the
        folder if needed: an OS lock
        (flock) on .minitl.lock, which holds the writer's PID, host and command. TrainingError
        naming the holder when another process holds it; a lock file that a dead process left
        is taken over with a note. Within one process the lock can be taken again (nested)."""
        if self.path is None or self._locked:
            return
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            key = os.path.realpath(self.path)
            if key not in _HELD_LOCKS:
                _HELD_LOCKS[key] = [_take_lock(self.path / LOCK, option, log), 0]
        except OSError as e:
            raise access_error(e, self.path, f"; choose another {option} (a run can still be evaluated, "
                                             f"predicted with and exported from a read-only folder)") or e
        _HELD_LOCKS[key][1] += 1
        self._locked = True

    def unlock(self):
        """Give up the lock of `lock`; the last holder in this process deletes .minitl.lock."""
        if not self._locked:
            return
        self._locked = False
        key = os.path.realpath(self.path)
        held = _HELD_LOCKS[key]
        held[1] -= 1
        if held[1] == 0:
            del _HELD_LOCKS[key]
            try:
                os.unlink(self.path / LOCK)  # while still held, so no other process locks the old file
            except OSError:
                pass
            os.close(held[0])

    def __str__(self):
        return str(self.path)

    def has(self, name):
        """Whether the folder holds the file ``name`` (CHECKPOINT, OPTIMIZER, ...)."""
        return self.path is not None and (self.path / name).is_file()

    def staged(self, name):
        """Where ``commit_epoch`` writes ``name`` before the record names it."""
        return self.path / f".{name}.staged"

    def write_record(self, status):
        self.record["status"] = status
        if self.path is not None:
            write_json(self.path / RECORD, self.record)

    def commit_epoch(self, model, optimizer, row, improved, **entries):
        """Record the epoch of ``row`` (the last row of the record's history) and ``entries``,
        and write the epoch's files together: checkpoint.h5, optimizer.h5 and best.h5 (when ``improved``) under staged
        names, record.json naming them by digest, then the renames. Ctrl-C (or SIGTERM, SIGHUP)
        meanwhile waits until all are written; returns the signal that came, else 0."""
        with HeldInterrupt() as held:
            before = dict(self.record)
            self.record["epoch"] = row["epoch"]
            self.record.update(entries)
            staged = {}
            try:
                if self.path is not None:
                    staged = {CHECKPOINT: self.staged(CHECKPOINT), OPTIMIZER: self.staged(OPTIMIZER)}
                    if improved:
                        staged[BEST] = self.staged(BEST)
                    save_weights(model, staged[CHECKPOINT])
                    save_optimizer(staged[OPTIMIZER], optimizer)
                    if improved:
                        save_weights(model, staged[BEST])
                    digests = {name: file_digest(path) for name, path in staged.items()}
                    self.record["files"] = {**self.record.get("files", {}), **digests}
                self.write_record("running")
            except BaseException:  # not committed (a full disk): the record and the folder stay as they were
                self.record.clear()
                self.record.update(before)
                for path in staged.values():
                    if path.exists():
                        path.unlink()
                raise
            for name, path in staged.items():
                os.replace(path, self.path / name)
        return held.caught

    def committed(self, name):
        """The file that holds the record's ``name`` (CHECKPOINT or BEST), found without
        changing the folder: ``name`` itself or, after a kill between the commit and its
        renames (or while a training run renames), the staged copy that the record names by
        its digest. TrainingError when neither is that file."""
        final = self.path / name
        digest = self.record.get("files", {}).get(name)
        if digest is None:  # a record written before digests, or no such file yet
            return final
        for path in (final, self.staged(name), final):  # the last look: renamed meanwhile
            if path.is_file() and file_digest(path) == digest:
                return path
        problem = "differs from" if final.is_file() else "is missing, unlike"
        raise TrainingError(f"{final} {problem} the file of epoch {self.record['epoch']} that {RECORD} names by "
                            f"its sha256: the run folder was changed outside minitl")

    def settle(self):
        """Make the folder what its record says after a kill: rename the staged files the
        record names into place, delete other staged files and stale temporary files, and
        check each epoch file against its recorded digest (TrainingError if it differs)."""
        remove_stale_temporaries(self.path)
        digests = self.record.get("files", {})  # a record written before digests has none
        for name in EPOCH_FILES:
            staged, final = self.staged(name), self.path / name
            if staged.is_file() and name in digests and file_digest(staged) == digests[name]:
                os.replace(staged, final)
            elif staged.exists():
                staged.unlink()
            if name in digests and not (final.is_file() and file_digest(final) == digests[name]):
                problem = "differs from" if final.is_file() else "is missing, unlike"
                raise TrainingError(f"{final} {problem} the file of epoch {self.record['epoch']} that {RECORD} "
                                    f"names by its sha256: the run folder was changed outside minitl")

    def clear(self, log=print):
        """Delete a previous run's outputs (the record first), so that a new run never mixes
        with them, and what a killed run left (staged and temporary files). features.h5
        stays: its key tells whether it fits the new run."""
        old = [self.path / name for name in RUN_FILES if self.has(name)]
        if old:
            log(f"replacing the previous run in {self.path}")
        for path in old + [self.staged(name) for name in EPOCH_FILES if self.staged(name).exists()]:
            path.unlink()
        remove_stale_temporaries(self.path)


# ---- the feature cache --------------------------------------------------------
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
            h.update(np.ascontiguousarray(getattr(dataset, k)).tobytes())
    return h.digest()


def features_key(base, loaders):
    """sha256 of the base's weights (moving statistics included) and of each dataset: features.h5 is
    reused only when it matches."""
    h = hashlib.sha256()
    for p in [*base.parameters(), *base.buffers()]:
        a = np.ascontiguousarray(to_numpy(p.data))
        h.update(f"{a.shape}{a.dtype.str}".encode())
        h.update(a.tobytes())
    for name in sorted(loaders):
        h.update(name.encode())
        h.update(_dataset_key(loaders[name].dataset))
    return h.hexdigest()


def array_digest(a):
    """sha256 of an array's shape, dtype and bytes."""
    a = np.ascontiguousarray(a)
    return hashlib.sha256(f"{a.shape}{a.dtype.str}".encode() + a.tobytes()).hexdigest()


def read_features(path, key, names):
    """{name: (features, labels)} from features.h5 when it has ``key`` and every name, else None.
    Each array is checked against the sha256 written with it: a file that differs from what was
    written (or cannot be read) is warned about once and not used."""
    if not Path(path).is_file():
        return None
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("key") != key or not all(name in f for name in names):
                return None
            found = {}
            for name in names:
                arrays = [f[name][part] for part in ("features", "labels")]
                if any(d.attrs.get("sha256") != array_digest(d[()]) for d in arrays):
                    raise ValueError(f"{name}: its arrays differ from their sha256")
                found[name] = tuple(d[()] for d in arrays)
            return found
    except (OSError, KeyError, ValueError, TypeError) as e:
        warnings.warn(f"{path} is not the feature cache that was written ({e}): computing the features again")
        return None


def write_features(path, key, features):
    """features.h5: ``key`` as an attribute, then <name>/features and <name>/labels, each with
    its sha256 (`array_digest`) as an attribute."""
    def fill(f):
        f.attrs["key"] = key
        for name, (x, y) in features.items():
            g = f.create_group(name)
            for part, a in (("features", x), ("labels", y)):
                g.create_dataset(part, data=a).attrs["sha256"] = array_digest(a)
    write_h5(path, fill)
