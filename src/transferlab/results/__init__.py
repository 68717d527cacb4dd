"""Stored benchmark results that the notebooks read, shipped as package data.

The files in this folder are written by the scripts in ``benchmarks/`` (each records the command, commit,
threads and load that made it). Reading them through the package, not through ``../benchmarks``, finds them
wherever a notebook is opened from: ``notebooks/``, the student edition in ``build/student/``, or an installed
wheel outside the checkout.

Example:
    >>> results_file("transferability.json").name
    'transferability.json'
    >>> "runs" in load_results("transfer_gain")
    True
"""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path
from typing import Any

__all__ = ["available_results", "load_results", "results_file"]


def available_results() -> list[str]:
    """Names of the stored results files, sorted."""
    return sorted(p.name for p in files(__name__).iterdir() if p.is_file() and not p.name.startswith("__"))


def results_file(name: str) -> Path:
    """The path of a stored results file, e.g. ``results_file("transfer_gain.csv")``.

    Raises:
        FileNotFoundError: no such file ships with the package; the message lists those that do and the
            command that rebuilds them.
    """
    path = Path(str(files(__name__).joinpath(name)))
    if not path.is_file():
        raise FileNotFoundError(
            f"no stored result {name!r} in {path.parent}: the package ships {', '.join(available_results())}. "
            "Rebuild a benchmark's results with its make target (README, 'Measured figures'), or reinstall "
            "transferlab if the folder is empty."
        )
    return path


def load_results(name: str) -> dict[str, Any]:
    """A stored JSON results file as a dict; ``name`` with or without ``.json``."""
    stem = name if name.endswith(".json") else f"{name}.json"
    return json.loads(results_file(stem).read_text(encoding="utf-8"))
