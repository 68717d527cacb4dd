"""How transferable are features? The grid of Yosinski et al. (2014) at small scale (a benchmark, not a test).

The 52 source letters are split into halves A and B (``split_classes(seed=0)``). Two *donors* are pretrained from
scratch with the course's recipe (``transferability.train_on_task`` = ``transferlab.pretrain``'s loop, seed 0,
``--donor-steps`` x ``--donor-batch-size``): baseA on A, baseB on B. Then on task B, with the SAME recipe and the
same, shorter budget (``--steps`` x ``--batch-size``) for every run:

* ``baseB``              a fresh TinyResNet trained on B (n = 0: nothing transferred);
* ``BnB`` / ``BnB+``     the first n stages copied from the baseB donor, frozen / fine-tuned, the rest re-initialised;
* ``AnB`` / ``AnB+``     the same from the baseA donor;

for n = 1..5 stages (stem, layer1 .. layer4) and seeds 1..3 (the seed draws the re-initialised layers and the
stream of training scenes; all runs with one seed see the same scenes). Accuracy: the fixed source test scenes
of task B (30 held-out renderings per letter, 780 images).

Notebook 09 cannot retrain a donor at this budget within its time limit, so it re-runs two points (AnB and AnB+ at
n = 4) live at a much smaller budget (``--live-*``). This script runs those two points at that small budget too, for
every seed, from a donor with the small budget (the ``live`` entry of the results): the notebook compares its live
run with them.

Usage (from the repository root; ``make transferability``)::

    PYTHONPATH=src python benchmarks/transferability.py --jobs 2  # 2 processes, 1 thread each (make transferability)
    PYTHONPATH=src python benchmarks/transferability.py --donor-steps 3 --steps 2 --seeds 2 --depths 1 5 \
        --results-dir /tmp                                       # smoke test

The results file (``src/transferlab/results/<name>.json``, rewritten atomically after every run, so a partial grid is
readable) records the command line, the git commit, the thread count per process, the number of processes and
``os.getloadavg()`` at start and end (and the wall and CPU seconds and the 1-minute load of every run);
``<name>.csv`` holds mean and std per cell once the grid is complete.
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

import torch

from transferlab.data import SOURCE_CLASSES
from transferlab.pretrain import PretrainConfig
from transferlab.transferability import (
    STAGES,
    scratch_model,
    split_classes,
    task_accuracy,
    task_stream,
    train_on_task,
    transfer_model,
)

RESULTS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src", "transferlab", "results")
VARIANTS = ("BnB", "BnB+", "AnB", "AnB+")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--donor-steps", type=int, default=400, help="optimisation steps of the donors baseA, baseB")
    p.add_argument("--donor-batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=120, help="optimisation steps of every run on task B")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=PretrainConfig.lr)
    p.add_argument("--seeds", type=int, default=3, help="seeds 1..SEEDS per cell (0 is the donors')")
    p.add_argument("--depths", type=int, nargs="+", default=list(range(1, len(STAGES) + 1)))
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument(
        "--live-donor-steps",
        type=int,
        default=30,
        help="the small budget notebook 09 re-runs live: its baseA donor's steps (batch --live-batch-size)",
    )
    p.add_argument("--live-steps", type=int, default=15, help="the live re-run's steps for each point on B")
    p.add_argument("--live-batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker process")
    p.add_argument("--jobs", type=int, default=2, help="worker processes (donors, then seed x depth jobs, in parallel)")
    p.add_argument("--name", default="transferability")
    p.add_argument("--results-dir", default=RESULTS_DIR)
    return p.parse_args(argv)


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=os.path.dirname(os.path.abspath(__file__)),
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            cwd=os.path.dirname(os.path.abspath(__file__)),
        ).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _config(args: argparse.Namespace, seed: int, donor: bool = False) -> PretrainConfig:
    if donor:
        return PretrainConfig(steps=args.donor_steps, batch_size=args.donor_batch_size, lr=args.lr, seed=seed)
    return PretrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=seed)


def _write(result: dict[str, Any], path: str) -> None:
    """Write JSON atomically: a temp file in the same folder, then os.replace."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _row(variant: str, n: int | None, seed: int, acc: float, start: float, cpu_start: float) -> dict[str, Any]:
    row = {
        "variant": variant,
        "n": n,
        "seed": seed,
        "acc": round(acc, 4),
        "seconds": round(time.perf_counter() - start, 2),
        "cpu_seconds": round(time.process_time() - cpu_start, 2),
        "loadavg": round(os.getloadavg()[0], 2),
    }
    print(f"{variant:12s} n={n} seed={seed} acc={acc:.4f} ({row['seconds']} s, cpu {row['cpu_seconds']} s)", flush=True)
    return row


def donor_job(args: argparse.Namespace, name: str, task: tuple[str, ...]) -> tuple[str, dict, list[dict]]:
    """Pretrain one donor (seed 0, the donor budget) from scratch on its half."""
    torch.set_num_threads(args.threads)
    start, cpu_start = time.perf_counter(), time.process_time()
    model = train_on_task(scratch_model(len(task), 0), task, _config(args, 0, donor=True))
    return name, model.state_dict(), [_row(f"base{name}-donor", None, 0, task_accuracy(model, task), start, cpu_start)]


def seed_job(
    args: argparse.Namespace,
    seed: int,
    points: list[tuple[str, int]],
    task_b: tuple[str, ...],
    donor_states: dict[str, dict],
) -> list[dict]:
    """Some (variant, n) points for one seed (``("baseB", 0)``: from scratch), on that seed's stream of scenes."""
    torch.set_num_threads(args.threads)
    donors = {}
    for name, state in donor_states.items():
        donors[name] = scratch_model(state["fc.weight"].shape[0], 0)
        donors[name].load_state_dict(state)
    cfg = _config(args, seed)
    stream = task_stream(task_b, cfg)
    rows = []
    for variant, n in points:
        start, cpu_start = time.perf_counter(), time.process_time()
        if variant == "baseB":
            model = scratch_model(len(task_b), seed)
        else:
            model = transfer_model(donors[variant[0]], n, len(task_b), fine_tune=variant.endswith("+"), seed=seed)
        train_on_task(model, task_b, cfg, stream=stream)
        rows.append(_row(variant, n or None, seed, task_accuracy(model, task_b), start, cpu_start))
    return rows


LIVE_POINTS = (("AnB", 4), ("AnB+", 4))  # the points notebook 09 re-runs live, at the live budget


def live_job(args: argparse.Namespace, task_a: tuple[str, ...], task_b: tuple[str, ...]) -> dict[str, Any]:
    """Notebook 09's live check at its small budget: a baseA donor (seed 0), then LIVE_POINTS for every seed."""
    torch.set_num_threads(args.threads)
    start, cpu_start = time.perf_counter(), time.process_time()
    donor_cfg = PretrainConfig(steps=args.live_donor_steps, batch_size=args.live_batch_size, lr=args.lr, seed=0)
    donor = train_on_task(scratch_model(len(task_a), 0), task_a, donor_cfg)
    rows = [_row("baseA-donor", None, 0, task_accuracy(donor, task_a), start, cpu_start)]
    for seed in range(1, args.seeds + 1):
        cfg = PretrainConfig(steps=args.live_steps, batch_size=args.live_batch_size, lr=args.lr, seed=seed)
        stream = task_stream(task_b, cfg)
        for variant, n in LIVE_POINTS:
            start, cpu_start = time.perf_counter(), time.process_time()
            model = transfer_model(donor, n, len(task_b), fine_tune=variant.endswith("+"), seed=seed)
            train_on_task(model, task_b, cfg, stream=stream)
            rows.append(_row(variant, n, seed, task_accuracy(model, task_b), start, cpu_start))
    return {
        "donor_steps": args.live_donor_steps,
        "steps": args.live_steps,
        "batch_size": args.live_batch_size,
        "points": [list(p) for p in LIVE_POINTS],
        "runs": rows,
    }


def run_grid(args, points: list[tuple[str, int]], task_a, task_b, record) -> None:
    """Notebook 09's live check (in the background), both donors, then one job per seed and depth (and per seed
    for baseB); ``--jobs`` worker processes (one thread each) run them in parallel. Every run seeds itself, so the
    numbers do not depend on the grouping."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=context) as pool:
        live = pool.submit(live_job, args, task_a, task_b)
        donor_states = {}
        for name, state, rows in pool.map(donor_job, [args, args], ["A", "B"], [task_a, task_b]):
            donor_states[name] = state
            record(rows)
        groups = [[("baseB", 0)]] + [[p for p in points if p[1] == n] for n in args.depths]
        jobs = [
            pool.submit(seed_job, args, seed, group, task_b, donor_states)
            for seed in range(1, args.seeds + 1)
            for group in groups
        ]
        for job in as_completed(jobs):
            record(job.result())
        record([], live=live.result())


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and std (sample std over seeds) of every (variant, n) cell."""
    cells: dict[tuple[str, int | None], list[float]] = {}
    for r in runs:
        if not r["variant"].endswith("donor"):
            cells.setdefault((r["variant"], r["n"]), []).append(r["acc"])
    return [
        {
            "variant": v,
            "n": n,
            "mean": round(statistics.mean(a), 4),
            "std": round(statistics.stdev(a), 4) if len(a) > 1 else float("nan"),
            "seeds": len(a),
        }
        for (v, n), a in cells.items()
    ]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    task_a, task_b = split_classes(SOURCE_CLASSES, args.split_seed)
    grid = [(v, n) for n in args.depths for v in VARIANTS]
    path = os.path.join(args.results_dir, args.name + ".json")
    result: dict[str, Any] = {
        "command": " ".join(["python", "benchmarks/transferability.py", *(sys.argv[1:] if argv is None else argv)]),
        "commit": _commit(),
        "threads": args.threads,
        "jobs": args.jobs,
        "loadavg_start": os.getloadavg(),
        "machine": {
            "torch": torch.__version__,
            "cpu": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
        },
        "args": vars(args),
        "task_a": task_a,
        "task_b": task_b,
        "stages": STAGES,
        "complete": False,
        "runs": [],
    }
    t0 = time.perf_counter()

    def record(rows: list[dict[str, Any]], live: dict[str, Any] | None = None) -> None:
        if live is not None:
            result["live"] = live
        result["runs"].extend(rows)
        result["runs"].sort(key=lambda r: (r["seed"], r["variant"] != "baseB", r["n"] or 0))
        _write(result, path)
        print(f"[{time.perf_counter() - t0:7.1f} s] recorded {len(result['runs'])} runs", flush=True)

    run_grid(args, grid, task_a, task_b, record)
    result.update(complete=True, seconds=round(time.perf_counter() - t0, 1), loadavg_end=os.getloadavg())
    result["summary"] = summarise(result["runs"])
    _write(result, path)
    with open(os.path.join(args.results_dir, args.name + ".csv"), "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["variant", "n", "mean", "std", "seeds"])
        writer.writeheader()
        writer.writerows(result["summary"])
    print(f"done in {result['seconds']} s; wrote {path} and .csv")


if __name__ == "__main__":
    main()
