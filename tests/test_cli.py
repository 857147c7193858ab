import subprocess
import sys

import pytest

import minitl
from minitl.cli import main


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
    assert main(["summary", "--width", "0"]) == 1
    err = capsys.readouterr().err
    assert "width must be a positive" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("args,message", [
    (["finetune", "--data", ".", "--epochs", "0"], "--epochs: expected a whole number of at least 1, got '0'"),
    (["finetune", "--data", ".", "--hidden", "16", "0"], "--hidden: expected a whole number of at least 1"),
    (["finetune", "--data", ".", "--patience", "-1"], "--patience: expected a whole number of at least 1"),
    (["finetune", "--data", ".", "--image-size", "abc"], "--image-size: image size must be N or HxW"),
    (["evaluate", "run", "--data", ".", "--batch-size", "0"], "--batch-size: expected a whole number"),
    (["predict", "run", "x.jpg", "--top", "0"], "--top: expected a whole number of at least 1"),
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
