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


MISTAKES = {  # task file: (solution line, the typical mistake, a check that must catch it)
    "task01_backward.py": ("grads[id(x)] = grads[id(x)] + gx if id(x) in grads else gx", "grads[id(x)] = gx",
                           "test_task01_walk_gives_the_engines_gradients_when_nodes_are_read_twice"),
    "task02_broadcast_backward.py": ("return grad.sum(axis=stretched, keepdims=True) if stretched else grad",
                                     "return grad", "test_task02_add_backward[shapes0]"),
    "task03_activations.py": ("return np.where(x >= 0, 1 / (1 + e), e / (1 + e))", "return 1 / (1 + np.exp(-x))",
                              "test_task03_sigmoid_is_exact_on_both_tails"),
    "task05_sgd.py": ("v = p.grad.copy() if v is None else self.momentum * v + p.grad", "v = p.grad",
                      "test_task05_steps_match_the_engines_sgd[0.9]"),
    "task07_conv_backward.py": ("sw, :] += blocks", "sw, :] = blocks",
                                "test_task07_col2im_is_the_adjoint_of_im2col"),
    "task09_batchnorm.py": ("(gy - gy.mean(axis=axes, keepdims=True) - x_hat", "(gy - x_hat",
                            "test_task09_matches_the_engine_and_the_chain_of_primitive_ops"),
}


def test_the_checks_catch_typical_mistakes(tmp_path):
    folder = tmp_path / "mistakes"
    folder.mkdir()
    for path in SOLUTIONS.glob("task*.py"):
        text = path.read_text(encoding="utf8")
        if path.name in MISTAKES:
            right, wrong, _ = MISTAKES[path.name]
            assert right in text, f"{path.name} no longer holds {right!r}"
            text = text.replace(right, wrong)
        (folder / path.name).write_text(text, encoding="utf8")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["MINITL_EXERCISES"] = str(folder)
    tasks = " or ".join(name[:6] for name in MISTAKES)
    done = subprocess.run([sys.executable, "-m", "pytest", "exercises", "-q", "-p", "no:cacheprovider", "-rf",
                           "-k", tasks], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    failed = [line for line in done.stdout.splitlines() if line.startswith("FAILED ")]
    for name, (_, wrong, check) in MISTAKES.items():
        assert any(f"::{check}" in line for line in failed), \
            f"{check} passed with {wrong!r} in {name}:\n{done.stdout[-3000:]}"
