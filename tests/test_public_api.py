"""The learner's package: what it exports, and that a plain ``pip install .`` (no extras) imports all of it."""

import importlib
import pkgutil
import subprocess
import sys

import pytest

import transferlab

MODULES = sorted(m.name for m in pkgutil.iter_modules(transferlab.__path__) if not m.name.startswith("_"))
# The course's own machinery lives in coursetools/ (not installed); none of it may come back into the package.
TOOLING = {"editions", "handouts", "stub_run", "notebooks"}
# Packages only the [course] / [dev] extras install (Jupyter, the notebook test tools, the maintainers' tools).
EXTRAS_ONLY = ["nbformat", "nbconvert", "nbclient", "nbval", "jupyterlab", "ipywidgets", "ipykernel", "pytest", "ruff"]


def test_the_public_names_are_listed():
    """Every module says what it exports, and the curated top-level names resolve to the module that defines them."""
    print("transferlab public names:")
    for name in MODULES:
        module = importlib.import_module(f"transferlab.{name}")
        exported = getattr(module, "__all__", None)
        assert exported, f"transferlab.{name} has no __all__"
        missing = [n for n in exported if not hasattr(module, n)]
        assert not missing, f"transferlab.{name}.__all__ names {missing}, which it does not define"
        print(f"  transferlab.{name}: {', '.join(exported)}")
    assert sorted(transferlab.__all__) == sorted(["__version__", *transferlab._EXPORTS])
    for name, module in transferlab._EXPORTS.items():
        assert getattr(transferlab, name) is getattr(importlib.import_module(f"transferlab.{module}"), name)
    clashes = set(transferlab._EXPORTS) & set(MODULES)  # a submodule import would overwrite such a name
    assert not clashes, f"top-level names that are also module names: {sorted(clashes)}"
    with pytest.raises(AttributeError, match="no attribute 'no_such_helper'"):
        _ = transferlab.no_such_helper


def test_no_course_tooling_in_the_learners_package():
    assert not TOOLING & set(MODULES), f"course tooling in the learner's package: {sorted(TOOLING & set(MODULES))}"
    assert importlib.util.find_spec("coursetools.editions") is not None  # where it lives instead


def test_every_module_imports_without_the_extras():
    """A plain install has none of the extras: block them, then import every module (in a fresh interpreter)."""
    code = f"""
import importlib, importlib.abc, sys
BLOCKED = {EXTRAS_ONLY!r}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked: an extra)")
for name in list(sys.modules):
    if name.split(".")[0] in BLOCKED:
        del sys.modules[name]
sys.meta_path.insert(0, Block())
for name in {MODULES!r}:
    importlib.import_module("transferlab." + name)
try:
    import nbformat
except ModuleNotFoundError:
    print("ok")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
