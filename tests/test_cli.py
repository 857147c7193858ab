import subprocess
import sys

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
