"""files.py: atomic writes, the temporary files a kill leaves and who removes them, strict JSON."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minitl import files, io
from minitl.nn import Dense, Sequential

KILLED_WRITE = """
import os, signal, sys
from minitl.files import atomic_write
with atomic_write(sys.argv[1]) as tmp:
    tmp.write_text("half written")
    os.kill(os.getpid(), signal.SIGKILL)
"""


def killed_while_writing(path):
    """The temporary file that a process killed by SIGKILL inside atomic_write leaves."""
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1]))
    r = subprocess.run([sys.executable, "-c", KILLED_WRITE, str(path)], env=env, timeout=120, capture_output=True,
                       check=False)
    assert r.returncode == -9, r.stderr
    left = [p for p in path.parent.iterdir() if p.name.startswith(f".{path.name}.")]
    assert len(left) == 1 and files.TEMPORARY.fullmatch(left[0].name), left
    return left[0]


def test_a_kill_leaves_a_temporary_file_that_the_next_write_in_its_folder_removes(tmp_path):
    stale = killed_while_writing(tmp_path / "weights.h5")
    assert not (tmp_path / "weights.h5").exists()
    io.save_weights(Sequential([Dense(2, name="d")], input_shape=(3,)), tmp_path / "other.h5")
    assert not stale.exists() and (tmp_path / "other.h5").is_file()
    stale = killed_while_writing(tmp_path / "record.json")
    files.write_json(tmp_path / "report.json", {"a": 1})
    assert not stale.exists()


def test_only_dead_processes_own_temporary_files_of_this_host_are_removed(tmp_path):
    live = tmp_path / f".a.h5.{files.HOST}.{os.getpid()}.abcdefgh.tmp"  # a write in progress in this process
    elsewhere = tmp_path / f".a.h5.{'0' * 8 if files.HOST != '0' * 8 else '1' * 8}.999999999.abcdefgh.tmp"
    mine_dead = tmp_path / f".a.h5.{files.HOST}.999999999.abcdefgh.tmp"
    others = [tmp_path / ".a.h5.abcdefgh.tmp", tmp_path / "a.h5.tmp", tmp_path / ".notes.txt"]
    for p in [live, elsewhere, mine_dead, *others]:
        p.write_text("x")
    assert files.remove_stale_temporaries(tmp_path) == [mine_dead]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in [live, elsewhere, *others])
    assert files.remove_stale_temporaries(tmp_path / "no such folder") == []


def strict_loads(text):
    def refuse(name):
        raise ValueError(f"{name} is not JSON")
    return json.loads(text, parse_constant=refuse)


def test_write_json_writes_null_for_nan_and_infinities(tmp_path):
    record = {"loss": float("nan"), "history": [{"val_loss": float("inf")}, {"val_loss": -float("inf")}],
              "pair": (1.5, float("nan")), "ok": 0.25, "n": 3, "name": "x"}
    files.write_json(tmp_path / "r.json", record)
    assert strict_loads((tmp_path / "r.json").read_text()) == {
        "loss": None, "history": [{"val_loss": None}, {"val_loss": None}], "pair": [1.5, None], "ok": 0.25,
        "n": 3, "name": "x"}
    with pytest.raises(ValueError, match="NaN is not JSON"):
        strict_loads(json.dumps({"loss": float("nan")}))  # the parser used above does refuse NaN
    assert np.isnan(record["loss"])  # the caller's object is left as it was


def test_link_or_copy_replaces_the_file_with_a_link_or_else_a_copy(tmp_path, monkeypatch):
    source, path = tmp_path / "shared.h5", tmp_path / "run" / "features.h5"
    source.write_bytes(b"features")
    path.parent.mkdir()
    path.write_bytes(b"an older cache")
    files.link_or_copy(source, path)
    assert path.samefile(source) and path.read_bytes() == b"features"

    def no_links(*args):
        raise OSError("hard links not supported")

    monkeypatch.setattr(os, "link", no_links)
    other = tmp_path / "copy.h5"
    files.link_or_copy(source, other)
    assert other.read_bytes() == b"features" and not other.samefile(source)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy.h5", "run", "shared.h5"]  # no temporary left
