"""Transfer learning end to end on tiny generated image folders: finetune, the run folder, resume."""
import importlib.util
import json
import os
import signal
import warnings

import h5py
import numpy as np
import pytest
from finetune_fixtures import SMALL, datasets, interrupt_at, params

import minitl.train as T
from minitl import DataError, TrainingError, io, runs, transfer
from minitl.applications import VGG16
from minitl.data import ArrayDataset, DataLoader, ImageFolder
from minitl.files import write_json
from minitl.nn import manual_seed


def test_corrupt_file_is_skipped_with_one_warning(folder):
    with pytest.warns(UserWarning, match="broken.jpg") as caught:
        ds = ImageFolder(folder, (32, 32))
    assert len([w for w in caught if "broken.jpg" in str(w.message)]) == 1
    assert len(ds) == 18 and ds.classes == ["blue", "green", "red"]


def test_finetune_writes_a_complete_run(folder, notop, tmp_path):
    train, val = datasets(folder)
    model, _record = transfer.finetune(train, val, tmp_path / "run", weights=notop, epochs=2, **SMALL)
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

    def interrupted(loop):
        if loop.epoch == 2:
            raise KeyboardInterrupt
        return real(loop)

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
    with pytest.raises(TrainingError, match=r"nan at epoch 2, batch 1: the batch's inputs hold NaN or infinite "
                                            r"values; training stopped: the checkpoint of epoch 1 is kept") as e:
        transfer.finetune(data, None, tmp_path / "run", epochs=3, cache_features=False, **SMALL)
    assert "learning rate" not in str(e.value)  # not the rate's fault
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
    _model, record = transfer.load_run(tmp_path / "run")  # the last checkpoint is there
    assert record["epoch"] == 1


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
    model, _record = transfer.finetune(train, val, tmp_path / "run", weights=notop, epochs=1, resume=True, **SMALL)
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


def test_one_class_is_refused(tmp_path):
    data = ArrayDataset(np.zeros((4, 32, 32, 3), np.float32), np.zeros(4))
    data.classes = ["cats"]
    with pytest.raises(DataError, match="needs at least two classes, found 1: cats"):
        transfer.finetune(data, None, tmp_path / "run", epochs=1, **SMALL)
    assert not (tmp_path / "run").exists()


def strict_record(run_dir):
    """record.json parsed by a parser that refuses NaN and Infinity, as browsers and jq do."""
    def refuse(name):
        raise ValueError(f"{name} in record.json")
    return json.loads((run_dir / "record.json").read_text(), parse_constant=refuse)


def two_classes(n, seed=0):
    data = ArrayDataset(np.random.default_rng(seed).normal(0, 50, (n, 32, 32, 3)).astype(np.float32), np.arange(n) % 2)
    data.classes = ["a", "b"]
    return data


@pytest.mark.parametrize("lr", [1e38, float("inf")])
def test_a_run_that_diverges_in_one_batch_writes_no_checkpoint_and_a_strict_json_record(tmp_path, lr):
    opts = dict(SMALL, lr=lr, batch_size=8)  # one batch per epoch: its loss is finite, the update is not
    with pytest.raises(TrainingError, match=r"became NaN or infinite in epoch 1\.|loss became (nan|inf) at epoch 1") \
            as caught:
        transfer.finetune(two_classes(8), two_classes(4, 1), tmp_path / "run", epochs=2, **opts)
    assert "no checkpoint was written" in str(caught.value) and "is kept" not in str(caught.value)
    assert not (tmp_path / "run" / "checkpoint.h5").exists() and not (tmp_path / "run" / "best.h5").exists()
    record = strict_record(tmp_path / "run")
    assert record["status"] == "diverged" and record["epoch"] == 0 and record["history"] == []
    assert record["training"]["lr"] == (None if lr == float("inf") else lr)


def test_non_finite_weights_after_an_epoch_keep_the_last_finite_checkpoint(tmp_path, monkeypatch):
    real = T.train_epoch

    def poisoned(loop):  # the update of epoch 2 leaves one weight infinite
        row = real(loop)
        if loop.epoch == 1:
            loop.model.get_layer("head_dense1").kernel.data[0, 0] = np.inf
        return row

    monkeypatch.setattr(T, "train_epoch", poisoned)
    with pytest.raises(TrainingError, match=r"weights of head_dense1 became NaN or infinite in epoch 2\. Try a lower "
                                            r"learning rate.*the checkpoint of epoch 1 is kept"):
        transfer.finetune(two_classes(8), two_classes(4, 1), tmp_path / "run", epochs=3, **SMALL)
    record = strict_record(tmp_path / "run")
    assert record["status"] == "diverged" and record["epoch"] == 1 and len(record["history"]) == 1
    for name in (runs.CHECKPOINT, runs.BEST):
        model, _ = transfer.load_run(tmp_path / "run", name)
        assert all(np.isfinite(p.data).all() for p in model.parameters())


def test_a_loss_that_explodes_but_stays_finite_is_warned_about_once(tmp_path):
    with pytest.warns(UserWarning, match=r"training loss of epoch 1 is .*over 100 times the first batch's") as caught:
        _, record = transfer.finetune(two_classes(8), two_classes(4, 1), tmp_path / "run", epochs=3,
                                      **dict(SMALL, lr=1e6))
    assert len([w for w in caught if "diverging" in str(w.message)]) == 1
    assert record["status"] == "finished" and all(row["loss"] > 1e5 for row in record["history"])
    assert 0 < strict_record(tmp_path / "run")["first_loss"] < 10
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a sound rate warns of nothing
        transfer.finetune(two_classes(8), two_classes(4, 1), tmp_path / "sound", epochs=3, **SMALL)


def test_a_nan_validation_loss_with_finite_weights_names_the_validation_inputs(tmp_path):
    val = two_classes(4, 1)
    val.images[0, 0, 0, 0] = np.nan
    with pytest.raises(TrainingError, match=r"validation loss became nan at epoch 1 with finite weights: the "
                                            r"validation inputs hold NaN.*no checkpoint was written"):
        transfer.finetune(two_classes(8), val, tmp_path / "run", epochs=2, **SMALL)
    assert strict_record(tmp_path / "run")["status"] == "diverged"


def test_load_run_reads_the_committed_epoch_of_a_torn_folder_without_changing_it(folder, notop, tmp_path):
    """As a kill leaves a folder between epoch 2's commit (record.json) and its renames:
    checkpoint.h5 still of epoch 1, epoch 2's file staged. load_run (evaluate, predict) reads epoch 2."""
    train, val = datasets(folder)
    one, two = tmp_path / "one", tmp_path / "two"
    transfer.finetune(train, val, one, weights=notop, epochs=1, **SMALL)
    model, _ = transfer.finetune(train, val, two, weights=notop, epochs=2, **SMALL)
    folder_two = runs.RunFolder(two)
    os.replace(two / runs.CHECKPOINT, folder_two.staged(runs.CHECKPOINT))
    (two / runs.CHECKPOINT).write_bytes((one / runs.CHECKPOINT).read_bytes())
    before = sorted((p.name, p.stat().st_mtime_ns) for p in two.iterdir())
    loaded, record = transfer.load_run(two)
    assert record["epoch"] == 2
    for (k, a), b in zip(params(model).items(), params(loaded).values()):
        np.testing.assert_array_equal(a, b, err_msg=k)
    assert sorted((p.name, p.stat().st_mtime_ns) for p in two.iterdir()) == before
    folder_two.staged(runs.CHECKPOINT).unlink()  # now neither file is epoch 2's
    with pytest.raises(TrainingError, match="checkpoint.h5 differs from the file of epoch 2 that record.json names"):
        transfer.load_run(two)


# ---- per-block rates, two phases, BatchNorm rules -------------------------------
def test_block_learning_rates_spread_geometrically_from_the_head_down_to_lr_over_m():
    assert transfer.block_learning_rates(0.01, 10, 0) == [0.01]
    np.testing.assert_allclose(transfer.block_learning_rates(0.01, 10, 2), [0.001, 0.01 / 10 ** 0.5, 0.01])
    np.testing.assert_allclose(transfer.block_learning_rates(0.01, 1, 3), [0.01] * 4)


def test_make_optimizer_gives_each_unfrozen_block_its_group():
    model = transfer.build_model({"arch": "vgg16", "input_shape": [32, 32, 3], "width": 1 / 16, "num_classes": 3,
                                  "hidden": [8]})
    transfer.set_trainable_blocks(model[0], 2)
    groups = transfer.make_optimizer(model, 0.01, lr_mult=100).param_groups
    assert [g["name"] for g in groups] == ["frozen blocks", "block4", "block5", "head"]
    np.testing.assert_allclose([g["lr"] for g in groups], [1e-4, 1e-4, 1e-3, 1e-2])
    assert not groups[0]["params"]
    block4 = {id(p) for layer in model[0].blocks()["block4"] for p in layer.parameters()}
    assert {id(p) for p in groups[1]["params"]} == block4
    every = [p for g in groups for p in g["params"]]
    assert len(every) == len({id(p) for p in every}) == len(model.trainable_parameters())


def test_train_bn_keeps_the_batchnorm_of_frozen_blocks_training_in_a_group_of_its_own():
    from minitl.applications import MobileNetV2
    from minitl.nn import BatchNormalization
    base = MobileNetV2(include_top=False, input_shape=(32, 32, 3), alpha=0.35)
    model = transfer.Sequential([base, transfer.build_head(3, hidden=(8,))], input_shape=(32, 32, 3))
    transfer.set_trainable_blocks(base, 1, train_bn=True)
    last = set(map(id, list(base.blocks().values())[-1]))
    for layer in base.layers():
        if layer.parameters():
            trains = any(p.requires_grad for p in layer.parameters())
            assert trains == (id(layer) in last or isinstance(layer, BatchNormalization)), layer.name
    groups = transfer.make_optimizer(model, 0.01, lr_mult=10).param_groups
    assert groups[0]["name"] == "frozen blocks" and groups[0]["lr"] == pytest.approx(1e-3)
    assert groups[0]["params"] and all(p.name in ("gamma", "beta") for p in groups[0]["params"])
    transfer.set_trainable_blocks(base, 1)  # Keras' rule: frozen BatchNormalization is frozen
    assert not any(p.requires_grad for m in base.modules() if isinstance(m, BatchNormalization)
                   and id(m) not in last for p in m.parameters())


TWO_PHASES = dict(SMALL, epochs=2, freeze_epochs=2, unfreeze_blocks=2, schedule="onecycle", optimizer="adam",
                  lr=1e-3, lr_mult=10)


def test_two_phases_train_the_head_on_cached_features_then_the_blocks(folder, notop, tmp_path, monkeypatch):
    train, val = datasets(folder)
    seen = []
    real = T.train_epoch

    def watch(loop):  # which weights each epoch trains
        seen.append((loop.epoch, loop.train_loader.dataset[0][0].shape))
        return real(loop)

    monkeypatch.setattr(T, "train_epoch", watch)
    model, record = transfer.finetune(train, val, tmp_path / "run", weights=notop, **TWO_PHASES)
    assert record["epoch"] == 4 and record["status"] == "finished" and record["feature_cache"]
    assert (tmp_path / "run" / "features.h5").is_file()
    # epochs 1-2: the head on features (1x1x32); epochs 3-4: the whole model on 32x32 images
    assert seen == [(0, (1, 1, 32)), (1, (1, 1, 32)), (2, (32, 32, 3)), (3, (32, 32, 3))]
    stored = {e.name: e.arrays for e in io.read_keras_weights(notop)}
    np.testing.assert_array_equal(model[0].get_layer("block3_conv1").kernel.data, stored["block3_conv1"][0])
    assert not np.array_equal(model[0].get_layer("block5_conv1").kernel.data, stored["block5_conv1"][0])
    assert record["training"]["freeze_epochs"] == 2 and record["training"]["lr_mult"] == 10


@pytest.mark.parametrize("stop", [1, 2, 3])  # in phase 1, at the switch, in phase 2
def test_a_two_phase_run_resumes_bit_for_bit_in_either_phase(folder, notop, tmp_path, monkeypatch, stop):
    train, val = datasets(folder)
    full, _ = transfer.finetune(train, val, tmp_path / "full", weights=notop, **TWO_PHASES)
    restore = interrupt_at(monkeypatch, stop)
    with pytest.raises(KeyboardInterrupt):
        transfer.finetune(train, val, tmp_path / "cut", weights=notop, **TWO_PHASES)
    assert json.loads((tmp_path / "cut" / "record.json").read_text())["epoch"] == stop
    restore()
    resumed, record = transfer.finetune(train, val, tmp_path / "cut", resume=True, **TWO_PHASES)
    assert record["epoch"] == 4 and record["status"] == "finished"
    for (k, a), b in zip(params(full).items(), params(resumed).values()):
        np.testing.assert_array_equal(a, b, err_msg=k)


def test_a_warmup_longer_than_a_phase_is_refused(folder, notop, tmp_path):
    train, val = datasets(folder)
    with pytest.raises(TrainingError, match=r"warm-up of 2 epochs must be shorter than each phase \(the shortest has"):
        transfer.finetune(train, val, tmp_path / "run", weights=notop, **dict(TWO_PHASES, warmup_epochs=2))


def test_a_record_of_an_earlier_version_resumes_with_its_own_rules():
    record = {"model": {"arch": "vgg16"}, "seed": 0, "image_size": [32, 32], "epoch": 2,
              "training": {"epochs": 5, "lr": 0.01, "base_lr": 0.001, "unfreeze_blocks": 2}}
    settings = runs.Settings.from_record(record)
    assert settings.lr_mult == pytest.approx(10) and settings.freeze_epochs == 0 and settings.schedule == "none"
    assert settings.phases() == [(0, 5, 2)]


def test_find_lr_sweeps_the_first_phase_and_writes_its_files(folder, notop, tmp_path):
    train, _ = datasets(folder)
    result = transfer.find_lr(train, tmp_path / "lr", weights=notop, num=20, **dict(SMALL, batch_size=2))
    assert result["trained"] == "the head" and 2 <= result["batches"] <= 20
    assert result["lrs"][0] == pytest.approx(1e-7)
    saved = json.loads((tmp_path / "lr" / "lr_find.json").read_text())
    assert saved["valley"] == result["valley"] and saved["minimum"] == result["minimum"]
    assert (tmp_path / "lr" / "features.h5").is_file()
    if importlib.util.find_spec("matplotlib"):
        assert (tmp_path / "lr" / "lr_find.png").read_bytes()[:4] == b"\x89PNG"


# ---- class imbalance ----------------------------------------------------------------
def unbalanced(counts):
    labels = np.repeat(np.arange(len(counts)), counts)
    data = ArrayDataset(np.zeros((len(labels), 32, 32, 3), np.float32), labels)
    data.classes = [f"c{i}" for i in range(len(counts))]
    return data


def test_balanced_class_weights_make_every_class_weigh_the_same(tmp_path):
    data = unbalanced([40, 20, 10, 5, 5])
    w = transfer.class_weights(runs.Settings(class_weight="balanced"), data)
    np.testing.assert_allclose(w, [80 / (5 * 40), 80 / (5 * 20), 80 / 50, 80 / 25, 80 / 25])
    np.testing.assert_allclose(np.array(w) * [40, 20, 10, 5, 5], 16)  # n / K for each class
    path = tmp_path / "w.json"
    write_json(path, {"c0": 1, "c1": 2, "c2": 3, "c3": 4, "c4": 0.5})
    assert transfer.class_weights(runs.Settings(class_weight=str(path)), data) == [1, 2, 3, 4, 0.5]
    write_json(path, {"c0": 1, "c1": -2})
    with pytest.raises(DataError, match=r"w\.json: no weight for c2, c3, c4"):
        transfer.class_weights(runs.Settings(class_weight=str(path)), data)
    with pytest.raises(DataError, match="not 'balanced' nor a readable JSON file"):
        transfer.class_weights(runs.Settings(class_weight="equal"), data)


def test_balanced_sampling_draws_the_classes_evenly_and_the_same_on_every_pass():
    from minitl.data import DataLoader
    data = unbalanced([40, 20, 10, 5, 5])
    loader = DataLoader(data, 16, seed=3, balanced=True)
    drawn = np.concatenate([loader.order(e) for e in range(50)])
    shares = np.bincount(data.labels[drawn], minlength=5) / len(drawn)
    np.testing.assert_allclose(shares, 0.2, atol=0.02)
    np.testing.assert_array_equal(loader.order(7), DataLoader(data, 16, seed=3, balanced=True).order(7))
    assert not np.array_equal(loader.order(7), loader.order(8))


def test_an_unbalanced_training_set_is_warned_about_naming_both_options(tmp_path):
    data = unbalanced([13, 4])
    with pytest.warns(UserWarning, match=r"c0 has 13 training images, c1 4; --class-weight balanced or "
                                         r"--balanced-sampling"):
        transfer.finetune(data, None, tmp_path / "run", epochs=1, **SMALL)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        transfer.finetune(data, None, tmp_path / "run", epochs=1, class_weight="balanced", **SMALL)
        transfer.finetune(unbalanced([12, 4]), None, tmp_path / "run", epochs=1, **SMALL)  # 3 times: no warning


def test_augmentation_leaves_the_frozen_phase_its_cache_and_is_recorded(folder, notop, tmp_path):
    from minitl.data import AUGMENTATIONS, train_val_folders
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train, val = train_val_folders(folder, (32, 32), 0.34, augment="standard")
    _, record = transfer.finetune(train, val, tmp_path / "run", weights=notop,
                                  **dict(SMALL, freeze_epochs=1, unfreeze_blocks=1, epochs=1, augment="standard"))
    assert record["feature_cache"] and record["augmentation"] == AUGMENTATIONS["standard"]
    base = transfer.build_model(record["model"])[0]
    io.load_weights(base, notop)
    with h5py.File(tmp_path / "run" / "features.h5") as f:  # the centre crops' features
        np.testing.assert_allclose(f["train/features"][()], T.predict(base, DataLoader(train.plain(), 4))[0],
                                   rtol=1e-5, atol=1e-6)
    _, single = transfer.finetune(train, val, tmp_path / "single", weights=notop,
                                  **dict(SMALL, epochs=1, augment="light"))
    assert not single["feature_cache"]  # a single frozen phase with augmentation computes its features anew
