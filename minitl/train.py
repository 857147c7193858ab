"""The training loop: `fit` with callbacks, evaluate, predict, and the learning-rate finder.

`fit` is the loop of the formulas, L(W) = 1/N Σ l(y_i, ŷ_i) and W ← W − η∇L, batch after
batch; everything else a run does (checkpoints, early stopping, schedules, divergence
checks, progress bars) is a `Callback` that `fit` calls at its events. Nothing here knows
about backbones or heads: it works on any `minitl.nn.Module` that returns logits, and any
`minitl.data.DataLoader`. The recipe that builds a transfer model and trains it is
`minitl.transfer.finetune`.
"""
import math
import signal
import time
import warnings

import numpy as np

from minitl import functional as F
from minitl.backend import get_array_module, to_device, to_numpy
from minitl.errors import TrainingError
from minitl.metrics import classification_report, most_confused
from minitl.nn import BatchNormalization, manual_seed
from minitl.runs import CHECKPOINT, RunFolder, Stopped, signal_name
from minitl.tensor import Tensor, no_grad

LOSS_GROWTH = 100  # warn when an epoch's training loss is this many times the run's first (or above 100)


# ---- forward passes -----------------------------------------------------------
def predict_on_batch(model, x, device="cpu"):
    """The model's output for one batch of arrays, as a NumPy array, in eval mode and without a graph."""
    model.eval()
    with no_grad():
        return to_numpy(model(Tensor(to_device(x, device))).data)


def predict(model, loader, device="cpu", progress=False, desc="predict"):
    """(outputs, labels) as NumPy arrays over every batch of ``loader``, in order."""
    from tqdm import tqdm
    outs, labels = [], []
    for x, y in tqdm(loader.batches(0), total=len(loader), desc=desc, disable=not progress, leave=False):
        outs.append(predict_on_batch(model, x, device))
        labels.append(y)
    return np.concatenate(outs), np.concatenate(labels)


def tta_views(x):
    """The views that test-time augmentation averages over, for a batch (N, H, W, C): the image,
    its mirror image, and the image shifted by s = max(1, round(H/16)) pixels towards each of
    its four corners (crops of the image with its edge pixels repeated s times): 6 views."""
    h, w = x.shape[1:3]
    s = max(1, round(h / 16))
    padded = np.pad(x, ((0, 0), (s, s), (s, s), (0, 0)), mode="edge")
    corners = [padded[:, dy:dy + h, dx:dx + w] for dy in (0, 2 * s) for dx in (0, 2 * s)]
    return [x, x[:, :, ::-1], *corners]


def predict_proba(model, loader, device="cpu", tta=False, progress=False):
    """(probabilities (N, K) in float64, labels) over every batch of ``loader``, in order;
    with ``tta``, each image's probabilities averaged over its `tta_views` (6 forward passes)."""
    from tqdm import tqdm
    probs, labels = [], []
    for x, y in tqdm(loader.batches(0), total=len(loader), desc="predict", disable=not progress, leave=False):
        views = tta_views(x) if tta else [x]
        probs.append(np.mean([_softmax(predict_on_batch(model, np.ascontiguousarray(v), device)) for v in views],
                             axis=0))
        labels.append(y)
    return np.concatenate(probs), np.concatenate(labels)


def _softmax(logits):
    z = logits.astype(np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def image_losses(probs, labels):
    """Each image's cross-entropy, −log p(true class)."""
    return -np.log(np.maximum(probs[np.arange(len(labels)), labels], np.finfo(np.float64).tiny))


def evaluate(model, loader, class_names, device="cpu", tta=False):
    """Loss, accuracy, per-class precision/recall/F1, macro averages, the confusion matrix and
    its most confused pairs of classes; ``tta``: on probabilities averaged over `tta_views`."""
    probs, labels = predict_proba(model, loader, device, tta)
    return report_from_probabilities(probs, labels, class_names, tta)


def report_from_probabilities(probs, labels, class_names, tta=False):
    """`evaluate`'s report from the predicted probabilities (N, K) and the true labels."""
    report = classification_report(labels, probs.argmax(axis=1), class_names)
    report.update(loss=float(image_losses(probs, labels).mean()), tta=bool(tta),
                  most_confused=most_confused(report["confusion_matrix"], class_names))
    return report


def update_batchnorm_statistics(model, loader, device="cpu"):
    """Set each trainable BatchNormalization's moving mean and variance to its batch
    statistics averaged over every image of ``loader`` (one pass, no gradient), as PyTorch's
    ``torch.optim.swa_utils.update_bn``; returns the number of layers updated.

    The moving averages of a short training run still remember their initial 0 and 1
    (0.999ᵗ after t steps at momentum 0.999); this gives the statistics of the final
    weights. Batch b of n_b images, after s images: moving ← moving · s/(s + n_b) + batch · n_b/(s + n_b).
    """
    layers = [m for m in model.modules() if isinstance(m, BatchNormalization) and m.trainable and m.built]
    momenta = [m.momentum for m in layers]
    model.eval()
    for m in layers:
        m.training = True
    seen = 0
    try:
        with no_grad():
            for x, _ in loader.batches(0):
                for m in layers:
                    m.momentum = seen / (seen + len(x))
                model(Tensor(to_device(x, device)))
                seen += len(x)
    finally:
        for m, momentum in zip(layers, momenta):
            m.momentum, m.training = momentum, False
    return len(layers)


# ---- the loop -----------------------------------------------------------------
class Callback:
    """Code that `fit` runs at its events; a subclass overrides the events it needs. Each
    event gets the `Loop`, whose fields it may read and change:

    before_fit, before_epoch, before_batch (``loop.x``, ``loop.y`` may be replaced before the
    forward pass), after_backward (the gradients are there, the optimizer has not stepped),
    after_batch, after_epoch (``loop.row``: the epoch's history row), after_fit (also when an
    exception ends the fit: ``loop.error``). ``loop.stop = True`` ends the fit after the
    epoch. Callbacks run in increasing ``order``.
    """
    order = 0


class Loop:
    """What `fit` works with, and what its callbacks see: the model, optimizer, loss and
    loaders; the epoch, the batch (``x``, ``y``, ``logits``, ``loss``) and the step (batches
    done in this fit); the epoch's row; ``record``, the run's record (``history``: the rows
    of the epochs done, also before a resume; ``epoch``: how many)."""

    def __init__(self, model, optimizer, train_loader, val_loader, epochs, callbacks, loss, device):
        self.model, self.optimizer, self.loss_fn, self.device = model, optimizer, loss, device
        self.train_loader, self.val_loader, self.epochs = train_loader, val_loader, epochs
        self.callbacks = sorted(callbacks, key=lambda cb: cb.order)
        self.record = {"epoch": 0, "history": []}
        self.epoch = self.batch = self.step = 0
        self.x = self.y = self.logits = self.loss = self.row = self.error = None
        self.first_loss, self.running, self.stop = None, {}, False

    def __call__(self, event):
        for cb in self.callbacks:
            getattr(cb, event, lambda loop: None)(self)

    @property
    def steps_per_epoch(self):
        return len(self.train_loader)


def fit(model, optimizer, train_loader, val_loader=None, epochs=10, callbacks=(), loss=F.softmax_cross_entropy,
        device="cpu"):
    """Train ``model`` from epoch ``loop.record['epoch']`` (0, or where a resumed run stopped)
    to ``epochs``, validating after each epoch; returns the `Loop`. ``loss(logits, y)`` is
    the mean loss of a batch (softmax cross-entropy by default); ``callbacks`` do the rest
    (`run_callbacks` gives those of a run folder)."""
    loop = Loop(model, optimizer, train_loader, val_loader, epochs, callbacks, loss, device)
    try:
        loop("before_fit")
        with np.errstate(over="ignore", invalid="ignore"):  # overflows are the callbacks' to check
            for epoch in range(loop.record["epoch"], epochs):
                loop.epoch = epoch
                loop("before_epoch")
                loop.row = {"epoch": loop.epoch + 1, **train_epoch(loop)}
                if val_loader is not None:
                    loop.row.update(validate(loop))
                loop.record["history"].append(loop.row)
                loop("after_epoch")
                if loop.stop:
                    break
    except BaseException as e:  # Ctrl-C or an error: the callbacks keep what is safe, then it goes on
        loop.error = e
        loop("after_fit")
        raise
    loop("after_fit")
    return loop


def train_epoch(loop):
    """One pass over the training batches: forward, L = loss(ŷ, y), backward, W ← W − η∇L;
    the epoch's mean loss, accuracy and speed."""
    loop.model.train()
    total, correct, seen, start, loop.first_loss = 0.0, 0, 0, time.perf_counter(), None
    for batch, (x, y) in enumerate(loop.train_loader.batches(loop.epoch)):
        loop.batch, loop.x, loop.y = batch, x, y
        loop("before_batch")
        loop.logits = loop.model(Tensor(to_device(loop.x, loop.device)))
        loop.loss = loop.loss_fn(loop.logits, to_device(loop.y, loop.device))
        value = float(loop.loss.item())
        loop.first_loss = value if loop.first_loss is None else loop.first_loss
        loop.optimizer.zero_grad()
        loop.loss.backward()
        loop("after_backward")
        loop.optimizer.step()
        labels = loop.y if np.ndim(loop.y) == 1 else np.argmax(loop.y, axis=1)  # soft targets: their top class
        total, seen = total + value * len(labels), seen + len(labels)
        correct += int((to_numpy(loop.logits.data).argmax(axis=1) == labels).sum())
        loop.running = {"loss": total / seen, "accuracy": correct / seen}
        loop.step += 1
        loop("after_batch")
    seconds = time.perf_counter() - start
    return {"loss": total / max(seen, 1), "accuracy": correct / max(seen, 1), "seconds": seconds,
            "images_per_s": seen / max(seconds, 1e-9)}


def validate(loop):
    """The validation loss (the training loss function) and accuracy, in eval mode."""
    logits, labels = predict(loop.model, loop.val_loader, loop.device)
    return {"val_loss": float(loop.loss_fn(Tensor(logits), labels).item()),
            "val_accuracy": float((logits.argmax(axis=1) == labels).mean())}


# ---- the callbacks of a run ---------------------------------------------------
class SeedEpochs(Callback):
    """Seed minitl's random draws (dropout masks) from the run's seed and the epoch, so that a
    resumed epoch draws what it would have drawn."""
    order = -20

    def __init__(self, seed):
        self.seed = seed

    def before_epoch(self, loop):
        manual_seed(self.seed * 1_000_003 + loop.epoch)


class ScheduleLR(Callback):
    """Set the learning rates (and momentum) of every batch from a `minitl.optim.Schedule`
    over the steps of this phase: epochs ``first_epoch`` to ``loop.epochs``."""
    order = -10

    def __init__(self, schedule, first_epoch=0):
        self.schedule, self.first_epoch = schedule, first_epoch

    def before_batch(self, loop):
        total = (loop.epochs - self.first_epoch) * loop.steps_per_epoch
        self.schedule.apply(loop.optimizer, (loop.epoch - self.first_epoch) * loop.steps_per_epoch + loop.batch, total)


class FiniteLoss(Callback):
    """Stop with a TrainingError at a NaN or infinite loss, before the optimizer uses it."""

    def after_backward(self, loop):
        value = float(loop.loss.item())
        if not math.isfinite(value):
            raise _loss_error(value, loop.x, loop.epoch, loop.batch)


def _loss_error(value, x, epoch, batch):
    """The TrainingError for a NaN or infinite loss, with its likely cause."""
    where = f"the loss became {value} at epoch {epoch + 1}, batch {batch + 1}"
    if not np.isfinite(x).all():
        return TrainingError(f"{where}: the batch's inputs hold NaN or infinite values")
    if epoch == 0 and batch == 0:
        return TrainingError(f"{where}, before any update: the starting weights give it")
    return TrainingError(f"{where}. Try a lower learning rate (--lr) or --clip-norm")


def check_finite(model, row):
    """TrainingError unless the model's weights and the epoch's validation loss are finite,
    so that only finite checkpoints are written."""
    bad = [layer.name for layer in model.layers()
           if any(not get_array_module(w.data).isfinite(w.data).all() for w in layer.weights)]
    if bad:
        raise TrainingError(f"weights of {', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''} became NaN or "
                            f"infinite in epoch {row['epoch']}. Try a lower learning rate (--lr) or --clip-norm")
    if not math.isfinite(row.get("val_loss", 0.0)):
        raise TrainingError(f"the validation loss became {row['val_loss']} at epoch {row['epoch']} with finite "
                            f"weights: the validation inputs hold NaN or infinite values, or the weights grew too "
                            f"large (try a lower learning rate, --lr)")


class Divergence(Callback):
    """After each epoch: a TrainingError when the weights (of ``model``, by default the
    trained one) or the validation loss are not finite; a warning, once, when the epoch's
    loss is over LOSS_GROWTH times the run's first batch loss (or over LOSS_GROWTH when
    that was below 1): a diverging run, though finite."""
    order = 10

    def __init__(self, model=None):
        self.model, self.warned = model, False

    def after_epoch(self, loop):
        check_finite(self.model or loop.model, loop.row)
        first = loop.record.setdefault("first_loss", loop.first_loss)
        if not self.warned and first is not None and loop.row["loss"] > LOSS_GROWTH * max(first, 1.0):
            self.warned = True
            warnings.warn(f"the training loss of epoch {loop.row['epoch']} is {loop.row['loss']:.3g}, over "
                          f"{LOSS_GROWTH} times the first batch's {first:.3g}: training is diverging; try a lower "
                          f"learning rate (--lr)", stacklevel=2)


class EarlyStopping(Callback):
    """Stop once ``patience`` epochs (of the whole run, resumed or not) have gone by without a
    lower validation loss."""
    order = 20

    def __init__(self, patience, log=print):
        self.patience, self.log = patience, log

    def after_epoch(self, loop):
        losses = [row["val_loss"] for row in loop.record["history"] if "val_loss" in row]
        if losses and len(losses) - 1 - int(np.argmin(losses)) >= self.patience:
            loop.stop = True
            self.log(f"early stopping: no improvement of the validation loss for {self.patience} epochs")


class MixBatches(Callback):
    """Mixup and CutMix: before each batch, every image is mixed with another of the batch
    (π, a random permutation) in the proportion λ ~ Beta(α, α), and so are the targets:

        mixup:   x ← λ x + (1 − λ) x[π]
        cutmix:  x ← x with a box of x[π] pasted in (sides H√(1 − λ), W√(1 − λ), centre drawn
                 uniformly, clipped to the image); λ becomes the share of x left uncovered
        both:    t ← λ onehot(y) + (1 − λ) onehot(y[π])

    With both α given, each batch is one or the other, with probability 1/2. The draws come
    from numpy.random.default_rng([seed, epoch, batch]), so a resumed run mixes the same.
    The soft targets go to the loss; training accuracy counts the class with the larger share.
    """
    order = -5

    def __init__(self, num_classes, mixup=0.0, cutmix=0.0, seed=0):
        if mixup < 0 or cutmix < 0 or not mixup + cutmix > 0:
            raise ValueError(f"mixup and cutmix take α ≥ 0, at least one above 0; got {mixup} and {cutmix}")
        self.num_classes, self.mixup, self.cutmix, self.seed = num_classes, mixup, cutmix, seed

    def before_batch(self, loop):
        rng = np.random.default_rng([self.seed, loop.epoch, loop.batch])
        use_cutmix = self.cutmix > 0 and (self.mixup == 0 or rng.random() < 0.5)
        alpha = self.cutmix if use_cutmix else self.mixup
        lam, perm = rng.beta(alpha, alpha), rng.permutation(len(loop.x))
        x = np.asarray(loop.x)
        if use_cutmix:
            x, lam = paste_box(x, perm, lam, rng)
        else:
            x = (lam * x + (1 - lam) * x[perm]).astype(x.dtype, copy=False)
        y = np.asarray(loop.y)
        t = np.eye(self.num_classes, dtype=np.float32)[y] if y.ndim == 1 else y
        loop.x, loop.y = x, (lam * t + (1 - lam) * t[perm]).astype(np.float32)


def paste_box(x, perm, lam, rng):
    """CutMix's images (N, H, W, C): a box of x[perm] pasted into x, and the share λ of each image
    left uncovered."""
    h, w = x.shape[1:3]
    cut_h, cut_w = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
    cy, cx = rng.integers(h), rng.integers(w)
    top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h - cut_h // 2, h)
    left, right = max(cx - cut_w // 2, 0), min(cx + cut_w - cut_w // 2, w)
    x = x.copy()
    x[:, top:bottom, left:right] = x[perm, top:bottom, left:right]
    return x, 1 - (bottom - top) * (right - left) / (h * w)


class RunCheckpoint(Callback):
    """The run folder's side of a fit (see `minitl.runs.RunFolder`): continue from its record,
    commit every epoch (checkpoint.h5 of ``save_model``, the whole model when the loop trains
    only its head; optimizer.h5; best.h5 at a lower validation loss), and at the end write
    the record's status: 'finished' (after the ``last`` phase), 'interrupted' (Ctrl-C: the
    last committed epoch is kept, the KeyboardInterrupt goes on) or 'diverged' (a
    TrainingError, which goes on naming the checkpoint that is kept)."""
    order = 30

    def __init__(self, run, save_model=None, last=True, log=print):
        self.run, self.save_model, self.last, self.log = run, save_model, last, log

    def before_fit(self, loop):
        self.run.record.setdefault("history", [])
        self.run.record.setdefault("epoch", 0)
        loop.record = self.run.record

    def after_epoch(self, loop):
        row, record = loop.row, self.run.record
        best = record.get("best_val_loss")  # null in the record until a validation loss is seen
        improved = "val_loss" in row and (best is None or row["val_loss"] < best)
        if improved:
            record["best_val_loss"] = row["val_loss"]
        signum = self.run.commit_epoch(self.save_model or loop.model, loop.optimizer, row, improved)
        if signum:
            self._interrupted(f"after epoch {row['epoch']}", signum)

    def after_fit(self, loop):
        record = self.run.record
        del record["history"][record["epoch"]:]  # an epoch that did not commit
        if isinstance(loop.error, KeyboardInterrupt):
            if "committed" not in loop.error.args:
                self._interrupted(f"during epoch {loop.epoch + 1}", getattr(loop.error, "signum", signal.SIGINT))
        elif isinstance(loop.error, TrainingError):
            self.run.write_record("diverged")
            kept = f"the checkpoint of epoch {record['epoch']} is kept in {self.run.path / CHECKPOINT}" \
                if self.run.has(CHECKPOINT) else "no checkpoint was written"
            raise TrainingError(f"{loop.error}; training stopped: {kept}") from None
        elif loop.error is None and self.last:
            self.run.write_record("finished")

    def _interrupted(self, when, signum):
        self.run.write_record("interrupted")
        how = "interrupted" if signum == signal.SIGINT else f"stopped by {signal_name(signum)}"
        self.log(f"{how} {when}; the checkpoint of epoch {self.run.record.get('epoch', 0)} is kept"
                 + (f" in {self.run}; continue with --resume" if self.run.path is not None else ""))
        raise KeyboardInterrupt("committed") if signum == signal.SIGINT else Stopped(signum, "committed")


class ProgressBar(Callback):
    """A tqdm bar per epoch: batches done, with the running loss, accuracy and images/s."""
    order = -30  # closed before the epoch's line is logged

    def before_epoch(self, loop):
        from tqdm import tqdm
        self.bar = tqdm(total=loop.steps_per_epoch, desc=f"epoch {loop.epoch + 1}/{loop.epochs}", leave=False,
                        unit="batch")
        self.start, self.seen = time.perf_counter(), 0

    def after_batch(self, loop):
        self.seen += len(loop.x)
        rate = self.seen / max(time.perf_counter() - self.start, 1e-9)
        # the count and the running loss shown together, once the batch is done
        self.bar.set_postfix(loss=f"{loop.running['loss']:.4f}", acc=f"{loop.running['accuracy']:.3f}",
                             img_s=f"{rate:.0f}", refresh=False)
        self.bar.update()

    def after_epoch(self, loop):
        self.bar.close()

    def after_fit(self, loop):
        if loop.error is not None and hasattr(self, "bar"):
            self.bar.close()


class EpochLog(Callback):
    """One line per epoch: its loss and accuracy, on the validation data too, and images/s."""
    order = 0

    def __init__(self, log=print):
        self.log = log

    def after_epoch(self, loop):
        row = loop.row
        msg = f"epoch {row['epoch']}/{loop.epochs}: loss {row['loss']:.4f}, accuracy {row['accuracy']:.3f}"
        if "val_loss" in row:
            msg += f", val_loss {row['val_loss']:.4f}, val_accuracy {row['val_accuracy']:.3f}"
        self.log(msg + f" ({row['images_per_s']:.0f} images/s)")


def run_callbacks(run_dir=None, record=None, seed=0, patience=None, schedule=None, first_epoch=0, progress=True,
                  log=print, save_model=None, last=True):
    """The callbacks of a training run: seeded epochs, the schedule, the divergence checks,
    early stopping, the run folder's commits (``run_dir`` None: the record in memory), the
    progress bar and the epoch log."""
    callbacks = [SeedEpochs(seed), FiniteLoss(), Divergence(save_model), EpochLog(log),
                 RunCheckpoint(RunFolder(run_dir, record), save_model, last, log)]
    if schedule is not None:
        callbacks.append(ScheduleLR(schedule, first_epoch))
    if patience is not None:
        callbacks.append(EarlyStopping(patience, log))
    if progress:
        callbacks.append(ProgressBar())
    return callbacks


# ---- the learning-rate finder -------------------------------------------------
class LRSweep(Callback):
    """lr_find's callback: before batch t, every group's rate is its initial rate times
    (end/start)^(t/(num − 1)) · start / η_head,0 (the head sweeps from ``start`` to ``end``,
    the other groups keep their ratio to it); after it, the smoothed loss
    s_t = β s_{t−1} + (1 − β) L_t, debiased as s_t / (1 − β^(t+1)), is recorded; the sweep
    stops after ``num`` batches or once s_t passes ``stop_factor`` times its minimum."""

    def __init__(self, start, end, num, beta=0.98, stop_factor=4.0):
        self.start, self.end, self.num, self.beta, self.stop_factor = start, end, num, beta, stop_factor
        self.lrs, self.losses, self.average = [], [], 0.0

    def before_batch(self, loop):
        lr = self.start * (self.end / self.start) ** (loop.step / max(self.num - 1, 1))
        head = loop.optimizer.param_groups[-1]["initial_lr"]
        for group in loop.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * lr / head
        self.lr = lr

    def after_batch(self, loop):
        value = float(loop.loss.item())
        self.average = self.beta * self.average + (1 - self.beta) * value
        smoothed = self.average / (1 - self.beta ** loop.step)
        self.lrs.append(self.lr)
        self.losses.append(smoothed)
        if not math.isfinite(smoothed) or smoothed > self.stop_factor * min(self.losses) or loop.step >= self.num:
            raise StopSweep


class StopSweep(Exception):
    """Ends lr_find's sweep."""


def lr_find(model, optimizer, loader, start=1e-7, end=10.0, num=100, loss=F.softmax_cross_entropy, device="cpu",
            stop_factor=4.0):
    """The learning-rate range test (Smith 2017; fastai's ``lr_find``): train on up to ``num``
    batches while the head's rate grows exponentially from ``start`` to ``end`` (the other
    parameter groups keep their ratio to it), and record the smoothed loss (see `LRSweep`);
    the model's weights (BatchNorm statistics too) and the optimizer's state are restored
    afterwards. Returns {'lrs', 'losses', 'valley', 'minimum'}: see `suggest_lrs`."""
    saved = {k: v.copy() for k, v in model.state_dict().items()}
    state = optimizer.state_dict()
    sweep = LRSweep(start, end, num, stop_factor=stop_factor)
    epochs = -(-num // max(len(loader), 1))  # passes over the loader enough for num batches
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            fit(model, optimizer, loader, None, epochs, [sweep], loss=loss, device=device)
    except StopSweep:
        pass
    finally:
        model.load_state_dict(saved)
        optimizer.load_state_dict(state)
    return {"lrs": sweep.lrs, "losses": sweep.losses, **suggest_lrs(sweep.lrs, sweep.losses)}


def suggest_lrs(lrs, losses):
    """Two suggestions from a sweep: 'minimum', the rate of the lowest smoothed loss divided
    by 10, and 'valley', the rate halfway along the longest stretch over which the loss keeps
    falling (the longest decreasing subsequence of the losses, fastai's valley rule)."""
    if not losses:
        return {"valley": None, "minimum": None}
    n = len(losses)
    length, before = [1] * n, [None] * n  # the longest decreasing run ending at i, and its previous point
    for i in range(n):
        for j in range(i):
            if losses[j] > losses[i] and length[j] + 1 > length[i]:
                length[i], before[i] = length[j] + 1, j
    end = int(np.argmax(length))
    first = end
    while before[first] is not None:
        first = before[first]
    return {"valley": lrs[(first + end) // 2], "minimum": lrs[int(np.argmin(losses))] / 10}
