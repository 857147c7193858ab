"""The exercises are tested: every check of exercises/checks/ passes on the project's solutions
(tests/exercise_solutions/) and fails on the untouched stubs (exercises/task*.py), each on a
task's NotImplementedError, so that no check can pass without the student's code."""
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXERCISES = ROOT / "exercises"
SOLUTIONS = ROOT / "tests" / "exercise_solutions"
TASKS = [f"task{k:02d}" for k in range(1, 13)]


def run_checks(report, solutions):
    """{check id: (outcome, message)} of ``python -m pytest exercises``, on the solutions or on the stubs."""
    env = {k: v for k, v in os.environ.items() if k != "MINITL_EXERCISES"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))   # this checkout's minitl
    if solutions:
        env["MINITL_EXERCISES"] = str(SOLUTIONS)
    done = subprocess.run([sys.executable, "-m", "pytest", "exercises", "-q", "-p", "no:cacheprovider",
                           f"--junitxml={report}"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert report.is_file(), done.stdout[-3000:] + done.stderr[-3000:]
    results = {}
    for case in ET.parse(report).iter("testcase"):
        problems = [c for c in case if c.tag in ("failure", "error")]
        outcome = "failed" if problems else "skipped" if case.find("skipped") is not None else "passed"
        text = " ".join((c.get("message") or "") + (c.text or "") for c in problems)
        results[f"{case.get('classname')}::{case.get('name')}"] = outcome, text
    return results


@pytest.fixture(scope="module")
def on_solutions(tmp_path_factory):
    return run_checks(tmp_path_factory.mktemp("checks") / "solutions.xml", solutions=True)


@pytest.fixture(scope="module")
def on_stubs(tmp_path_factory):
    return run_checks(tmp_path_factory.mktemp("checks") / "stubs.xml", solutions=False)


def only(path, pattern):
    found = sorted(path.glob(pattern))
    assert len(found) == 1, f"{path}: expected one {pattern}, found {[p.name for p in found]}"
    return found[0]


@pytest.mark.parametrize("task", TASKS)
def test_each_task_has_a_stub_a_solution_and_checks(task):
    stub = only(EXERCISES, f"{task}_*.py")
    assert (SOLUTIONS / stub.name).is_file(), f"no solution for {stub.name}"
    assert only(EXERCISES / "checks", f"test_{task}_*.py")
    text = stub.read_text(encoding="utf8")
    assert "raise NotImplementedError" in text and f"python -m pytest exercises -k {task}" in text


def test_every_check_passes_on_the_solutions(on_solutions):
    failed = {k: v[1][:500] for k, v in on_solutions.items() if v[0] != "passed"}
    assert not failed, f"checks that do not pass on tests/exercise_solutions: {failed}"
    for task in TASKS:
        assert sum(task in k for k in on_solutions) >= 2, f"{task} has fewer than two checks"


def test_every_check_fails_on_the_untouched_stubs(on_stubs, on_solutions):
    assert set(on_stubs) == set(on_solutions)
    passed = sorted(k for k, (outcome, _) in on_stubs.items() if outcome != "failed")
    assert not passed, (f"these checks did not fail on exercises/: {passed}; if the stubs were filled in, "
                        "`git stash` or `git checkout exercises/` gives the untouched ones back")
    elsewhere = sorted(k for k, (_, text) in on_stubs.items() if "NotImplementedError" not in text)
    assert not elsewhere, f"these checks failed on the stubs, but not on a task's NotImplementedError: {elsewhere}"
