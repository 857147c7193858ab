"""Transfer learning end to end on tiny generated image folders, through the API and the CLI."""
import importlib.util
import json
import os
import re
import signal
import warnings

import h5py
import numpy as np
import pytest
from PIL import Image

import minitl.train as T
from minitl import runs, transfer
from minitl.files import write_json
from minitl import DataError, TrainingError, io
from minitl.cli import main
from minitl.data import ArrayDataset, DataLoader, ImageFolder
from minitl.applications import VGG16
from minitl.nn import Sequential, manual_seed

SMALL = dict(width=1 / 16, hidden=(16, 8), batch_size=4, lr=0.01, seed=0, progress=False, log=lambda *a: None)


def make_folder(root, per_class=6, size=40):
    """Three classes told apart by colour, in mixed formats, with grayscale, RGBA and one corrupt file."""
    rng = np.random.default_rng(0)
    colours = {"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200)}
    formats = ["png", "jpg", "bmp", "gif", "webp", "png"]
    for name, colour in colours.items():
        d = root / name
        d.mkdir(parents=True)
        for i in range(per_class):
            a = np.clip(np.array(colour) + rng.normal(0, 20, (size, size, 3)), 0, 255).astype(np.uint8)
            img = Image.fromarray(a)
            if name == "green" and i == 0:
                img = img.convert("L")
            if name == "blue" and i == 0:
                img = img.convert("RGBA")
                img.save(d / f"{i}.png")
                continue
            img.save(d / f"{i}.{formats[i % len(formats)]}")
    (root / "red" / "broken.jpg").write_bytes(b"not an image at all")
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("images") / "photos")


@pytest.fixture(scope="module")
def notop(tmp_path_factory):
    manual_seed(1)
    path = tmp_path_factory.mktemp("weights") / "notop.h5"
    io.save_weights(VGG16(include_top=False, input_shape=(32, 32, 3), width=1 / 16), path)
    return path


def datasets(folder):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train = ImageFolder(folder, (32, 32), validation_split=0.34, subset="training", seed=0)
        val = ImageFolder(folder, (32, 32), validation_split=0.34, subset="validation", seed=0)
    return train, val


def params(model):
    return {k: v.copy() for k, v in model.state_dict().items()}


def test_corrupt_file_is_skipped_with_one_warning(folder):
    with pytest.warns(UserWarning, match="broken.jpg") as caught:
        ds = ImageFolder(folder, (32, 32))
    assert len([w for w in caught if "broken.jpg" in str(w.message)]) == 1
    assert len(ds) == 18 and ds.classes == ["blue", "green", "red"]


def test_finetune_writes_a_complete_run(folder, notop, tmp_path):
    train, val = datasets(folder)
    model, record = transfer.finetune(train, val, tmp_path / "run", weights=notop, epochs=2, **SMALL)
    for name in ("record.json", "checkpoint.h5", "best.h5", "optimizer.h5", "features.h5"):
        assert (tmp_path / "run" / name).is_file(), name
    saved = json.loads((tmp_path / "run" / "record.json").read_text())
    assert saved["status"] == "finished" and saved["epoch"] == 2 and saved["feature_cache"]
    assert saved["classes"] == ["blue", "green", "red"] and saved["preprocessing"] == "caffe"
    assert [h["epoch"] for h in saved["history"]] == [1, 2] and "val_loss" in saved["history"][0]
    has_matplotlib = importlib.util.find_spec("matplotlib") is not None
    assert (tmp_path / "run" / "curves.png").is_file() == has_matplotlib  # an optional extra
    # the base stayed frozen: its weights are those of the file
    stored = {e.name: e.arrays for e in io.read_keras_weights(notop)}
    np.testing.assert_array_equal(model[0].get_layer("block3_conv2").kernel.data, stored["block3_conv2"][0])
    # the checkpoint is the whole model in Keras' layout and loads back
    again, _ = transfer.load_run(tmp_path / "run")
    for (k, a), b in zip(params(model).items(), params(again).values()):
        np.testing.assert_array_equal(a, b, err_msg=k)


def test_feature_cache_gives_the_same_head_as_the_frozen_base(folder, notop, tmp_path):
    train, val = datasets(folder)
    cached, _ = transfer.finetune(train, val, tmp_path / "a", weights=notop, epochs=2, cache_features=True, **SMALL)
    direct, _ = transfer.finetune(train, val, tmp_path / "b", weights=notop, epochs=2, cache_features=False, **SMALL)
    for (k, a), b in zip(params(cached).items(), params(direct).values()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6, err_msg=k)
    with h5py.File(tmp_path / "a" / "features.h5") as f:
        assert f["train/features"].shape == (len(train), 1, 1, 32)


@pytest.mark.parametrize("unfreeze,optimizer,lr", [(0, "sgd", 0.01), (2, "sgd", 0.01), (2, "adam", 1e-3)])
def test_resume_after_interruption_matches_an_uninterrupted_run(folder, notop, tmp_path, monkeypatch, unfreeze,
                                                                optimizer, lr):
    train, val = datasets(folder)
    opts = dict(SMALL, weights=notop, epochs=3, unfreeze_blocks=unfreeze, schedule="cosine", dropout=0.5,
                optimizer=optimizer, lr=lr)
    full, _ = transfer.finetune(train, val, tmp_path / "full", **opts)

    real = T.train_epoch

    def interrupted(model, loader, optimizer, epoch, *args, **kw):
        if epoch == 2:
            raise KeyboardInterrupt
        return real(model, loader, optimizer, epoch, *args, **kw)

    monkeypatch.setattr(T, "train_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        transfer.finetune(train, val, tmp_path / "cut", **opts)
    record = json.loads((tmp_path / "cut" / "record.json").read_text())
    assert record["status"] == "interrupted" and record["epoch"] == 2
    monkeypatch.setattr(T, "train_epoch", real)
    resumed, record = transfer.finetune(train, val, tmp_path / "cut", resume=True, **opts)
    assert record["epoch"] == 3 and len(record["history"]) == 3
    for (k, a), b in zip(params(full).items(), params(resumed).values()):
        np.testing.assert_array_equal(a, b, err_msg=k)


class TurnsNaN(ArrayDataset):
    """Finite images in the first epoch, NaN from the second on."""

    def __getitem__(self, i):
        x, y = super().__getitem__(i)
        return (x * np.nan if self.epoch >= 1 else x), y


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    rng = np.random.default_rng(0)
    data = TurnsNaN(rng.normal(0, 50, (8, 32, 32, 3)).astype(np.float32), np.arange(8) % 2)
    data.classes = ["a", "b"]
    with pytest.raises(TrainingError, match=r"nan at epoch 2.*checkpoint of epoch 1 is kept"):
        transfer.finetune(data, None, tmp_path / "run", epochs=3, cache_features=False, **SMALL)
    record = json.loads((tmp_path / "run" / "record.json").read_text())
    assert record["status"] == "diverged" and record["epoch"] == 1
    model, _ = transfer.load_run(tmp_path / "run")
    assert all(np.isfinite(p.data).all() for p in model.parameters())


def test_best_of_a_run_without_validation_is_an_error_naming_the_file(tmp_path):
    rng = np.random.default_rng(0)
    data = ArrayDataset(rng.normal(0, 50, (8, 32, 32, 3)).astype(np.float32), np.arange(8) % 2)
    data.classes = ["a", "b"]
    transfer.finetune(data, None, tmp_path / "run", epochs=1, **SMALL)  # no validation: no best.h5
    with pytest.raises(TrainingError, match=r"has no best\.h5: .*best\.h5 does not exist"):
        transfer.load_run(tmp_path / "run", runs.BEST)
    model, record = transfer.load_run(tmp_path / "run")  # the last checkpoint is there
    assert record["epoch"] == 1


def test_evaluate_metrics(folder, notop, tmp_path):
    train, val = datasets(folder)
    model, record = transfer.finetune(train, val, tmp_path / "run", weights=notop, epochs=1, **SMALL)
    report = T.evaluate(model, DataLoader(val, 4), record["classes"])
    assert set(report) >= {"accuracy", "macro_f1", "per_class", "confusion_matrix", "loss"}
    assert sum(map(sum, report["confusion_matrix"])) == len(val)


def test_cli_finetune_evaluate_predict(folder, notop, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["finetune", "--data", str(folder), "--weights", str(notop), "--out", str(run), "--epochs", "2",
            "--image-size", "32", "--width", "0.0625", "--hidden", "16", "8", "--batch-size", "4", "--quiet",
            "--optimizer", "adam"]
    assert main(args) == 0
    training = json.loads((run / "record.json").read_text())["training"]
    assert training["optimizer"] == "adam" and training["lr"] == 0.001
    with h5py.File(run / "optimizer.h5") as f:
        assert f.attrs["optimizer"] == "Adam" and set(f["state/0"]) == {"m", "v", "step"}
    assert main(["evaluate", str(run), "--data", str(folder), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "macro avg" in out and "confusion matrix" in out
    assert json.loads((run / "evaluation.json").read_text())["classes"] == ["blue", "green", "red"]
    image = next((folder / "green").glob("*.png"))
    assert main(["predict", str(run), str(image), "--top", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == str(image) and len(lines) == 3
    probs = [float(line.split()[-1]) for line in lines[1:]]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001
    assert main(["summary", str(run)]) == 0
    assert "head_predictions" in capsys.readouterr().out


@pytest.mark.parametrize("args,message", [
    (["finetune", "--data", "/no/such/folder"], "data folder /no/such/folder does not exist"),
    (["finetune", "--data", ".", "--weights", "/no/such.h5"], "weights file /no/such.h5 does not exist"),
    (["finetune", "--data", ".", "--image-size", "16"], "too small"),
    (["evaluate", "/no/such/run", "--data", "."], "not a minitl run directory"),
])
def test_cli_errors_are_one_line_without_traceback(args, message, capsys):
    assert main(args) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("args,message", [
    (["--lr", "-0.1"], "argument --lr: must be a positive number, got -0.1"),
    (["--base-lr", "0"], "argument --base-lr: must be a positive number, got 0"),
    (["--optimizer", "rmsprop"], "argument --optimizer: invalid choice: 'rmsprop'"),
])
def test_cli_rejects_bad_optimizer_settings_before_reading_any_data(args, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(["finetune", "--data", "/no/such/folder", *args])
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_cli_weights_that_do_not_fit(folder, tmp_path, capsys):
    manual_seed(0)
    wrong = tmp_path / "wide.h5"
    io.save_weights(VGG16(include_top=False, input_shape=(32, 32, 3), width=1 / 8), wrong)
    code = main(["finetune", "--data", str(folder), "--weights", str(wrong), "--out", str(tmp_path / "r"),
                 "--image-size", "32", "--width", "0.0625", "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and "block1_conv1" in err and "Traceback" not in err


def test_every_subcommand_has_help(capsys):
    for cmd in (["finetune"], ["evaluate"], ["predict"], ["summary"], ["weights", "fetch"], ["weights", "list"],
                ["demo"], ["info"]):
        with pytest.raises(SystemExit) as e:
            main(cmd + ["--help"])
        assert e.value.code == 0
        assert "usage: minitl" in capsys.readouterr().out


def interrupt_at(monkeypatch, at_epoch):
    """Make training raise KeyboardInterrupt (Ctrl-C) when epoch ``at_epoch`` (0-based) starts."""
    real = T.train_epoch

    def interrupted(model, loader, optimizer, epoch, *args, **kw):
        if epoch == at_epoch:
            raise KeyboardInterrupt
        return real(model, loader, optimizer, epoch, *args, **kw)

    monkeypatch.setattr(T, "train_epoch", interrupted)
    return lambda: monkeypatch.setattr(T, "train_epoch", real)


def test_feature_cache_is_not_reused_with_other_weights(folder, notop, tmp_path):
    manual_seed(5)
    other = tmp_path / "other.h5"
    io.save_weights(VGG16(include_top=False, input_shape=(32, 32, 3), width=1 / 16), other)
    train, val = datasets(folder)
    transfer.finetune(train, val, tmp_path / "run", weights=notop, epochs=1, **SMALL)
    rerun, _ = transfer.finetune(train, val, tmp_path / "run", weights=other, epochs=1, **SMALL)
    fresh, _ = transfer.finetune(train, val, tmp_path / "fresh", weights=other, epochs=1, **SMALL)
    for (k, a), b in zip(params(fresh).items(), params(rerun).values()):
        np.testing.assert_array_equal(a, b, err_msg=k)


def test_cli_resume_uses_the_recorded_settings(folder, notop, tmp_path, monkeypatch):
    args = ["finetune", "--data", str(folder), "--weights", str(notop), "--epochs", "3", "--image-size", "32",
            "--width", "0.0625", "--hidden", "16", "8", "--batch-size", "4", "--schedule", "cosine",
            "--dropout", "0.5", "--seed", "3", "--quiet"]
    assert main(args + ["--out", str(tmp_path / "full")]) == 0
    restore = interrupt_at(monkeypatch, 1)
    assert main(args + ["--out", str(tmp_path / "cut")]) == 130
    restore()
    # only the folders: width, head, image size, epochs, schedule and seed come from record.json
    assert main(["finetune", "--data", str(folder), "--out", str(tmp_path / "cut"), "--resume", "--quiet"]) == 0
    full, _ = transfer.load_run(tmp_path / "full")
    resumed, record = transfer.load_run(tmp_path / "cut")
    assert record["status"] == "finished" and record["epoch"] == 3
    for (k, a), b in zip(params(full).items(), params(resumed).values()):
        np.testing.assert_array_equal(a, b, err_msg=k)


def test_resume_refuses_other_data(folder, notop, tmp_path):
    train, val = datasets(folder)
    transfer.finetune(train, val, tmp_path / "run", weights=notop, epochs=1, **SMALL)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bigger = ImageFolder(folder, (40, 40), validation_split=0.34, subset="training", seed=0)
    with pytest.raises(TrainingError, match="trained on classes blue, green, red at 32x32.*at 40x40"):
        transfer.finetune(bigger, val, tmp_path / "run", resume=True, epochs=2, **SMALL)


def test_resume_after_ctrl_c_in_the_first_epoch_starts_from_the_pretrained_base(folder, notop, tmp_path,
                                                                                monkeypatch):
    train, val = datasets(folder)
    restore = interrupt_at(monkeypatch, 0)
    with pytest.raises(KeyboardInterrupt):
        transfer.finetune(train, val, tmp_path / "run", weights=notop, epochs=1, **SMALL)
    assert not (tmp_path / "run" / "checkpoint.h5").exists()
    restore()
    model, record = transfer.finetune(train, val, tmp_path / "run", weights=notop, epochs=1, resume=True, **SMALL)
    stored = {e.name: e.arrays for e in io.read_keras_weights(notop)}
    np.testing.assert_array_equal(model[0].get_layer("block1_conv1").kernel.data, stored["block1_conv1"][0])


def test_new_run_in_an_old_run_directory_leaves_nothing_of_the_old_one(folder, notop, tmp_path, monkeypatch):
    train, val = datasets(folder)
    run = tmp_path / "run"
    transfer.finetune(train, val, run, weights=notop, epochs=1, **SMALL)
    write_json(run / "evaluation.json", {"accuracy": 1.0})
    interrupt_at(monkeypatch, 0)
    with pytest.raises(KeyboardInterrupt):
        transfer.finetune(train, val, run, weights=notop, epochs=1, **dict(SMALL, hidden=(12,)))
    for name in ("checkpoint.h5", "best.h5", "optimizer.h5", "evaluation.json"):
        assert not (run / name).exists(), name
    record = json.loads((run / "record.json").read_text())
    assert record["status"] == "interrupted" and record["epoch"] == 0 and record["model"]["hidden"] == [12]


def test_ctrl_c_while_an_epoch_is_saved_waits_for_all_its_files(folder, notop, tmp_path, monkeypatch):
    train, val = datasets(folder)
    real = runs.save_optimizer

    def save_optimizer(path, optimizer):  # Ctrl-C between the checkpoint and the optimizer state
        os.kill(os.getpid(), signal.SIGINT)
        real(path, optimizer)

    monkeypatch.setattr(runs, "save_optimizer", save_optimizer)
    with pytest.raises(KeyboardInterrupt):
        transfer.finetune(train, val, tmp_path / "run", weights=notop, epochs=3, **SMALL)
    record = json.loads((tmp_path / "run" / "record.json").read_text())
    assert record["status"] == "interrupted" and record["epoch"] == 1 and len(record["history"]) == 1
    assert (tmp_path / "run" / "optimizer.h5").is_file()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_cli_predict_folders_and_unreadable_files(folder, notop, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["finetune", "--data", str(folder), "--weights", str(notop), "--out", str(run), "--epochs", "1",
                 "--image-size", "32", "--width", "0.0625", "--hidden", "8", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "minitl finetune: warning: skipped 1 image(s)" in err and "UserWarning" not in err
    code = main(["predict", str(run), str(folder / "green"), str(tmp_path / "missing.jpg"),
                 str(folder / "red" / "broken.jpg"), str(folder / "blue" / "1.jpg"), "--top", "1"])
    out, err = capsys.readouterr()
    printed = [line for line in out.splitlines() if not line.startswith(" ")]
    assert code == 1 and len(printed) == 7  # the 6 images of green/, then blue/1.jpg after the two bad ones
    assert printed[0].startswith(str(folder / "green")) and printed[-1] == str(folder / "blue" / "1.jpg")
    assert main(["predict", str(run), str(folder / "green"), str(tmp_path / "missing.jpg"),
                 str(folder / "red" / "broken.jpg"), str(folder / "blue" / "1.jpg"), "--top", "1",
                 "--batch-size", "4"]) == 1
    assert capsys.readouterr() == (out, err)  # in batches of 4: the same lines
    lines = err.splitlines()
    assert len(lines) == 2 and lines[0] == f"minitl predict: error: image file {tmp_path / 'missing.jpg'} does not exist"
    assert lines[1].startswith(f"minitl predict: error: cannot decode image {folder / 'red' / 'broken.jpg'}: ")


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


def test_one_class_is_refused(tmp_path):
    data = ArrayDataset(np.zeros((4, 32, 32, 3), np.float32), np.zeros(4))
    data.classes = ["cats"]
    with pytest.raises(DataError, match="needs at least two classes, found 1: cats"):
        transfer.finetune(data, None, tmp_path / "run", epochs=1, **SMALL)
    assert not (tmp_path / "run").exists()


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
