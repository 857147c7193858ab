"""The layering of docs/architecture.md, held: every import inside minitl (top-level or
inside a function) goes to a layer its row of the table allows."""
import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "minitl"
TABLE = ROOT / "docs" / "architecture.md"


def read_table():
    """[(layer name, modules, allowed modules)] in the table's order, lowest layer first."""
    rows = []
    for line in TABLE.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 5 or not cells[2].startswith("`minitl"):
            continue
        rows.append((cells[1].lower(), re.findall(r"`(minitl[\w.]*)`", cells[2]), cells[4]))
    out = []
    for i, (layer, modules, rule) in enumerate(rows):
        named = set(re.findall(r"`(minitl[\w.]*)`", rule))
        words = set(re.findall(r"[\w/]+", re.sub(r"`[^`]*`", " ", rule).lower()))
        allowed = set(modules) | named | {"minitl.errors"}
        for j, (other, other_modules, _) in enumerate(rows):
            if other in words or ("every layer below" in rule and j < i):
                allowed |= set(other_modules)
        out.append((layer, modules, allowed))
    return out


def module_name(path):
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(name, source, is_package=False):
    """The minitl modules that the source of module ``name`` imports, anywhere in it
    (the package root itself left out)."""
    package = name if is_package else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.add(module)
            found |= {f"{module}.{a.name}" for a in node.names}  # `from . import io` imports minitl.io
    return {m for m in found if m.startswith("minitl.") and m != name}


def owner(module, listed):
    """The listed module that ``module`` is or lies inside (minitl.datasets.build -> minitl.datasets)."""
    best = None
    for m in listed:
        if (module == m or module.startswith(m + ".")) and (best is None or len(m) > len(best)):
            best = m
    return best


def violations(name, source, table, is_package=False):
    """'<module> imports <module>' for each import the table does not allow."""
    listed = {m for _, modules, _ in table for m in modules}
    allowed_by_module = {m: allowed for _, modules, allowed in table for m in modules}
    me = owner(name, listed)
    allowed = {owner(m, listed) for m in allowed_by_module[me]}
    homes = {owner(target, listed) for target in imports(name, source, is_package)}
    return [f"{name} imports {home}" for home in sorted(homes - allowed - {me, None})]


def package_files():
    return [p for p in sorted(PACKAGE.rglob("*.py")) if p.name != "__main__.py" and p != PACKAGE / "__init__.py"]


def test_the_table_lists_every_module():
    listed = {m for _, modules, _ in read_table() for m in modules}
    missing = [module_name(p) for p in package_files() if owner(module_name(p), listed) is None]
    assert not missing, f"modules without a row in {TABLE.name}: {missing}"


def test_no_module_imports_from_a_layer_its_row_does_not_allow():
    table = read_table()
    wrong = []
    for path in package_files():
        wrong += violations(module_name(path), path.read_text(), table, path.name == "__init__.py")
    assert not wrong, f"imports that {TABLE.name}'s table does not allow:\n  " + "\n  ".join(wrong)


def test_an_upward_import_is_found_even_inside_a_function():
    table = read_table()
    assert violations("minitl.nn", "def f():\n    from .transfer import finetune\n", table) \
        == ["minitl.nn imports minitl.transfer"]
    assert violations("minitl.kernels", "from minitl import io", table) == ["minitl.kernels imports minitl.io"]
    assert violations("minitl.nn", "from .tensor import Tensor\nfrom . import functional as F", table) == []
    assert violations("minitl.cli", "from .transfer import finetune", table) == []
