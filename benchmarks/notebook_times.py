"""Benchmark: how long each notebook takes under the test command, and the whole suite.

Runs `python -m pytest <notebook>` once per notebook (nbval executes it in a fresh kernel and compares
its outputs), then, unless --no-suite, the whole suite as `make test` runs it
(`python -m pytest -n 2 --dist loadfile`: unit tests + every notebook on two xdist workers).

    PYTHONPATH=src python benchmarks/notebook_times.py                 # every notebook + whole suite
    PYTHONPATH=src python benchmarks/notebook_times.py --no-suite notebooks/05_*.ipynb

Writes src/transferlab/results/notebook_times.json (merged with earlier results per notebook) and prints a
table with wall time, CPU time and the 1-minute load average at the end of each run (wall times on a busy
machine are inflated; CPU time is not). Targets: each notebook <= 60 s, whole suite < 300 s.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

from provenance import ROOT, run_info, run_started

RESULTS = ROOT / "src" / "transferlab" / "results" / "notebook_times.json"  # with the other stored results
NOTEBOOK_LIMIT_S, SUITE_LIMIT_S = 60.0, 300.0
SUITE_ARGS = ("-n", "3", "--dist", "loadfile")  # the README's test command (`make test`)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_pytest(*targets: str) -> tuple[float, float, bool, str]:
    """Wall time, CPU time (user + sys of pytest and its kernels) and outcome of one pytest run.

    The CPU time is a load-independent indicator: on a busy machine the wall time grows, the CPU time hardly.
    """
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    cpu0, start = _children_cpu(), time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", *targets], cwd=ROOT, env=env, capture_output=True, text=True
    )
    elapsed, cpu = time.perf_counter() - start, _children_cpu() - cpu0
    summary = (proc.stdout.strip().splitlines() or [""])[-1]
    if proc.returncode != 0:  # show why, so a failure can be read without re-running
        print(proc.stdout[-4000:], file=sys.stderr)
    return elapsed, cpu, proc.returncode == 0, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", help="notebooks to time (default: all of notebooks/NN_*.ipynb)")
    parser.add_argument("--no-suite", action="store_true", help="skip the whole-suite run")
    args = parser.parse_args()
    started = run_started()
    notebooks = [Path(p) for p in args.notebooks] or sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"notebooks": {}}
    for nb in notebooks:
        rel = str(nb.resolve().relative_to(ROOT))
        elapsed, cpu, passed, summary = timed_pytest(rel)
        results["notebooks"][nb.name] = {
            "seconds": round(elapsed, 1),
            "cpu_seconds": round(cpu, 1),
            "passed": passed,
            "within_limit": elapsed <= NOTEBOOK_LIMIT_S,
            "pytest": summary,
            "load_average_1min": round(os.getloadavg()[0], 1),
        }
        print(
            f"{nb.name:<45} {elapsed:6.1f} s wall  {cpu:6.1f} s CPU  {'pass' if passed else 'FAIL'}  {summary}",
            flush=True,
        )
    if not args.no_suite:
        elapsed, cpu, passed, summary = timed_pytest(*SUITE_ARGS)
        results["suite"] = {
            "command": shlex.join(["python", "-m", "pytest", *SUITE_ARGS]),
            "seconds": round(elapsed, 1),
            "cpu_seconds": round(cpu, 1),
            "passed": passed,
            "within_limit": elapsed < SUITE_LIMIT_S,
            "pytest": summary,
            "load_average_1min": round(os.getloadavg()[0], 1),
        }
        print(
            f"{'whole suite (make test)':<45} {elapsed:6.1f} s wall  {cpu:6.1f} s CPU  "
            f"{'pass' if passed else 'FAIL'}  {summary}"
        )
    results["cpu_count"] = os.cpu_count()
    results["provenance"] = run_info(started)  # of the latest run (earlier per-notebook rows keep their load average)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
