"""Benchmark: how long each notebook takes under the test command, and the whole suite.

Runs `python -m pytest <notebook>` once per notebook (nbval executes it in a fresh kernel and compares
its outputs), then, unless --no-suite, the whole `python -m pytest` (unit tests + every notebook).

    PYTHONPATH=src python benchmarks/notebook_times.py                 # every notebook + whole suite
    PYTHONPATH=src python benchmarks/notebook_times.py --no-suite notebooks/05_*.ipynb

Writes benchmarks/results/notebook_times.json (merged with earlier results per notebook) and prints a
table. Targets: each notebook <= 60 s, whole suite < 300 s.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "notebook_times.json"
NOTEBOOK_LIMIT_S, SUITE_LIMIT_S = 60.0, 300.0


def timed_pytest(*targets: str) -> tuple[float, bool, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", *targets], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    summary = (proc.stdout.strip().splitlines() or [""])[-1]
    return elapsed, proc.returncode == 0, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", help="notebooks to time (default: all of notebooks/NN_*.ipynb)")
    parser.add_argument("--no-suite", action="store_true", help="skip the whole-suite run")
    args = parser.parse_args()
    notebooks = [Path(p) for p in args.notebooks] or sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"notebooks": {}}
    for nb in notebooks:
        rel = str(nb.resolve().relative_to(ROOT))
        elapsed, passed, summary = timed_pytest(rel)
        results["notebooks"][nb.name] = {"seconds": round(elapsed, 1), "passed": passed,
                                         "within_limit": elapsed <= NOTEBOOK_LIMIT_S, "pytest": summary}
        print(f"{nb.name:<45} {elapsed:6.1f} s  {'pass' if passed else 'FAIL'}  {summary}", flush=True)
    if not args.no_suite:
        elapsed, passed, summary = timed_pytest()
        results["suite"] = {"seconds": round(elapsed, 1), "passed": passed,
                            "within_limit": elapsed < SUITE_LIMIT_S, "pytest": summary}
        print(f"{'whole suite (python -m pytest)':<45} {elapsed:6.1f} s  {'pass' if passed else 'FAIL'}  {summary}")
    results["cpu_count"] = os.cpu_count()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
