"""docs/tutorial.md: every part's code runs, in under a minute, and prints what the text says."""
import copy
import re
import time
from pathlib import Path

import pytest

import minitl.nn

TUTORIAL = Path(__file__).resolve().parent.parent / "docs" / "tutorial.md"
CODE = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def parts():
    text = TUTORIAL.read_text(encoding="utf8")
    return {title: CODE.findall(body) for title, body in re.findall(r"^## (Part \d+\..*?)\n(.*?)(?=^## |\Z)", text,
                                                                     re.DOTALL | re.MULTILINE)}


def test_eight_parts_each_with_code_an_exercise_and_questions():
    text = TUTORIAL.read_text(encoding="utf8")
    assert list(parts()) == [f"Part {k}. {t}" for k, t in enumerate(
        ["The model y = f(X; W)", "The loss L(W)", "The gradient and the update", "Convolution",
         "Batch normalisation", "Choosing a pretrained model", "Replacing the head and freezing",
         "Fine-tuning with a lowered learning rate, and evaluation"], 1)]
    for body in re.split(r"^## Part \d+\.", text, flags=re.MULTILINE)[1:]:
        assert "- Exercise" in body and "- Math: §" in body and "Questions. (1)" in body


@pytest.mark.parametrize("title", list(parts()))
def test_part_runs_in_under_a_minute(title, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(minitl.nn, "_rng", copy.deepcopy(minitl.nn._rng))
    start = time.perf_counter()
    for code in parts()[title]:
        exec(compile(code, f"{TUTORIAL.name}: {title}", "exec"), {"__name__": "tutorial"})  # noqa: S102 (the docs' own code)
    seconds = time.perf_counter() - start
    out = capsys.readouterr().out
    assert out and seconds < 60, f"{title} took {seconds:.0f} s"
    numbers = {"Part 1": r"by backward: (\S+)", "Part 2": r"onehot\) / N: (\S+)", "Part 4": r"the loops: (\S+)",
               "Part 5": r"closed form - graph: (\S+)"}
    key = title.split(".")[0]
    if key in numbers:
        assert float(re.search(numbers[key], out).group(1)) < 1e-9, out
    if key == "Part 8":
        assert "macro avg" in out and "confusion matrix" in out
