import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from finetune_fixtures import interrupt_at, params

import minitl
from minitl import io, transfer
from minitl.applications import VGG16
from minitl.cli import main
from minitl.nn import manual_seed


def test_version_and_info(capsys):
    try:
        main(["--version"])
    except SystemExit as e:
        assert e.code == 0
    assert minitl.__version__ in capsys.readouterr().out
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for key in ("numpy", "numba", "threads", "gpu"):
        assert key in out


def test_console_entry_point_runs():
    r = subprocess.run([sys.executable, "-m", "minitl.cli", "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "info" in r.stdout


def test_cpu_only_import_does_not_load_cupy():
    code = "import sys, minitl, minitl.functional; print('cupy' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.stdout.strip() == "False", r.stderr


def test_weights_list_shows_the_published_files(tmp_path, capsys):
    assert main(["weights", "list", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for name in ("vgg16", "vgg16-notop", "imagenet-class-index"):
        assert name in out
    assert "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5" in out and "missing" in out


def test_summary_of_the_standard_vgg16_without_top(capsys):
    assert main(["summary", "--notop"]) == 0
    out = capsys.readouterr().out
    assert "block5_pool" in out and "Total params: 14,714,688" in out


def test_summary_rejects_a_width_that_is_not_positive(capsys):
    with pytest.raises(SystemExit) as e:
        main(["summary", "--width", "0"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "argument --width: expected a number in (0, 4.0], got '0'" in err


@pytest.mark.parametrize("args,message", [
    (["finetune", "--data", ".", "--epochs", "0"], "--epochs: expected a whole number of at least 1, got '0'"),
    (["finetune", "--data", ".", "--hidden", "16", "0"], "--hidden: expected a whole number in [1, 65536], got '0'"),
    (["finetune", "--data", ".", "--patience", "-1"], "--patience: expected a whole number of at least 1"),
    (["finetune", "--data", ".", "--image-size", "abc"], "--image-size: image size must be N or HxW"),
    (["evaluate", "run", "--data", ".", "--batch-size", "0"], "--batch-size: expected a whole number"),
    (["predict", "run", "x.jpg", "--top", "0"], "--top: expected a whole number of at least 1"),
    (["finetune", "--data", ".", "--width", "inf"], "--width: expected a number in (0, 4.0], got 'inf'"),
    (["finetune", "--data", ".", "--image-size", "20000"], ("--image-size: image size must be N or HxW, whole "
                                                            "numbers from 1 to 2048, got '20000'")),
    (["finetune", "--data", ".", "--seed", "-1"], "--seed: expected a whole number in [0, 4294967295], got '-1'"),
    (["finetune", "--data", ".", "--momentum", "1"], "--momentum: expected a number in [0, 1), got '1'"),
    (["finetune", "--data", ".", "--dropout", "nan"], "--dropout: expected a number in [0, 1), got 'nan'"),
    (["finetune", "--data", ".", "--validation-split", "0"], "--validation-split: expected a number in (0, 1)"),
    (["finetune", "--data", ".", "--lr", "inf"], "--lr: expected a number above 0, got 'inf'"),
    (["finetune", "--data", ".", "--weight-decay", "-1"], "--weight-decay: expected a number of at least 0"),
    (["finetune", "--data", ".", "--clip-norm", "0"], "--clip-norm: expected a number above 0, got '0'"),
    (["finetune", "--data", ".", "--hidden", "100000"], "--hidden: expected a whole number in [1, 65536]"),
    (["demo", "--train-per-class", "0"], "--train-per-class: expected a whole number of at least 1"),
    (["demo", "--arch", "resnet50"], "--arch: invalid choice: 'resnet50'"),
    (["summary", "--width", "1e400"], "--width: expected a number in (0, 4.0], got '1e400'"),
])
def test_bad_numbers_are_refused_by_the_parser(args, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_weights_that_are_a_folder(tmp_path, capsys):
    (tmp_path / "photos" / "a").mkdir(parents=True)
    assert main(["finetune", "--data", str(tmp_path / "photos"), "--weights", str(tmp_path)]) == 1
    assert f"weights file {tmp_path} is not a file" in capsys.readouterr().err


def test_python_dash_m_minitl_and_a_closed_pipe():
    # python -m minitl is the minitl command; output into a pipe whose reader has gone
    # (minitl summary | head -1) ends quietly, with no "Broken pipe" error
    p = subprocess.Popen([sys.executable, "-m", "minitl", "summary", "--notop"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()
    err = p.stderr.read()
    p.stderr.close()
    assert p.wait(timeout=60) == 0 and err == b""


# ---- finetune, evaluate, predict on tiny image folders ---------------------------------

def test_cli_finetune_evaluate_predict(folder, notop, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["finetune", "--data", str(folder), "--weights", str(notop), "--out", str(run), "--epochs", "2",
            "--image-size", "32", "--width", "0.0625", "--hidden", "16", "8", "--batch-size", "4", "--quiet",
            "--optimizer", "adam"]
    assert main(args) == 0
    training = json.loads((run / "record.json").read_text())["training"]
    assert training["optimizer"] == "adam" and training["lr"] == 0.003
    with h5py.File(run / "optimizer.h5") as f:
        assert f.attrs["optimizer"] == "Adam" and set(f["buffers"]) == {"m", "v", "step"}
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
    (["finetune", "--data", ".", "--device", "tpu"], "unknown device 'tpu'"),
    (["demo", "--weights", "/no/such.h5"], "pretrained demo weights /no/such.h5 does not exist"),
    (["demo", "--arch", "mobilenet_v2", "--weights", "/no/such.h5"],
     "/no/such.h5 does not exist (minitl demo --arch mobilenet_v2 --pretrain builds them)"),
])
def test_cli_errors_are_one_line_without_traceback(args, message, capsys):
    assert main(args) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("args,message", [
    (["--lr", "-0.1"], "argument --lr: expected a number above 0, got '-0.1'"),
    (["--lr-mult", "0.5"], "argument --lr-mult: expected a number of at least 1, got '0.5'"),
    (["--schedule", "linear"], "argument --schedule: invalid choice: 'linear'"),
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


def test_cli_weights_without_some_layers_name_the_option_that_allows_it(folder, tmp_path, capsys):
    from minitl.nn import Sequential
    manual_seed(0)
    partial = tmp_path / "partial.h5"
    base = VGG16(include_top=False, input_shape=(32, 32, 3), width=1 / 16)
    io.save_weights(Sequential(base.layers()[:9]), partial)  # blocks 1 to 3 only
    args = ["finetune", "--data", str(folder), "--weights", str(partial), "--out", str(tmp_path / "r"),
            "--image-size", "32", "--width", "0.0625", "--epochs", "1", "--quiet"]
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if "error" in line]  # after the folder's warning about its broken image
    assert len(errors) == 1 and errors == err[-1:] and "Traceback" not in "".join(err)
    err = errors[0]
    assert "has no weights for 6 layers of the vgg16 base" in err and "--allow-partial-weights" in err
    assert "block4_conv1, block4_conv2" in err and "strict=False" not in err
    assert main(args + ["--allow-partial-weights"]) == 0
    assert "kept their initial weights (not in" in capsys.readouterr().out


def test_every_subcommand_has_help(capsys):
    for cmd in (["finetune"], ["evaluate"], ["predict"], ["summary"], ["weights", "fetch"], ["weights", "list"],
                ["demo"], ["info"]):
        with pytest.raises(SystemExit) as e:
            main(cmd + ["--help"])
        assert e.value.code == 0
        assert "usage: minitl" in capsys.readouterr().out


def test_cli_resume_uses_the_recorded_settings(folder, notop, tmp_path, monkeypatch):
    args = ["finetune", "--data", str(folder), "--weights", str(notop), "--epochs", "3", "--image-size", "32",
            "--width", "0.0625", "--hidden", "16", "8", "--batch-size", "4", "--schedule", "cosine",
            "--dropout", "0.5", "--seed", "3", "--freeze-epochs", "2", "--quiet"]
    assert main(args + ["--out", str(tmp_path / "full")]) == 0
    restore = interrupt_at(monkeypatch, 3)  # in the second phase
    assert main(args + ["--out", str(tmp_path / "cut")]) == 130
    restore()
    # only the folders: width, head, image size, epochs, schedule and seed come from record.json
    assert main(["finetune", "--data", str(folder), "--out", str(tmp_path / "cut"), "--resume", "--quiet"]) == 0
    full, _ = transfer.load_run(tmp_path / "full")
    resumed, record = transfer.load_run(tmp_path / "cut")
    assert record["status"] == "finished" and record["epoch"] == 5
    for (k, a), b in zip(params(full).items(), params(resumed).values()):
        np.testing.assert_array_equal(a, b, err_msg=k)


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
    missing = tmp_path / "missing.jpg"
    assert len(lines) == 2 and lines[0] == f"minitl predict: error: image file {missing} does not exist"
    assert lines[1].startswith(f"minitl predict: error: cannot decode image {folder / 'red' / 'broken.jpg'}: ")


# ---- bad files and names ---------------------------------------------------------------


def one_error_line(capsys, *names):
    """The error output: one error line (after any warnings), naming ``names``, no traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err and len([line for line in err.splitlines() if ": error: " in line]) == 1, err
    for name in names:
        assert str(name) in err, err
    return err


@pytest.mark.parametrize("text", ['{"classes": ["a", "b"], "ima', "[1, 2]", '{"classes": "ab"}', "\xff\xfe"])
def test_a_broken_record_is_one_line_naming_the_file(folder, tmp_path, capsys, text):
    run = tmp_path / "run"
    run.mkdir()
    (run / "record.json").write_bytes(text.encode("latin-1"))
    assert main(["evaluate", str(run), "--data", str(folder)]) == 1
    one_error_line(capsys, run / "record.json")
    assert main(["finetune", "--data", str(folder), "--out", str(run), "--resume"]) == 1
    one_error_line(capsys, run / "record.json")


def test_data_that_is_a_file_is_named_as_not_a_folder(tmp_path, capsys):
    (tmp_path / "photos").write_text("not a folder")
    assert main(["finetune", "--data", str(tmp_path / "photos")]) == 1
    one_error_line(capsys, f"data folder {tmp_path / 'photos'} is not a folder")


def test_strict_loading_says_what_it_loaded_and_partial_loading_lists_what_it_did_not(folder, notop, tmp_path, capsys):
    args = [
        "finetune",
        "--data",
        str(folder),
        "--epochs",
        "1",
        "--image-size",
        "32",
        "--width",
        "0.0625",
        "--hidden",
        "8",
        "--quiet",
    ]
    assert main([*args, "--weights", str(notop), "--out", str(tmp_path / "full")]) == 0
    assert f"loaded 13 layers from {notop}" in capsys.readouterr().out
    lacking = tmp_path / "lacking.h5"  # the published layout without block5_conv3
    io.write_keras_weights(
        lacking,
        [
            (e.name, list(zip(("kernel", "bias"), e.arrays)))
            for e in io.read_keras_weights(notop)
            if e.name != "block5_conv3"
        ],
    )
    assert main([*args, "--weights", str(lacking), "--out", str(tmp_path / "strict")]) == 1
    assert "block5_conv3" in one_error_line(capsys, lacking)
    assert not (tmp_path / "strict").exists()
    assert main([*args, "--weights", str(lacking), "--out", str(tmp_path / "partial"), "--allow-partial-weights"]) == 0
    out = capsys.readouterr().out
    assert f"loaded 12 layers from {lacking}" in out
    assert f"kept their initial weights (not in {lacking}): block5_conv3" in out


# the smallest finetune that runs: one epoch of a 1/16-width VGG16 at 32x32 with an 8-unit head
TINY_RUN = ["--epochs", "1", "--image-size", "32", "--width", "0.0625", "--hidden", "8", "--quiet"]


def test_predict_reports_a_folder_without_images_and_classifies_the_rest(folder, notop, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["finetune", "--data", str(folder), "--weights", str(notop), "--out", str(run), *TINY_RUN]) == 0
    capsys.readouterr()
    (tmp_path / "folder.jpg").mkdir()
    image = folder / "blue" / "1.jpg"
    assert main(["predict", str(run), str(tmp_path / "folder.jpg"), str(image), "--top", "1"]) == 1
    out, err = capsys.readouterr()
    assert out.splitlines()[0] == str(image) and len(out.splitlines()) == 2
    assert "Traceback" not in err and len(err.splitlines()) == 1 and str(tmp_path / "folder.jpg") in err


NAMES_SCRIPT = """
import sys
from minitl.cli import main
data, run, image = sys.argv[1:]
code = main(["finetune", "--data", data, "--out", run, "--epochs", "1", "--image-size", "32", "--width", "0.0625",
             "--hidden", "8", "--quiet"])
sys.exit(code or main(["predict", run, image, "--top", "3"]))
"""


def test_names_that_are_not_utf8_are_printed_escaped_on_a_strict_utf8_output(folder, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(folder, data)
    odd = os.fsdecode(b"caf\xe9")  # a Latin-1 folder name: not UTF-8, so it decodes to a surrogate
    os.rename(data / "red", data / odd)
    image = data / odd / os.fsdecode(b"\xff.png")
    os.rename(data / odd / "0.png", image)
    env = dict(os.environ, PYTHONIOENCODING="utf-8:strict", PYTHONPATH=str(Path(__file__).parents[1]))
    r = subprocess.run(
        [sys.executable, "-c", NAMES_SCRIPT, str(data), str(tmp_path / "run"), str(image)],
        env=env,
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert r.returncode == 0, r.stderr.decode("utf-8", "replace")
    assert b"classes: blue, caf\\udce9, green" in r.stdout and b"\\udcff.png" in r.stdout
    assert b"caf\\udce9" in r.stdout.split(b"\\udcff.png")[-1]  # the class is among the top 3 predicted
    assert b"Traceback" not in r.stderr


def test_outputs_that_are_the_wrong_kind_of_path(folder, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    assert main(["finetune", "--data", str(folder), "--out", str(tmp_path / "afile")]) == 1
    one_error_line(capsys, f"run directory --out {tmp_path / 'afile'} is a file, not a folder")
    run = tmp_path / "run"
    assert main(["finetune", "--data", str(folder), "--out", str(run), *TINY_RUN]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run), "--data", str(folder), "--out", str(tmp_path), "--quiet"]) == 1
    one_error_line(capsys, f"cannot write a file: a folder has its name: '{tmp_path}'")


def test_cli_lr_find_prints_the_suggestions_and_writes_its_files(folder, notop, tmp_path, capsys):
    out = tmp_path / "lr"
    assert main(["lr-find", "--data", str(folder), "--weights", str(notop), "--out", str(out), "--image-size", "32",
                 "--width", "0.0625", "--hidden", "8", "--batch-size", "2", "--batches", "30", "--quiet"]) == 0
    text = capsys.readouterr().out
    saved = json.loads((out / "lr_find.json").read_text())
    assert f"suggested --lr: {saved['minimum']:.2g} (the minimum's rate / 10; the valley rule gives " \
           f"{saved['valley']:.2g})" in text
    assert "the settings use 0.003" in text and saved["trained"] == "the head"
    with pytest.raises(SystemExit) as e:
        main(["lr-find", "--help"])
    assert e.value.code == 0 and "--freeze-epochs" in capsys.readouterr().out


def test_cli_evaluate_shows_the_errors_and_tta_averages_six_views(folder, notop, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["finetune", "--data", str(folder), "--weights", str(notop), "--out", str(run), "--freeze-epochs", "1",
                 "--epochs", "1", "--image-size", "32", "--width", "0.0625", "--hidden", "8", "--batch-size", "4",
                 "--quiet"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run), "--data", str(folder), "--quiet", "--top-losses", "4"]) == 0
    out = capsys.readouterr().out
    report = json.loads((run / "evaluation.json").read_text())
    rows = (run / "errors.csv").read_text().splitlines()
    wrong = sum(map(sum, report["confusion_matrix"])) - sum(report["confusion_matrix"][i][i] for i in range(3))
    assert rows[0] == "file,true,predicted,probability,loss" and len(rows) == 1 + wrong
    losses = [float(row.split(",")[-1]) for row in rows[1:]]
    assert losses == sorted(losses, reverse=True) and all(loss > 0 for loss in losses)
    for pair in report["most_confused"]:
        assert f"  {pair['true']} → {pair['predicted']}: {pair['count']}, {pair['share']:.0%}" in out
    if wrong:
        assert report["most_confused"] and f"{wrong} misclassified images" in out
    if importlib.util.find_spec("matplotlib"):
        assert (run / "top_losses.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["evaluate", str(run), "--data", str(folder), "--quiet", "--tta", "--out",
                 str(tmp_path / "tta.json")]) == 0
    tta = json.loads((tmp_path / "tta.json").read_text())
    assert tta["tta"] and not report["tta"] and tta["loss"] != report["loss"]
    image = next((folder / "green").glob("*.png"))
    capsys.readouterr()
    assert main(["predict", str(run), str(image), "--tta"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == str(image)
