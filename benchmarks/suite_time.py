"""Benchmark: the whole test suite serial vs with pytest-xdist (`-n 2 --dist loadfile`, as `make test`); both must pass.

`--dist loadfile` sends every test file, and so every notebook, to one worker: a notebook's cells run in order in
one kernel, as nbval needs. The suite counts as faster under xdist only if both runs pass.

    PYTHONPATH=src python benchmarks/suite_time.py              # make bench-suite; run it on a QUIET machine
    PYTHONPATH=src python benchmarks/suite_time.py --workers 3 --repeats 2   # another worker count, twice each

Writes src/transferlab/results/suite_time.json: wall and CPU seconds, outcome and pytest's summary line of every run,
the serial/xdist ratio, and the provenance (command, commit, load average).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics

from notebook_times import timed_pytest

from provenance import RESULTS, run_info, run_started


def measure(label: str, *args: str) -> dict:
    elapsed, cpu, passed, summary = timed_pytest(*args)
    row = {
        "run": label,
        "args": list(args),
        "seconds": round(elapsed, 1),
        "cpu_seconds": round(cpu, 1),
        "passed": passed,
        "pytest": summary,
        "load_average_1min": round(os.getloadavg()[0], 1),
    }
    print(f"{label:<28} {elapsed:7.1f} s wall  {cpu:7.1f} s CPU  {'pass' if passed else 'FAIL'}  {summary}", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="xdist workers (2: make test's)")
    parser.add_argument("--repeats", type=int, default=1, help="alternate serial and xdist runs this many times")
    args = parser.parse_args()
    started = run_started()
    xdist = ("-n", str(args.workers), "--dist", "loadfile")
    runs = []
    for _ in range(args.repeats):
        runs.append(measure("serial"))
        runs.append(measure(f"xdist -n {args.workers} loadfile", *xdist))
    serial = statistics.median(r["seconds"] for r in runs if r["run"] == "serial")
    parallel = statistics.median(r["seconds"] for r in runs if r["run"] != "serial")
    all_pass = all(r["passed"] for r in runs)
    result = {
        "provenance": run_info(started),
        "runs": runs,
        "serial_seconds": serial,
        "xdist_seconds": parallel,
        "speedup": round(serial / parallel, 2),
        "all_passed": all_pass,
        "adopt_xdist": all_pass and parallel < serial,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "suite_time.json").write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"serial {serial:.0f} s, xdist {parallel:.0f} s: {serial / parallel:.2f}x; "
        f"{'both pass' if all_pass else 'A RUN FAILED'}; adopt xdist: {result['adopt_xdist']}"
    )


if __name__ == "__main__":
    main()
