"""A run's folder against the outside world, with real processes: stop signals (SIGTERM,
SIGHUP), a second writer on the same folder, full disks and an unprivileged user."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
TINY = ["--image-size", "32", "--width", "0.0625", "--hidden", "16", "8", "--batch-size", "4", "--optimizer", "sgd",
        "--schedule", "none", "--lr", "0.01", "--unfreeze-blocks", "0", "--quiet"]


def minitl(*args, user=None):
    """The command line of ``python -m minitl ARGS`` with this checkout's minitl, as ``user`` when given."""
    command = [sys.executable, "-m", "minitl", *map(str, args)]
    return ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *command] if user else command


ENV = dict(os.environ, PYTHONPATH=str(ROOT))


def start(*args, user=None):
    return subprocess.Popen(minitl(*args, user=user), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=ENV, cwd=ROOT)


def run(*args, user=None, timeout=120):
    return subprocess.run(minitl(*args, user=user), capture_output=True, text=True, env=ENV, cwd=ROOT,
                          timeout=timeout, check=False)


def errors(stderr):
    """stderr's lines but the warnings about the fixture's corrupt image."""
    return [line for line in stderr.splitlines() if "warning" not in line and "broken.jpg" not in line]


def wait_for_epoch(run_dir, process, epoch=1, timeout=60):
    """Wait until the run in ``run_dir`` has committed ``epoch``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        try:
            if json.loads((run_dir / "record.json").read_text())["epoch"] >= epoch:
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"{run_dir}: no epoch {epoch} after {timeout} s")


@pytest.mark.parametrize("name, status", [("SIGTERM", 143), ("SIGHUP", 129)])
def test_a_stop_signal_ends_a_run_as_ctrl_c_does(folder, notop, tmp_path, name, status):
    run_dir = tmp_path / "run"
    p = start("finetune", "--data", folder, "--weights", notop, "--out", run_dir, "--epochs", 10000, *TINY)
    wait_for_epoch(run_dir, p)
    p.send_signal(getattr(signal, name))
    out, err = p.communicate(timeout=60)
    assert p.returncode == status, err
    record = json.loads((run_dir / "record.json").read_text())
    assert record["status"] == "interrupted"
    assert f"stopped by {name}" in out.splitlines()[-1]
    assert f"the checkpoint of epoch {record['epoch']} is kept in {run_dir}; continue with --resume" in out
    assert errors(err) == [f"minitl finetune: stopped by {name}"]
    assert not [p.name for p in run_dir.iterdir() if p.name.startswith(".")]


def test_one_writer_per_run_folder_while_readers_go_on(folder, notop, tmp_path):
    run_dir = tmp_path / "run"
    first, second = (start("finetune", "--data", folder, "--weights", notop, "--out", run_dir, "--epochs", 10000,
                           *TINY) for _ in range(2))  # started together on a folder that does not exist yet
    deadline = time.monotonic() + 60
    while first.poll() is None and second.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    refused, writer = (first, second) if first.poll() is not None else (second, first)
    _, err = refused.communicate(timeout=60)
    assert refused.returncode == 1, err
    [line] = errors(err)
    assert line.startswith(f"minitl finetune: error: {run_dir} is being written by python -m minitl finetune")
    assert f"(PID {writer.pid} on " in line and line.endswith("or choose another --out")
    wait_for_epoch(run_dir, writer)
    for args in (["finetune", "--data", folder, "--out", run_dir, "--resume", *TINY],
                 ["finetune", "--data", folder, "--weights", notop, "--out", run_dir, "--epochs", 1, *TINY]):
        r = run(*args)
        assert r.returncode == 1 and f"(PID {writer.pid} on " in errors(r.stderr)[0], r.stderr
    r = run("predict", run_dir, folder / "red" / "1.jpg")  # a reader
    assert r.returncode == 0 and "red" in r.stdout, r.stderr
    assert writer.poll() is None  # untouched by the refused runs
    writer.kill()  # kill -9 leaves the lock file; the next writer takes it over
    writer.communicate()
    assert json.loads((run_dir / ".minitl.lock").read_text())["pid"] == writer.pid
    r = run("finetune", "--data", folder, "--out", run_dir, "--resume", "--epochs", 1, *TINY)
    assert r.returncode == 0, r.stderr
    assert f"note: taking over the lock of {run_dir} from python -m minitl finetune" in r.stdout
    assert f"(PID {writer.pid} on " in r.stdout and "which is no longer running" in r.stdout
    assert not (run_dir / ".minitl.lock").exists()


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of 1 MiB at tmp_path/disk (remount it with ``mount -o remount,size=...``); root only."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1M", "tmpfs", str(disk)],
                                           capture_output=True, check=False).returncode != 0:
        pytest.skip("mounting a tmpfs needs root")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def resize(disk, size):
    subprocess.run(["mount", "-o", f"remount,size={size}", str(disk)], check=True)


def epoch_files(run_dir):
    """The record's history without timings, and the bytes of each weight array of checkpoint.h5."""
    import h5py
    history = [{k: v for k, v in row.items() if k not in ("seconds", "images_per_s")}
               for row in json.loads((run_dir / "record.json").read_text())["history"]]
    arrays = {}
    with h5py.File(run_dir / "checkpoint.h5", "r") as f:
        f.visititems(lambda key, d: arrays.update({key: d[()].tobytes()}) if hasattr(d, "shape") else None)
    return history, arrays


def test_a_full_disk_keeps_the_last_epoch_and_resume_reaches_the_uninterrupted_run(folder, notop, tmp_path,
                                                                                    small_disk):
    args = ["--data", folder, "--weights", notop, "--epochs", 6, *TINY]
    reference = run("finetune", *args, "--out", tmp_path / "reference")
    assert reference.returncode == 0, reference.stderr
    run_dir = small_disk / "run"  # 1 MiB: the features and one epoch fit, not two epochs' checkpoints and best.h5
    r = run("finetune", *args, "--out", run_dir)
    assert r.returncode == 1, r.stderr
    [line] = errors(r.stderr)
    epoch = json.loads((run_dir / "record.json").read_text())["epoch"]
    assert 0 < epoch < 6, r.stdout
    assert line.startswith(f"minitl finetune: error: cannot write {run_dir}/.")
    assert line.endswith(f": the disk is full (No space left on device); the checkpoint of epoch {epoch} is kept in "
                         f"{run_dir}/checkpoint.h5; free some space, then continue with --resume: minitl finetune "
                         f"--data {folder} --out {run_dir} --resume")
    assert not [p.name for p in run_dir.iterdir() if p.name.startswith(".")]  # no temporary or staged file
    resize(small_disk, "8M")
    r = run("finetune", "--data", folder, "--out", run_dir, "--resume", "--quiet")
    assert r.returncode == 0, r.stderr
    assert epoch_files(run_dir) == epoch_files(tmp_path / "reference")


def test_a_full_disk_while_caching_features_or_exporting_is_one_line(folder, notop, tmp_path, small_disk):
    resize(small_disk, "12k")  # the record, not the feature cache
    run_dir = small_disk / "run"
    r = run("finetune", "--data", folder, "--weights", notop, "--out", run_dir, "--epochs", 1, *TINY)
    assert r.returncode == 1, r.stderr
    assert errors(r.stderr) == [
        (f"minitl finetune: error: cannot write {run_dir}/features.h5: the disk is full (No space left on device); "
         f"no epoch was finished yet; free some space, then continue with --resume: minitl finetune --data {folder} "
         f"--out {run_dir} --resume")]
    assert sorted(p.name for p in run_dir.iterdir()) == ["record.json"]
    mobile = tmp_path / "mobile"  # a base Keras can build, to export
    r = run("finetune", "--data", folder, "--arch", "mobilenet_v2", "--image-size", 32, "--width", "0.35",
            "--out", mobile, "--epochs", 1, *TINY[4:])
    assert r.returncode == 0, r.stderr
    r = run("export", mobile, "--out", small_disk / "model.h5")
    assert r.returncode == 1
    assert r.stderr.splitlines() == [(f"minitl export: error: cannot write {small_disk}/model.h5: the disk is full "
                                      f"(No space left on device)")]
    assert sorted(p.name for p in small_disk.iterdir()) == ["run"]


def overwrite(path, dataset):
    """Overwrite half of ``dataset``'s data in the HDF5 file ``path`` with random bytes."""
    import h5py
    import numpy as np
    with h5py.File(path, "r") as f:
        offset, size = f[dataset].id.get_offset(), f[dataset].id.get_storage_size() // 2
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(np.random.default_rng(0).bytes(size))


def test_a_corrupt_feature_cache_is_computed_again(folder, notop, tmp_path):
    args = ["--data", folder, "--weights", notop, *TINY]
    assert run("finetune", *args, "--epochs", 3, "--out", tmp_path / "reference").returncode == 0
    run_dir = tmp_path / "run"
    assert run("finetune", *args, "--epochs", 2, "--out", run_dir).returncode == 0
    overwrite(run_dir / "features.h5", "train/features")
    r = run("finetune", "--data", folder, "--out", run_dir, "--resume", "--epochs", 3, "--quiet")
    assert r.returncode == 0, r.stderr
    assert [line for line in r.stderr.splitlines() if "features.h5" in line] == [
        (f"minitl finetune: warning: {run_dir}/features.h5 is not the feature cache that was written "
         f"(train: its arrays differ from their sha256): computing the features again")]
    assert epoch_files(run_dir) == epoch_files(tmp_path / "reference")


def unprivileged():
    """setpriv's options that make a command a user whom file modes bind: 'nobody' when it can
    run this Python, else root without the capabilities that ignore file modes; None if neither."""
    if os.geteuid() != 0:
        return None
    for options in (["--reuid=nobody", "--regid=nogroup", "--clear-groups"],
                    ["--bounding-set=-dac_override,-dac_read_search,-fowner", "--inh-caps=-all"]):
        try:
            if subprocess.run(["setpriv", *options, sys.executable, "-c", "import h5py, minitl"], env=ENV,
                              capture_output=True, timeout=60, check=False).returncode == 0:
                return options
        except OSError:  # no setpriv
            return None
    return None


def test_permissions_as_a_normal_user_are_one_line(folder, notop, tmp_path):
    from finetune_fixtures import SMALL, datasets

    from minitl import transfer
    options = unprivileged()
    if options is None:
        pytest.skip("needs root and setpriv to run as a user whom file modes bind")

    def as_user(*args):
        return subprocess.run(["setpriv", *options, *minitl(*args)], capture_output=True, text=True, env=ENV,
                              cwd=ROOT, timeout=120, check=False)

    for path in (tmp_path, *tmp_path.parents) if "--reuid=nobody" in options else ():  # to reach the fixtures
        if path != Path("/"):
            path.chmod(path.stat().st_mode | 0o055)
    run_dir = tmp_path / "run"
    transfer.finetune(*datasets(folder), run_dir, weights=notop, epochs=1, **SMALL)
    (tmp_path / "closed").mkdir(mode=0o555)
    for path in (run_dir, *run_dir.iterdir()):
        path.chmod(0o555 if path.is_dir() else 0o444)
    r = as_user("finetune", "--data", folder, "--weights", notop, "--out", tmp_path / "closed" / "run", *TINY)
    assert errors(r.stderr) == [(f"minitl finetune: error: cannot write {tmp_path}/closed/run: this user may not "
                                 f"write in {tmp_path}/closed; choose another --out (a run can still be evaluated, "
                                 f"predicted with and exported from a read-only folder)")], r.stderr
    r = as_user("finetune", "--data", folder, "--out", run_dir, "--resume", "--epochs", 2, "--quiet")
    assert r.returncode == 1 and errors(r.stderr) == [
        (f"minitl finetune: error: cannot write {run_dir}: this user may not write in {run_dir}; choose another "
         f"--out (a run can still be evaluated, predicted with and exported from a read-only folder)")], r.stderr
    r = as_user("predict", run_dir, folder / "red" / "1.jpg")  # a read-only run still predicts
    assert r.returncode == 0 and "red" in r.stdout, r.stderr
    images = tmp_path / "images"
    for name in ("red", "green", "blue"):
        (images / name).mkdir(parents=True)
        for i in range(2):
            (images / name / f"{i}.png").write_bytes((folder / "blue" / "0.png").read_bytes())
    (images / "red" / "0.png").chmod(0)
    r = as_user("predict", run_dir, images / "red" / "0.png")
    assert r.returncode == 1 and r.stderr.splitlines() == [
        (f"minitl predict: error: cannot open image {images}/red/0.png: [Errno 13] Permission denied: "
         f"'{images}/red/0.png'")], r.stderr
    (images / "green").chmod(0)
    r = as_user("finetune", "--data", images, "--out", tmp_path / "new", *TINY)
    assert r.returncode == 1 and r.stderr.splitlines() == [
        f"minitl finetune: error: class folder(s) that this user may not read: {images}/green"], r.stderr
