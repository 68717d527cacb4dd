"""The pins in pyproject.toml are the single source of truth; everything else must agree."""

import re
import tomllib
from importlib.metadata import version

import pytest
import yaml

from conftest import ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PINS = {
    re.split(r"[=<>!~\[]", req)[0].lower(): req
    for req in PYPROJECT["project"]["dependencies"] + PYPROJECT["project"]["optional-dependencies"]["course"]
}


def test_every_dependency_is_pinned_exactly():
    loose = [req for req in PINS.values() if "==" not in req]
    assert not loose, f"pin these with '==' in pyproject.toml: {loose}"


def test_core_packages_are_declared():
    for name in ["torch", "torchvision", "torchinfo", "nbval", "jupyterlab", "matplotlib"]:
        assert name in PINS, f"{name} is missing from pyproject.toml"
    assert PINS["torch"] == "torch==2.14.1" and PINS["torchvision"] == "torchvision==0.29.1"


@pytest.mark.parametrize("name", sorted(PINS))
def test_installed_versions_match_the_pins(name):
    assert version(name) == PINS[name].split("==")[1], f"reinstall: pip install -e '.[course]' ({name})"


def test_environment_yml_agrees_with_pyproject():
    spec = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = spec["dependencies"]
    pythons = [d for d in deps if isinstance(d, str) and d.startswith("python")]
    assert pythons == ["python=3.11"], pythons
    assert PYPROJECT["project"]["requires-python"] == ">=3.11,<3.12"
    pip_lines = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    # conda installs the package itself (so pyproject's pins), with the same extra the README uses
    assert '-e ".[course]"' in pip_lines
    # and names no package of its own that could disagree with a pin
    conda_pkgs = {re.split(r"[=<>]", d)[0] for d in deps if isinstance(d, str)}
    assert conda_pkgs <= {"python", "pip"}, f"pin these in pyproject.toml instead: {conda_pkgs - {'python', 'pip'}}"
    assert all(line.startswith("-e ") for line in pip_lines)
