"""Every code reference in the docs names something that exists.

A reference is an inline code span that is a dotted name starting with `minitl.`
(`minitl.functional.softmax_cross_entropy`, `minitl.optim.SGD.step`), or a path
`minitl/….py`. Fenced code blocks are examples, not references, and are skipped.
"""
import importlib
import inspect
import re
from pathlib import Path

import pytest

import minitl

ROOT = Path(__file__).resolve().parent.parent
DOCS = ["docs/math.md", "docs/architecture.md", "docs/tutorial.md", "README.md"]
NAME = re.compile(r"`(minitl(?:\.[A-Za-z_]\w*)+)(?:\(\))?`")
PATH = re.compile(r"`(minitl/[\w/]+\.py)`")
FENCE = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)


def references(text):
    text = FENCE.sub("", text)
    return NAME.findall(text), PATH.findall(text)


def resolves(name):
    """Walk the dotted name by attribute access from the package, as a reader of `import minitl` would.

    Only a top-level module that `import minitl` does not load (`minitl.io`, say) is imported
    first; everything below it must be reachable as attributes.
    """
    parts = name.split(".")
    if len(parts) > 1 and not hasattr(minitl, parts[1]):
        try:
            importlib.import_module(f"minitl.{parts[1]}")
        except ImportError:
            return False
    obj = minitl
    try:
        for attr in parts[1:]:
            obj = getattr(obj, attr)
    except AttributeError:
        return False
    return True


def test_the_parser_finds_names_and_skips_code_blocks():
    text = "see `minitl.optim.SGD.step` and `minitl.viz.to_dot()`, not `minitl info`\n```\n`minitl.nope`\n```\n"
    assert references(text) == (["minitl.optim.SGD.step", "minitl.viz.to_dot"], [])
    assert resolves("minitl.optim.SGD.step") and resolves("minitl.check.op_cases")
    assert resolves("minitl.io.load_weights")  # a module that `import minitl` does not load
    assert not resolves("minitl.gradcheck.op_cases")  # minitl.gradcheck is the function
    assert not resolves("minitl.optim.SGD.leap") and not resolves("minitl.no_such_module.f")


@pytest.mark.parametrize("doc", DOCS)
def test_every_code_reference_resolves(doc):
    path = ROOT / doc
    if doc == "README.md" and not path.is_file():
        pytest.skip("no README.md")
    names, paths = references(path.read_text(encoding="utf8"))
    if doc.startswith("docs/"):
        assert len(names) >= 20, f"{doc}: expected many `minitl.…` references, found {len(names)}"
    broken = sorted({n for n in names if not resolves(n)} | {p for p in paths if not (ROOT / p).is_file()})
    assert not broken, f"{doc}: these code references do not resolve: {', '.join(broken)}"


ENGINE_MODULES = ["backend", "tensor", "ops", "functional", "conv", "kernels", "nn", "check"]


@pytest.mark.parametrize("name", ENGINE_MODULES)
def test_all_lists_exactly_the_public_functions_and_classes_a_module_defines(name):
    module = importlib.import_module(f"minitl.{name}")
    assert all(hasattr(module, n) for n in module.__all__), f"minitl.{name}.__all__ names a missing object"
    assert not [n for n in module.__all__ if inspect.ismodule(getattr(module, n))], "a module leaks through __all__"
    defined = {n for n, obj in vars(module).items()
               if not n.startswith("_") and (inspect.isfunction(obj) or inspect.isclass(obj))
               and obj.__module__ == module.__name__}
    assert not defined - set(module.__all__), f"minitl.{name}.__all__ misses {sorted(defined - set(module.__all__))}"
