"""The generic loop: one epoch with its progress bar, evaluation, plots."""
import re

import numpy as np
import pytest
from finetune_fixtures import SMALL, datasets

import minitl.train as T
from minitl import transfer
from minitl.applications import VGG16
from minitl.data import ArrayDataset, DataLoader
from minitl.nn import Sequential, manual_seed


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
    T.train_epoch(head, DataLoader(data, 2), optimizer, 0, progress=True, desc="epoch 1/1")
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
