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
