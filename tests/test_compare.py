"""minitl compare: the table read back from the run folders, resume, missing weights, the
feature pass shared by the seeds of an arch."""
import dataclasses
import json
import re
import shutil
import sys

import numpy as np
import pytest
from finetune_fixtures import SMALL, make_folder

from minitl import demo, io, transfer
from minitl.applications import VGG16, VGG19
from minitl.cli import main
from minitl.compare import EVALUATION, compare, recommend
from minitl.data import DataLoader, ImageFolder, train_val_folders
from minitl.hub import file_name
from minitl.nn import manual_seed
from minitl.runs import BEST, Settings
from minitl.train import evaluate

SETTINGS = Settings(**{k: v for k, v in SMALL.items() if k not in ("progress", "log")}, epochs=1,
                    image_size=(32, 32))
QUIET = {"log": lambda *a: None}


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    root = tmp_path_factory.mktemp("splits") / "photos"
    for part, n in (("train", 4), ("val", 2), ("test", 2)):
        make_folder(root / part, per_class=n)
    return root


@pytest.fixture(scope="module")
def compared(splits, notop, tmp_path_factory):
    out = tmp_path_factory.mktemp("compare")
    table = compare(splits, ["vgg16"], out, SETTINGS, weights={"vgg16": notop}, seeds=2, **QUIET)
    return out, table


def test_table_numbers_come_from_the_run_folders(compared, splits):
    out, table = compared
    row = table["rows"][0]
    assert row["error"] is None and row["seeds"] == 2
    accuracies = []
    for seed in (0, 1):
        model, record = transfer.load_run(out / "vgg16" / f"seed{seed}", BEST)
        assert record["status"] == "finished" and record["seed"] == seed
        test = ImageFolder(splits / "test", (32, 32), classes=record["classes"])
        accuracies.append(evaluate(model, DataLoader(test, 32), record["classes"])["accuracy"])
    assert row["test_accuracy"] == pytest.approx(sum(accuracies) / 2)
    saved = json.loads((out / "compare.json").read_text())
    assert saved["rows"][0]["test_accuracy"] == pytest.approx(row["test_accuracy"])
    assert "vgg16" in (out / "compare.md").read_text() and "keras.io" in (out / "compare.md").read_text()
    assert row["ms_batch1"] > 0 and row["ms_batch32"] > 0 and row["multiply_adds"] > 0
    assert row["weights_bytes"] == (out / "vgg16" / "seed0" / BEST).stat().st_size
    assert table["recommendation"].startswith("most accurate: vgg16 (test accuracy")


def test_resume_skips_finished_runs_and_reads_them_back(compared, splits, notop, monkeypatch):
    out, _ = compared
    path = out / "vgg16" / "seed1" / EVALUATION
    numbers = json.loads(path.read_text())
    path.write_text(json.dumps({**numbers, "test_accuracy": 0.25}))
    trained = []
    monkeypatch.setattr(transfer, "finetune", lambda *a, **k: trained.append(a))
    try:
        table = compare(splits, ["vgg16"], out, SETTINGS, weights={"vgg16": notop}, seeds=2, resume=True, **QUIET)
    finally:
        path.write_text(json.dumps(numbers))
    first = json.loads((out / "vgg16" / "seed0" / EVALUATION).read_text())["test_accuracy"]
    assert trained == []
    assert table["rows"][0]["test_accuracy"] == pytest.approx((first + 0.25) / 2)


def test_missing_weights_do_not_stop_the_others(splits, notop, tmp_path, capsys):
    weights = tmp_path / "weights"
    weights.mkdir()
    shutil.copy(notop, weights / file_name("vgg16-notop"))
    out = tmp_path / "out"
    code = main(["compare", "--data", str(splits), "--arch", "mobilenet_v2", "vgg16", "--weights-dir", str(weights),
                 "--out", str(out), "--image-size", "32", "--width", str(1 / 16), "--hidden", "16", "8",
                 "--unfreeze-blocks", "0", "--optimizer", "sgd", "--schedule", "none", "--epochs", "1",
                 "--batch-size", "4", "--budget-ms", "1000", "--quiet"])
    printed = capsys.readouterr().out
    assert code == 0
    rows = {r["arch"]: r for r in json.loads((out / "compare.json").read_text())["rows"]}
    assert "minitl weights fetch mobilenet_v2-notop" in rows["mobilenet_v2"]["error"]
    assert rows["vgg16"]["error"] is None and rows["vgg16"]["test_accuracy"] is not None
    assert "minitl weights fetch mobilenet_v2-notop" in printed and "most accurate: vgg16" in printed
    assert (out / "vgg16" / "seed0" / BEST).is_file()


def test_an_image_size_below_the_minimum_is_refused_for_that_arch(splits, notop, tmp_path):
    table = compare(splits, ["inception_v3"], tmp_path, SETTINGS, weights={"inception_v3": notop}, **QUIET)
    assert "InceptionV3 needs inputs of at least 75x75" in table["rows"][0]["error"]
    assert table["recommendation"] == "no backbone finished: nothing to recommend"
    assert not (tmp_path / "inception_v3").exists()


def test_the_recommendation_gives_its_reason_in_numbers():
    rows = [{"arch": arch, "error": None, "test_accuracy": acc, "val_accuracy": acc, "ms_batch1": ms}
            for arch, acc, ms in (("vgg16", 0.9, 180.0), ("mobilenet_v2", 0.8, 30.0), ("resnet50", 0.7, 20.0))]
    assert recommend(rows) == "most accurate: vgg16 (test accuracy 0.900, 180.0 ms/image at batch 1)"
    assert recommend(rows, 50).endswith("; within 50 ms/image: mobilenet_v2 (test accuracy 0.800, 30.0 ms; "
                                        "vgg16 takes 180.0 ms)")
    assert recommend(rows, 10).endswith("; none within 10 ms/image (the fastest, resnet50, takes 20.0 ms)")


def test_a_compare_stopped_in_its_second_run_resumes_it_and_skips_the_first(splits, notop, tmp_path, monkeypatch):
    import minitl.train as T
    real = T.train_epoch

    def stopped(loop):  # Ctrl-C in the first epoch of seed 1's run
        if loop.record.get("seed") == 1:
            raise KeyboardInterrupt
        return real(loop)

    monkeypatch.setattr(T, "train_epoch", stopped)
    with pytest.raises(KeyboardInterrupt):
        compare(splits, ["vgg16"], tmp_path, SETTINGS, weights={"vgg16": notop}, seeds=2, **QUIET)
    first = (tmp_path / "vgg16" / "seed0" / EVALUATION).read_bytes()
    assert json.loads((tmp_path / "vgg16" / "seed1" / "record.json").read_text())["status"] == "interrupted"
    monkeypatch.setattr(T, "train_epoch", real)
    lines = []
    table = compare(splits, ["vgg16"], tmp_path, SETTINGS, weights={"vgg16": notop}, seeds=2, resume=True,
                    log=lines.append)
    assert "vgg16 seed 0: finished in" in lines[0] and any("resuming" in line for line in lines)
    assert (tmp_path / "vgg16" / "seed0" / EVALUATION).read_bytes() == first  # not trained again
    assert table["rows"][0]["seeds"] == 2 and table["rows"][0]["error"] is None


@pytest.fixture(scope="module")
def vgg19_notop(tmp_path_factory):
    manual_seed(2)
    path = tmp_path_factory.mktemp("weights19") / "notop19.h5"
    io.save_weights(VGG19(include_top=False, input_shape=(32, 32, 3), width=1 / 16), path)
    return path


def count_feature_passes(monkeypatch):
    """[(base class, 'features (train)'), ...]: one entry per dataset the frozen base is run on."""
    passes, real = [], transfer.predict

    def counted(base, loader, *args, **kwargs):
        passes.append((type(base).__name__, kwargs.get("desc")))
        return real(base, loader, *args, **kwargs)

    monkeypatch.setattr(transfer, "predict", counted)
    return passes


def test_the_seeds_of_an_arch_share_one_feature_pass(splits, notop, vgg19_notop, tmp_path, monkeypatch):
    passes = count_feature_passes(monkeypatch)
    weights = {"vgg16": notop, "vgg19": vgg19_notop}
    compare(splits, ["vgg16", "vgg19"], tmp_path / "out", SETTINGS, weights=weights, seeds=2, **QUIET)
    assert sorted(passes) == [(arch, f"features ({name})") for arch in ("VGG16", "VGG19") for name in ("train", "val")]
    shared = tmp_path / "out" / "vgg16" / "features"
    assert len(list(shared.glob("*.h5"))) == 1
    for seed in (0, 1):  # each run folder keeps its features.h5, the shared file under another name
        assert (tmp_path / "out" / "vgg16" / f"seed{seed}" / "features.h5").samefile(next(shared.glob("*.h5")))
    passes.clear()  # the same numbers as a run of its own, which computes its features itself
    train, val = train_val_folders(splits, (32, 32), seed=1, augment=SETTINGS.augment)
    _, alone = transfer.finetune(train, val, tmp_path / "alone", SETTINGS, weights=notop, seed=1, progress=False,
                                 **QUIET)
    assert passes == [("VGG16", "features (train)"), ("VGG16", "features (val)")]
    together = json.loads((tmp_path / "out" / "vgg16" / "seed1" / "record.json").read_text())
    assert [r["val_loss"] for r in together["history"]] == [r["val_loss"] for r in alone["history"]]
    assert [r["loss"] for r in together["history"]] == [r["loss"] for r in alone["history"]]


def test_a_different_base_does_not_reuse_the_shared_features(splits, notop, tmp_path, monkeypatch):
    passes = count_feature_passes(monkeypatch)
    compare(splits, ["vgg16"], tmp_path, SETTINGS, weights={"vgg16": notop}, **QUIET)
    compare(splits, ["vgg16"], tmp_path, SETTINGS, weights={"vgg16": notop}, **QUIET)  # trained again, same base
    assert len(passes) == 2
    other = tmp_path / "other.h5"
    manual_seed(5)
    io.save_weights(VGG16(include_top=False, input_shape=(32, 32, 3), width=1 / 16), other)
    compare(splits, ["vgg16"], tmp_path, SETTINGS, weights={"vgg16": other}, **QUIET)
    assert len(passes) == 4
    assert len(list((tmp_path / "vgg16" / "features").glob("*.h5"))) == 2


def test_progress_bars_per_arch_and_overall_show_on_a_terminal_only(splits, notop, tmp_path, capsys, monkeypatch):
    archs, weights = ["inception_v3", "vgg16"], {"inception_v3": notop, "vgg16": notop}  # inception_v3: too small
    compare(splits, archs, tmp_path / "a", SETTINGS, weights=weights, seeds=2, progress=True, **QUIET)
    assert capsys.readouterr().err == ""  # not a terminal: no bars
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    compare(splits, archs, tmp_path / "b", SETTINGS, weights=weights, seeds=2, progress=True, **QUIET)
    err = capsys.readouterr().err
    assert "compare: 100%" in err and "| 4/4 [" in err  # every run, the skipped arch's seeds counted
    assert "  vgg16: 100%" in err and "| 2/2 [" in err
    assert re.search(r"vgg16: +50%.*\| 1/2 \[\d\d:\d\d<\d\d:\d\d", err)  # the time left, after the first seed
    assert "epoch 1/1" in err  # each run's own bar, below them


def test_the_python_api_in_transfer_returns_the_table(splits, notop, tmp_path):
    table = transfer.compare(splits, ["vgg16"], tmp_path, SETTINGS, weights={"vgg16": notop}, seeds=2, **QUIET)
    saved = json.loads((tmp_path / "compare.json").read_text())
    assert json.loads(json.dumps(table)) == saved  # plain data
    assert [r["arch"] for r in table["rows"]] == ["vgg16"] and table["rows"][0]["seeds"] == 2
    assert table["rows"][0]["runs"] == [str(tmp_path / "vgg16" / "seed0"), str(tmp_path / "vgg16" / "seed1")]


def test_compare_demo_agrees_with_separate_demo_runs_of_the_same_seeds(tmp_path, monkeypatch, capsys):
    short = {arch: dataclasses.replace(b, recipe=dataclasses.replace(b.recipe, frozen_epochs=1, finetune_epochs=1))
             for arch, b in demo.DEMO_BASES.items()}
    monkeypatch.setattr(demo, "DEMO_BASES", short)  # the demo's recipes, shortened
    split = demo.split_target

    def fewer(images, labels, names, train, val, test, *rest):  # 10 training and 20 test images per class
        return split(images, labels, names, 10, val, 20, *rest)

    monkeypatch.setattr(demo, "split_target", fewer)
    monkeypatch.setattr(demo, "_plots", lambda *a: None)  # the pictures take a third of the time
    assert main(["compare", "--demo", "--seeds", "2", "--out", str(tmp_path / "compare"), "--quiet"]) == 0
    printed = capsys.readouterr().out
    rows = {r["arch"]: r for r in json.loads((tmp_path / "compare" / "compare.json").read_text())["rows"]}
    assert list(rows) == ["vgg16", "mobilenet_v2"]
    assert "| vgg16 | " in printed and "| mobilenet_v2 | " in printed and "most accurate: " in printed
    for arch, row in rows.items():
        alone = []
        for seed in (0, 1):  # minitl demo --arch ARCH --seed SEED, its scratch setting short
            out = tmp_path / f"{arch}-{seed}"
            assert main(["demo", "--arch", arch, "--seed", str(seed), "--epochs", "1", "--out", str(out),
                         "--quiet"]) == 0
            alone.append(json.loads((out / "results.json").read_text())["finetuned"])
        for name, key in (("test_accuracy", "accuracy"), ("test_macro_f1", "macro_f1"),
                          ("val_accuracy", "val_accuracy")):
            values = [r[key] for r in alone]
            assert row[name] == pytest.approx(np.mean(values), abs=1e-12), (arch, name)
            assert row[name + "_spread"] == pytest.approx(np.std(values, ddof=1), abs=1e-12), (arch, name)
