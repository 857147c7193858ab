"""The generic loop: one epoch with its progress bar, evaluation, plots."""
import re

import numpy as np
import pytest
from finetune_fixtures import SMALL, datasets

import minitl.train as T
from minitl import functional as F
from minitl import transfer
from minitl.applications import VGG16
from minitl.data import ArrayDataset, DataLoader
from minitl.nn import Sequential, manual_seed
from minitl.optim import SGD, OneCycle
from minitl.tensor import Tensor


def test_evaluate_metrics(folder, notop, tmp_path):
    train, val = datasets(folder)
    model, record = transfer.finetune(train, val, tmp_path / "run", weights=notop, epochs=1, **SMALL)
    report = T.evaluate(model, DataLoader(val, 4), record["classes"])
    assert set(report) >= {"accuracy", "macro_f1", "per_class", "confusion_matrix", "loss"}
    assert sum(map(sum, report["confusion_matrix"])) == len(val)


def test_plots_are_written_atomically(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    from minitl.plots import plot_history
    history = [{"epoch": 1, "loss": 1.0, "accuracy": 0.5}, {"epoch": 2, "loss": 0.5, "accuracy": 0.8}]
    plot_history(history, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"

    def interrupted(self, fname, **kw):  # Ctrl-C halfway through writing the picture
        with open(fname, "wb") as f:
            f.write(b"\x89PNG half")
        raise KeyboardInterrupt

    monkeypatch.setattr(Figure, "savefig", interrupted)
    with pytest.raises(KeyboardInterrupt):
        plot_history(history, tmp_path / "new.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png"]


def test_progress_bar_shows_the_count_with_its_running_loss(monkeypatch, capsys):
    import tqdm
    real = tqdm.tqdm
    monkeypatch.setattr(tqdm, "tqdm", lambda *a, **kw: real(*a, mininterval=0, **kw))  # draw at every batch
    manual_seed(0)
    head = transfer.build_head(2, hidden=(4,))
    data = ArrayDataset(np.random.default_rng(0).normal(size=(6, 1, 1, 8)).astype(np.float32), np.arange(6) % 2)
    optimizer = transfer.make_optimizer(Sequential([VGG16(include_top=False, input_shape=(32, 32, 3), width=1 / 16),
                                                    head]), 0.01)
    T.fit(head, optimizer, DataLoader(data, 2), epochs=1, callbacks=[T.ProgressBar()])
    shown = re.findall(r"(\d)/3 \[[^\r]*?loss=([\d.]+)", capsys.readouterr().err)  # (batches done, running loss)
    assert [n for n, _ in shown] == ["1", "2", "3"] and len(set(shown)) == 3


def _conv_bn_model():
    from minitl.nn import BatchNormalization, Conv2D, Dropout, Flatten
    manual_seed(0)
    return Sequential([Conv2D(3, 3, padding="same", name="conv"), BatchNormalization(momentum=0.999, name="bn"),
                       Dropout(0.5), Flatten()], input_shape=(5, 5, 2))


def test_update_batchnorm_statistics_averages_the_batch_statistics_over_the_data():
    from minitl.nn import Sequential as Seq
    x = np.random.default_rng(0).normal(2.0, 3.0, size=(10, 5, 5, 2)).astype(np.float32)
    model = _conv_bn_model()
    conv, bn = model.get_layer("conv"), model.get_layer("bn")
    cells = T.predict_on_batch(Seq([conv]), x).astype(np.float64).reshape(10, -1, 3)  # the BN layer's input
    data = ArrayDataset(x, np.zeros(10, np.int64))

    assert T.update_batchnorm_statistics(model, DataLoader(data, 10)) == 1  # one batch: the population
    np.testing.assert_allclose(bn.moving_mean.data, cells.mean(axis=(0, 1)), rtol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.data, cells.var(axis=(0, 1)), rtol=1e-4)

    T.update_batchnorm_statistics(model, DataLoader(data, 4))  # batches of 4, 4, 2, weighted by size
    parts = [cells[0:4], cells[4:8], cells[8:10]]
    mean = sum(len(p) * p.mean(axis=(0, 1)) for p in parts) / 10
    var = sum(len(p) * p.var(axis=(0, 1)) for p in parts) / 10
    np.testing.assert_allclose(bn.moving_mean.data, mean, rtol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.data, var, rtol=1e-4)
    assert bn.momentum == 0.999 and not bn.training and not model.training  # modes and momentum restored


def test_update_batchnorm_statistics_leaves_frozen_layers_alone():
    model = _conv_bn_model()
    bn = model.get_layer("bn")
    bn.freeze()
    x = np.random.default_rng(1).normal(size=(4, 5, 5, 2)).astype(np.float32)
    assert T.update_batchnorm_statistics(model, DataLoader(ArrayDataset(x, np.zeros(4, np.int64)), 2)) == 0
    assert bn.moving_mean.data.tolist() == [0, 0, 0] and bn.moving_variance.data.tolist() == [1, 1, 1]


# ---- the open loop --------------------------------------------------------------
def _tiny_task(n=6, features=8, seed=0):
    """A head on made-up features: a model, its optimizer and a loader of n/2 batches."""
    manual_seed(seed)
    head = transfer.build_head(2, hidden=(4,))
    head(Tensor(np.zeros((1, 1, 1, features), np.float32)))  # builds the layers, so they have weights to train
    rng = np.random.default_rng(seed)
    data = ArrayDataset(rng.normal(size=(n, 1, 1, features)).astype(np.float32), np.arange(n) % 2)
    return head, SGD(head.parameters(), lr=0.1, momentum=0.9), DataLoader(data, 2)


class CountEvents(T.Callback):
    EVENTS = ("before_fit", "before_epoch", "before_batch", "after_backward", "after_batch", "after_epoch",
              "after_fit")

    def __init__(self):
        self.counts, self.order = dict.fromkeys(self.EVENTS, 0), []
        for event in self.EVENTS:
            setattr(self, event, self._counter(event))

    def _counter(self, event):
        def count(loop):
            self.counts[event] += 1
            self.order.append(event)
            if event == "after_backward":  # the gradients are there, not yet applied
                assert all(p.grad is not None for p in loop.model.parameters())
        return count


def test_a_callback_sees_every_event_in_order():
    model, optimizer, loader = _tiny_task()
    counter = CountEvents()
    loop = T.fit(model, optimizer, loader, loader, epochs=2, callbacks=[counter])
    assert counter.counts == {"before_fit": 1, "before_epoch": 2, "before_batch": 6, "after_backward": 6,
                              "after_batch": 6, "after_epoch": 2, "after_fit": 1}
    assert counter.order[:6] == ["before_fit", "before_epoch", "before_batch", "after_backward", "after_batch",
                                 "before_batch"]
    assert counter.order[-2:] == ["after_epoch", "after_fit"] and loop.step == 6
    assert [row["epoch"] for row in loop.record["history"]] == [1, 2] and "val_loss" in loop.row


class AllZeros(T.Callback):
    """Replaces every batch: zero images, all labelled class 1."""

    def before_batch(self, loop):
        loop.x, loop.y = np.zeros_like(loop.x), np.ones_like(loop.y)


def test_a_callback_can_replace_the_batch_before_the_forward_pass():
    model, optimizer, loader = _tiny_task()
    seen = []
    real_forward = model.forward
    model.forward = lambda x: seen.append(x.data.copy()) or real_forward(x)
    loop = T.fit(model, optimizer, loader, epochs=3, callbacks=[AllZeros()])
    assert len(seen) == 9 and all(not x.any() for x in seen)
    assert loop.record["history"][-1]["accuracy"] == 1.0  # the replaced labels are the ones trained and counted
    assert T.predict_on_batch(model, np.zeros((1, 1, 1, 8), np.float32)).argmax() == 1


class StopAfter(T.Callback):
    def __init__(self, epochs):
        self.epochs = epochs

    def after_epoch(self, loop):
        loop.stop = loop.epoch + 1 >= self.epochs


def test_stop_ends_the_fit_after_the_epoch_and_the_loss_is_a_parameter():
    model, optimizer, loader = _tiny_task()
    calls = []

    def loss(logits, y):
        calls.append(len(y))
        return F.softmax_cross_entropy(logits, y) * 2

    loop = T.fit(model, optimizer, loader, loader, epochs=10, callbacks=[StopAfter(2)], loss=loss)
    assert len(loop.record["history"]) == 2 and calls == ([2] * 3 + [6]) * 2  # 3 batches, then validation
    plain = T.validate(T.Loop(model, optimizer, loader, loader, 1, [], F.softmax_cross_entropy, "cpu"))
    assert loop.row["val_loss"] == pytest.approx(2 * plain["val_loss"], rel=1e-6)


def test_fit_is_one_screen():
    import inspect
    assert len(inspect.getsource(T.fit).splitlines()) <= 30


class RecordRates(T.Callback):
    order = 100  # after the schedule

    def __init__(self):
        self.lrs, self.momenta = [], []

    def before_batch(self, loop):
        self.lrs.append([g["lr"] for g in loop.optimizer.param_groups])
        self.momenta.append(loop.optimizer.param_groups[0]["momentum"])


def test_the_schedule_moves_the_rates_of_every_batch_and_keeps_the_groups_ratio():
    model, _, loader = _tiny_task(n=8)  # 4 batches an epoch
    layers = model.layers()
    optimizer = SGD([{"params": layers[1].parameters(), "lr": 0.01}, {"params": layers[2].parameters()}], lr=0.1,
                    momentum=0.9)
    rates, cycle = RecordRates(), OneCycle(pct_start=0.25)
    T.fit(model, optimizer, loader, epochs=5, callbacks=[T.ScheduleLR(cycle, first_epoch=2), rates])
    # epochs 3 to 5 of a fit that resumes at epoch 2: 12 steps, t = 0 … 11
    loop = T.fit(model, optimizer, loader, epochs=5, callbacks=[T.ScheduleLR(cycle, first_epoch=2)])
    assert loop.step == 20
    head = [lrs[1] for lrs in rates.lrs]
    assert len(head) == 20 and head[8:] == pytest.approx([0.1 * cycle.lr_factor(t, 12) for t in range(12)])
    assert all(lrs[0] == pytest.approx(lrs[1] / 10) for lrs in rates.lrs)
    assert rates.momenta[8:] == pytest.approx([cycle.momentum(t, 12) for t in range(12)])


# ---- the learning-rate finder ---------------------------------------------------
def test_suggest_lrs_takes_the_middle_of_the_longest_fall_and_a_tenth_of_the_minimum():
    lrs = [10.0 ** e for e in range(-7, 2)]
    losses = [2.0, 2.1, 2.05, 1.5, 1.0, 0.5, 0.4, 0.8, 5.0]  # the longest fall: from index 1 to 6
    found = T.suggest_lrs(lrs, losses)
    assert found["minimum"] == pytest.approx(1e-1 / 10) and found["valley"] == lrs[(1 + 6) // 2]
    assert T.suggest_lrs([], []) == {"valley": None, "minimum": None}


def test_lr_find_sweeps_exponentially_stops_at_divergence_and_restores_the_weights():
    model, optimizer, loader = _tiny_task(n=8)
    before = {k: v.copy() for k, v in model.state_dict().items()}
    T.fit(model, optimizer, loader, epochs=1)  # the optimizer has momentum buffers to keep
    trained = {k: v.copy() for k, v in model.state_dict().items()}
    buffers = {k: dict(v) for k, v in optimizer.state.items()}
    result = T.lr_find(model, optimizer, loader, start=1e-5, end=1e5, num=40)
    assert len(result["lrs"]) < 40  # the loss blew up before the end
    ratios = np.diff(np.log(result["lrs"]))
    np.testing.assert_allclose(ratios, np.log(1e10) / 39, rtol=1e-9)
    assert result["lrs"][0] == pytest.approx(1e-5) and result["losses"][-1] > 4 * min(result["losses"])
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, trained[k], err_msg=k)
    assert {k: v["momentum"].tolist() for k, v in optimizer.state.items()} == \
        {k: v["momentum"].tolist() for k, v in buffers.items()}
    assert all(g["lr"] == 0.1 for g in optimizer.param_groups) and before.keys() == trained.keys()
    assert 1e-5 < result["valley"] < result["lrs"][-1]


# ---- mixing batches ---------------------------------------------------------------
def _mixed(mixup, cutmix, epoch=0, batch=0, seed=0):
    x = np.random.default_rng(9).normal(size=(6, 8, 8, 3)).astype(np.float32)
    y = np.array([0, 1, 2, 0, 1, 2])
    loop = T.Loop(None, None, None, None, 1, [], None, "cpu")
    loop.x, loop.y, loop.epoch, loop.batch = x, y, epoch, batch
    T.MixBatches(3, mixup, cutmix, seed).before_batch(loop)
    return x, y, loop.x, loop.y


def test_mixup_mixes_images_and_targets_in_one_proportion():
    x, y, mixed, targets = _mixed(0.4, 0.0)
    rng = np.random.default_rng([0, 0, 0])  # the callback's draws: λ, then π
    lam, perm = rng.beta(0.4, 0.4), rng.permutation(6)
    np.testing.assert_allclose(mixed, lam * x + (1 - lam) * x[perm], rtol=1e-6)
    np.testing.assert_allclose(targets, lam * np.eye(3)[y] + (1 - lam) * np.eye(3)[y[perm]], rtol=1e-6)
    np.testing.assert_allclose(targets.sum(1), 1, rtol=1e-6)
    again = _mixed(0.4, 0.0)
    np.testing.assert_array_equal(again[2], mixed)  # seeded by (seed, epoch, batch)
    assert not np.array_equal(_mixed(0.4, 0.0, batch=1)[2], mixed)


def test_cutmix_pastes_a_box_and_weighs_the_targets_by_its_area():
    for batch in range(10):
        x, y, mixed, targets = _mixed(0.0, 1.0, batch=batch)
        changed = (mixed != x).any(axis=(0, 3))  # the pasted box, over the whole batch
        rows, cols = np.flatnonzero(changed.any(1)), np.flatnonzero(changed.any(0))
        area = len(rows) * len(cols) / 64 if changed.any() else 0.0
        if changed.any():
            assert changed[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].all()  # one box
        rng = np.random.default_rng([0, 0, batch])
        rng.beta(1.0, 1.0)  # λ, then π
        perm = rng.permutation(6)
        expected = np.eye(3)[y] * (1 - area) + np.eye(3)[y[perm]] * area
        np.testing.assert_allclose(targets, expected, atol=1e-6)


def test_a_run_with_every_regulariser_resumes_bit_for_bit(folder, notop, tmp_path, monkeypatch):
    from finetune_fixtures import datasets, interrupt_at, params
    train, val = datasets(folder)
    opts = dict(SMALL, weights=notop, epochs=2, freeze_epochs=1, unfreeze_blocks=1, label_smoothing=0.1, mixup=0.4,
                cutmix=1.0, class_weight="balanced", balanced_sampling=True, optimizer="adam", lr=1e-3)
    full, record = transfer.finetune(train, val, tmp_path / "full", **opts)
    assert record["training"]["mixup"] == 0.4 and record["training"]["class_weight"] == "balanced"
    restore = interrupt_at(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        transfer.finetune(train, val, tmp_path / "cut", **opts)
    restore()
    resumed, _ = transfer.finetune(train, val, tmp_path / "cut", resume=True, **opts)
    for (k, a), b in zip(params(full).items(), params(resumed).values()):
        np.testing.assert_array_equal(a, b, err_msg=k)


def test_tta_views_are_the_image_its_mirror_and_four_shifted_crops():
    x = np.arange(2 * 32 * 32 * 3, dtype=np.float32).reshape(2, 32, 32, 3)
    views = T.tta_views(x)
    assert len(views) == 6 and all(v.shape == x.shape for v in views)
    np.testing.assert_array_equal(views[1], x[:, :, ::-1])
    np.testing.assert_array_equal(views[2][:, 2:, 2:], x[:, :30, :30])   # shifted 2 = 32/16 pixels down-right
    np.testing.assert_array_equal(views[5][:, :30, :30], x[:, 2:, 2:])   # and up-left
    np.testing.assert_array_equal(views[2][:, 0, 5], x[:, 0, 3])         # the edge repeated


def test_evaluate_with_tta_averages_the_views_probabilities():
    model, _, loader = _tiny_task()
    probs, labels = T.predict_proba(model, loader, tta=True)
    x = np.concatenate([x for x, _ in loader.batches(0)])
    each = [T._softmax(T.predict_on_batch(model, np.ascontiguousarray(v))) for v in T.tta_views(x)]
    np.testing.assert_allclose(probs, np.mean(each, axis=0), rtol=1e-12)
    report = T.evaluate(model, loader, ["a", "b"], tta=True)
    assert report["tta"] and report["loss"] == pytest.approx(-np.mean(np.log(probs[np.arange(6), labels])))


def test_most_confused_lists_the_largest_off_diagonal_cells_with_their_share():
    from minitl.metrics import most_confused
    c = [[5, 3, 0], [1, 6, 0], [4, 0, 2]]
    assert most_confused(c, ["a", "b", "c"]) == [
        {"true": "c", "predicted": "a", "count": 4, "share": 4 / 6},
        {"true": "a", "predicted": "b", "count": 3, "share": 3 / 8},
        {"true": "b", "predicted": "a", "count": 1, "share": 1 / 7}]
