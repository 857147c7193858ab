"""The training loop: train one epoch, fit with validation and checkpoints, evaluate, predict.

Nothing here knows about backbones or heads: it works on any `minitl.nn.Module` that
returns logits, and any `minitl.data.DataLoader`. The recipe that builds a transfer
model and trains it is `minitl.transfer.finetune`.
"""
import math
import time
import warnings

import numpy as np

from minitl import functional as F
from minitl.backend import get_array_module, to_device, to_numpy
from minitl.errors import TrainingError
from minitl.metrics import classification_report
from minitl.nn import BatchNormalization, manual_seed
from minitl.runs import CHECKPOINT, RunFolder
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


def evaluate(model, loader, class_names, device="cpu"):
    """Loss, accuracy, per-class precision/recall/F1, macro averages and the confusion matrix."""
    logits, labels = predict(model, loader, device)
    report = classification_report(labels, logits.argmax(axis=1), class_names)
    report["loss"] = float(F.softmax_cross_entropy(Tensor(logits), labels).item())
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


# ---- training -----------------------------------------------------------------
def train_epoch(model, loader, optimizer, epoch, device="cpu", progress=True, desc=""):
    """One pass of SGD over ``loader``: forward, L = mean cross-entropy, backward, W ← W − η∇L."""
    from tqdm import tqdm
    model.train()
    total_loss, correct, seen, start, first = 0.0, 0, 0, time.perf_counter(), None
    bar = tqdm(total=len(loader), desc=desc, disable=not progress, leave=False, unit="batch")
    for i, (x, y) in enumerate(loader.batches(epoch)):
        xb, yb = Tensor(to_device(x, device)), to_device(y, device)
        logits = model(xb)
        loss = F.softmax_cross_entropy(logits, yb)
        value = float(loss.item())
        if not math.isfinite(value):
            raise _loss_error(value, x, epoch, i)
        first = value if first is None else first
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
            "images_per_s": seen / max(seconds, 1e-9), "first_loss": first}


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


def _warn_if_growing(record, row, first_loss):
    """Warn (True) when the epoch's training loss is over LOSS_GROWTH times the run's first
    batch loss (or over LOSS_GROWTH, when that was below 1): a diverging run, though finite."""
    first = record.setdefault("first_loss", first_loss)
    if first is not None and row["loss"] > LOSS_GROWTH * max(first, 1.0):
        warnings.warn(f"the training loss of epoch {row['epoch']} is {row['loss']:.3g}, over {LOSS_GROWTH} times "
                      f"the first batch's {first:.3g}: training is diverging; try a lower learning rate (--lr)",
                      stacklevel=3)
        return True
    return False


class EarlyStopping:
    """The lowest validation loss so far and the epochs since it; ``stop`` once ``patience``
    epochs (None: never) have gone by without improvement."""

    def __init__(self, patience=None, best=math.inf, waited=0):
        self.patience, self.best, self.waited, self.stop = patience, best, waited, False

    def update(self, val_loss):
        """Take an epoch's validation loss; True when it is the best so far."""
        if val_loss < self.best:
            self.best, self.waited = val_loss, 0
            return True
        self.waited += 1
        self.stop = self.patience is not None and self.waited >= self.patience
        return False


def _log_epoch(row, epochs, log):
    msg = f"epoch {row['epoch']}/{epochs}: loss {row['loss']:.4f}, accuracy {row['accuracy']:.3f}"
    if "val_loss" in row:
        msg += f", val_loss {row['val_loss']:.4f}, val_accuracy {row['val_accuracy']:.3f}"
    log(msg + f" ({row['images_per_s']:.0f} images/s)")


def _epoch(model, optimizer, train_loader, val_loader, epoch, epochs, device, progress):
    """Train one epoch and validate: the epoch's history row."""
    lr = optimizer.param_groups[0]["lr"]
    stats = train_epoch(model, train_loader, optimizer, epoch, device, progress, desc=f"epoch {epoch + 1}/{epochs}")
    row = {"epoch": epoch + 1, "lr": lr, **stats}
    if val_loader is not None:
        logits, labels = predict(model, val_loader, device)
        row["val_loss"] = float(F.softmax_cross_entropy(Tensor(logits), labels).item())
        row["val_accuracy"] = float((logits.argmax(axis=1) == labels).mean())
    return row


def _interrupted(run, when, log):
    run.write_record("interrupted")
    log(f"interrupted {when}; the checkpoint of epoch {run.record.get('epoch', 0)} is kept"
        + (f" in {run}; continue with --resume" if run.path is not None else ""))
    raise KeyboardInterrupt from None


def _diverged(run, error):
    run.write_record("diverged")
    kept = f"the checkpoint of epoch {run.record.get('epoch', 0)} is kept in {run.path / CHECKPOINT}" \
        if run.has(CHECKPOINT) else "no checkpoint was written"
    raise TrainingError(f"{error}; training stopped: {kept}") from None


def fit(model, optimizer, train_loader, val_loader=None, epochs=10, run_dir=None, record=None,
        schedule=None, patience=None, device="cpu", progress=True, seed=0, log=print, save_model=None):
    """Train for ``epochs`` (continuing from ``record['epoch']`` when resuming), validating after each.

    After each epoch the weights are checkpointed (atomically) with the run record, and
    ``best.h5`` keeps the weights of the lowest validation loss (see `RunFolder.commit_epoch`).
    Early stopping ends training when the validation loss has not improved for ``patience``
    epochs. A NaN or infinite loss, weight or validation loss stops training with
    ``TrainingError`` before the epoch is written, so the last checkpoint stays the last
    finite one; a finite loss that grows over ``LOSS_GROWTH`` times the first is warned
    about. Ctrl-C stops after writing the record; the checkpoint of the last finished epoch
    stays, and ``--resume`` continues from it; Ctrl-C while an epoch's files are written
    takes effect once they are all written.
    ``save_model``: the model whose weights are checkpointed, when ``model`` is only
    part of it (the head, trained on cached features). Returns the record.
    """
    run = RunFolder(run_dir, record)
    run.record.setdefault("history", [])
    start, saved, warned = run.record.get("epoch", 0), model if save_model is None else save_model, False
    best = run.record.get("best_val_loss")  # null in the record until a validation loss is seen
    stopping = EarlyStopping(
        patience, math.inf if best is None else best, run.record.get("epochs_without_improvement", 0)
    )
    if schedule is not None:
        schedule.set_epoch(start)
    for epoch in range(start, epochs):
        manual_seed(seed * 1_000_003 + epoch)  # dropout masks of this epoch, the same on resume
        try:
            with np.errstate(over="ignore", invalid="ignore"):  # overflows are checked for below
                row = _epoch(model, optimizer, train_loader, val_loader, epoch, epochs, device, progress)
            first_loss = row.pop("first_loss")
            _log_epoch(row, epochs, log)
            check_finite(saved, row)
            warned = warned or _warn_if_growing(run.record, row, first_loss)
            if schedule is not None:
                schedule.step()
            improved = "val_loss" in row and stopping.update(row["val_loss"])
        except TrainingError as e:
            _diverged(run, e)
        except KeyboardInterrupt:
            _interrupted(run, f"during epoch {epoch + 1}", log)
        if run.commit_epoch(
            saved, optimizer, row, improved, best_val_loss=stopping.best, epochs_without_improvement=stopping.waited
        ):
            _interrupted(run, f"after epoch {epoch + 1}", log)
        if stopping.stop:
            log(f"early stopping: no improvement of the validation loss for {patience} epochs")
            break
    run.write_record("finished")
    return run.record
