"""What every benchmark results file records: the exact command, the commit, the threads used, the machine's load.

Imported by the scripts in ``benchmarks/`` (run as ``python benchmarks/<script>.py``, so this folder is on the path).

Example:
    >>> start = run_started()  # doctest: +SKIP
    >>> ...  # the measurements
    >>> info = run_info(start)  # doctest: +SKIP
    >>> info["command"], info["commit"], info["threads"], info["load_average"]  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "src" / "transferlab" / "results"  # package data: notebooks read it through transferlab.results

__all__ = ["RESULTS", "ROOT", "csv_header", "run_info", "run_started", "write_json"]


def _git(*args: str) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def command_line() -> str:
    """The command as typed from the repository root (``python benchmarks/x.py --flag ...``)."""
    script = Path(sys.argv[0]).resolve()
    shown = script.relative_to(ROOT) if script.is_relative_to(ROOT) else script
    return shlex.join(["python", str(shown), *sys.argv[1:]])


def run_started() -> dict[str, Any]:
    """Call before measuring: the commit checked out, the start time and the load average (1, 5, 15 min)."""
    return {
        "commit": _git("rev-parse", "HEAD") or "unknown",
        "uncommitted_changes": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "time": time.time(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def run_info(started: dict[str, Any]) -> dict[str, Any]:
    """Provenance of a run begun at ``started`` (from `run_started`); ``threads`` is what torch actually used."""
    return {
        "command": command_line(),
        "commit": started["commit"],  # at the start: the code that ran
        "uncommitted_changes": started["uncommitted_changes"],
        "threads": torch.get_num_threads(),
        "load_average_start": started["load_average"],
        "load_average": [round(x, 2) for x in os.getloadavg()],  # at the end of the run
        "wall_seconds": round(time.time() - started["time"], 1),
        "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }


def csv_header(info: dict[str, Any]) -> str:
    """The provenance as ``# key: value`` lines to put above a CSV table (``pandas.read_csv(..., comment="#")``)."""
    keys = ("command", "commit", "uncommitted_changes", "threads", "load_average_start", "load_average", "utc")
    return "".join(f"# {key}: {info[key]}\n" for key in keys)


def write_json(data: dict[str, Any], name: str, folder: Path = RESULTS) -> Path:
    """Write ``data`` to ``folder / name`` as indented JSON with sorted keys, say so, and return the path."""
    out_file = folder / name
    out_file.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    shown = out_file.relative_to(RESULTS.parents[1]) if out_file.is_relative_to(RESULTS.parents[1]) else out_file
    print("wrote", shown)
    return out_file
