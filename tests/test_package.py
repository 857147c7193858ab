"""The package as a user meets it: `import minitl as mt` reaches every public module,
and stays light."""
import importlib
import pkgutil
import subprocess
import sys

import minitl


def test_every_public_module_is_an_attribute_of_the_package():
    public = {m.name for m in pkgutil.iter_modules(minitl.__path__) if not m.name.startswith("_")}
    assert public <= set(minitl.LAZY_MODULES) | {"functional", "ops", "optim", "check"}
    for name in sorted(public):
        assert getattr(minitl, name) is importlib.import_module(f"minitl.{name}"), name
        assert name in dir(minitl)
    assert minitl.applications.VGG16 is minitl.applications.vgg16.VGG16
    assert minitl.check.op_cases is importlib.import_module("minitl.check").op_cases


def test_an_unknown_attribute_is_an_attribute_error():
    try:
        _ = minitl.no_such_module
    except AttributeError as e:
        assert "no_such_module" in str(e)
    else:
        raise AssertionError("minitl.no_such_module did not raise")


def test_import_minitl_loads_neither_h5py_nor_pillow_nor_cupy():
    code = ("import sys, minitl as mt; mt.nn, mt.optim, mt.metrics; "
            "print(sorted(m for m in ('h5py', 'PIL', 'cupy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
