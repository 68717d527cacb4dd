"""Versions: pyproject.toml states ranges (what the code needs), constraints.txt the exact lock; they must agree."""

import re
import tomllib
from importlib.metadata import PackageNotFoundError, version

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from conftest import ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
REQUIREMENTS = {
    canonicalize_name(Requirement(req).name): Requirement(req)
    for req in PYPROJECT["project"]["dependencies"]
    + PYPROJECT["project"]["optional-dependencies"]["course"]
    + [r for r in PYPROJECT["project"]["optional-dependencies"]["dev"] if not r.startswith("transferlab")]
}
# The maintainers' tools ([dev]); a learner's install (the README's `.[course]`) does not have them.
DEV_ONLY = {
    canonicalize_name(Requirement(r).name)
    for r in PYPROJECT["project"]["optional-dependencies"]["dev"]
    if not r.startswith("transferlab")
}
LOCK = {
    canonicalize_name(name): pinned
    for name, pinned in re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+)$", (ROOT / "constraints.txt").read_text(), re.M)
}


def test_dependencies_are_ranges_not_pins():
    pinned = [str(r) for r in REQUIREMENTS.values() if any(s.operator == "==" for s in r.specifier)]
    assert not pinned, f"state what the code needs as a range in pyproject.toml (the lock has the pins): {pinned}"
    unbounded = [name for name, r in REQUIREMENTS.items() if not r.specifier]
    assert not unbounded, f"give these a lower bound that the code was tested with: {unbounded}"


def test_requires_python_admits_311_to_313():
    spec = PYPROJECT["project"]["requires-python"]
    from packaging.specifiers import SpecifierSet

    assert all(v in SpecifierSet(spec) for v in ("3.11.7", "3.12.1", "3.13.0")), spec


def test_core_packages_are_declared():
    for name in ["torch", "torchvision", "torchinfo", "nbval", "jupyterlab", "matplotlib"]:
        assert name in REQUIREMENTS, f"{name} is missing from pyproject.toml"


@pytest.mark.parametrize("name", sorted(REQUIREMENTS))
def test_the_lock_pins_every_dependency_within_its_range(name):
    assert name in LOCK, f"constraints.txt does not pin {name}: regenerate it with `make lock`"
    assert REQUIREMENTS[name].specifier.contains(LOCK[name], prereleases=True), (
        f"constraints.txt pins {name}=={LOCK[name]}, outside pyproject's {REQUIREMENTS[name]}"
    )


@pytest.mark.parametrize("name", sorted(REQUIREMENTS))
def test_installed_versions_are_the_locked_ones(name):
    try:
        installed = version(name)
    except PackageNotFoundError:
        if name in DEV_ONLY:
            pytest.skip(f"{name} is a maintainers' tool ([dev] extra), not installed here")
        raise
    # a local-version suffix (torch's "+cpu" build) is the same release
    assert installed.split("+")[0] == LOCK[name].split("+")[0], (
        f"{name} {installed} is installed, the lock says {LOCK[name]}: `make install` (or "
        "pip install -c constraints.txt -e '.[course]') reproduces the committed outputs"
    )


def test_environment_yml_installs_the_package_with_the_lock():
    spec = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = spec["dependencies"]
    pythons = [d for d in deps if isinstance(d, str) and d.startswith("python")]
    assert pythons == ["python=3.11"], pythons  # the Python the lock was made on
    pip_lines = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    assert "-c constraints.txt" in pip_lines and '-e ".[course]"' in pip_lines, pip_lines
    conda_pkgs = {re.split(r"[=<>]", d)[0] for d in deps if isinstance(d, str)}
    assert conda_pkgs <= {"python", "pip"}, f"pin these in constraints.txt instead: {conda_pkgs - {'python', 'pip'}}"
