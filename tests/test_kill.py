"""kill -9 during a fine-tuning run, at every file write and at random instants: --resume
must give the uninterrupted run's files bit for bit, and nothing of the kill may stay.

A driver process (started fresh, Numba's fork-safe workqueue threads) runs the
uninterrupted run once, then forks one child per kill point. A child kills itself with
SIGKILL just before its k-th rename (every file minitl writes ends in one rename, and an
epoch's files are renamed into place after the record), so that the k-th file's
temporary file is left behind, or is killed by the driver at a random instant. The driver
then resumes each run in its own process and compares it with the uninterrupted one.
"""
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import h5py
import numpy as np

TIMINGS = ("seconds", "images_per_s")  # the only entries of a history row allowed to differ
RUN = {  # two phases: a frozen epoch on cached features, then two with the last block unfrozen
    "weights": None,
    "freeze_epochs": 1,
    "unfreeze_blocks": 1,
    "epochs": 2,
    "optimizer": "sgd",
    "width": 1 / 16,
    "hidden": (8,),
    "batch_size": 4,
    "lr": 0.05,
    "seed": 0,
    "progress": False,
    "log": lambda *a: None,
}


def _datasets(folder):
    from minitl.data import ImageFolder

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [
            ImageFolder(folder, (32, 32), validation_split=0.34, subset=s, seed=0) for s in ("training", "validation")
        ]


def _finetune(folder, run_dir, resume=False):
    from minitl import transfer

    transfer.finetune(*_datasets(folder), run_dir, resume=resume, **RUN)


def _contents(run_dir):
    """Every array of the epoch files and the record without its timings."""
    out = {}
    for name in ("checkpoint.h5", "best.h5", "optimizer.h5"):
        with h5py.File(run_dir / name, "r") as f:
            datasets = []
            f.visititems(lambda key, d: datasets.append(key) if isinstance(d, h5py.Dataset) else None)
            out.update({f"{name}/{key}": f[key][()] for key in datasets})
    record = json.loads((run_dir / "record.json").read_text())
    for row in record["history"]:
        for key in TIMINGS:
            row.pop(key)
    record.pop("feature_seconds", None)
    out["record"] = record
    return out


def _same(a, b):
    if a.keys() != b.keys():
        return f"other entries: {sorted(a.keys() ^ b.keys())}"
    for key in a:
        if key == "record":
            if a[key] != b[key]:
                return "the records differ"
        elif a[key].dtype != b[key].dtype or a[key].tobytes() != b[key].tobytes():
            return f"{key} differs (max |d| {np.abs(a[key].astype(float) - b[key].astype(float)).max():.3g})"
    return None


def _kill_before_rename(k):
    """Make this process SIGKILL itself just before its k-th os.replace."""
    real, calls = os.replace, [0]

    def replace(src, dst):
        calls[0] += 1
        if calls[0] == k:
            os.kill(os.getpid(), signal.SIGKILL)
        real(src, dst)

    os.replace = replace


def _child(folder, run_dir, k=None):
    pid = os.fork()
    if pid == 0:
        try:
            if k is not None:
                _kill_before_rename(k)
            _finetune(folder, run_dir)
        finally:
            os._exit(0)
    return pid


def _killed(pid):
    _, status = os.waitpid(pid, 0)
    return os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


def _check(folder, run_dir, reference):
    """Resume a killed run and compare it with the uninterrupted one: None when all is right."""
    resumed = (run_dir / "record.json").is_file()
    _finetune(folder, run_dir, resume=resumed)  # before its first record, a run is started again
    left = [p.name for p in run_dir.iterdir() if p.name.startswith(".")]
    if left:
        return f"left behind: {left}"
    return _same(reference, _contents(run_dir)) or ("ok" if resumed else "ok (started again)")


def _kill_at_random(folder, run_dir, seconds):
    """Kill a run at a random instant of its first ``seconds``; a shorter one if it was done by then."""
    for _ in range(8):
        shutil.rmtree(run_dir, ignore_errors=True)
        delay = random.uniform(0, seconds)
        pid = _child(folder, run_dir)
        time.sleep(delay)
        os.kill(pid, signal.SIGKILL)
        if _killed(pid):
            return delay
        seconds /= 2
    raise AssertionError("every run finished before it was killed")


def drive(folder, out, random_kills):
    """Print the number of renames of a run, then one line per kill point: 'NAME: ok' or what
    went wrong ('again': a second uninterrupted run, which must give the same files)."""
    sys.modules["matplotlib"] = None  # no curves.png: a plot is no file of the epoch's
    folder, out = Path(folder), Path(out)
    calls, real = [0], os.replace

    def counting(src, dst):
        calls[0] += 1
        real(src, dst)

    os.replace = counting
    _finetune(folder, out / "reference")
    os.replace = real
    reference = _contents(out / "reference")
    start = time.perf_counter()  # a second run, once Numba's kernels are loaded, gives the time a child takes
    _finetune(folder, out / "again")
    seconds = time.perf_counter() - start
    print(f"renames: {calls[0]}", flush=True)
    print(f"again: {_same(reference, _contents(out / 'again')) or 'ok'}", flush=True)
    for k in range(1, calls[0] + 1):
        run_dir = out / f"rename{k}"
        killed = _killed(_child(folder, run_dir, k))
        print(f"before rename {k}: {_check(folder, run_dir, reference) if killed else 'not killed'}", flush=True)
    for i in range(random_kills):
        delay = _kill_at_random(folder, out / f"random{i}", seconds)
        print(f"random kill {i + 1} at {delay:.2f} s: {_check(folder, out / f'random{i}', reference)}", flush=True)


def test_resume_after_kill_9_at_every_write_and_at_random_equals_the_uninterrupted_run(folder, tmp_path):
    env = dict(
        os.environ,
        NUMBA_THREADING_LAYER="workqueue",
        PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[1]), str(Path(__file__).parent)]),
    )
    code = f"import test_kill; test_kill.drive({str(folder)!r}, {str(tmp_path)!r}, random_kills=3)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=env, check=False)
    lines = r.stdout.splitlines()
    assert r.returncode == 0, r.stdout + r.stderr
    renames = int(lines[0].split(": ")[1])
    assert renames >= 9  # the first record, features.h5, then 3 epochs of writes and renames
    results = dict(line.rsplit(": ", 1) for line in lines[1:])
    assert len(results) == 1 + renames + 3, r.stdout
    assert all(v.startswith("ok") for v in results.values()), r.stdout
