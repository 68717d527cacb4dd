"""Notebook 07's comparison in full: six fine-tuning recipes, each tuned on validation, many seeds (a benchmark).

The arms are `transferlab.unfreezing.ARMS` (the same code the notebook runs): feature extraction, one-shot
fine-tuning, one-shot with a warm-up, LP-FT, one-shot with gradual's layers and rates ("matched"), and gradual
unfreezing. Each arm's one knob comes from the same grid and is chosen by mean VALIDATION accuracy over the seeds:
``body_lr`` (``layer4``'s rate) for the five arms that train pretrained layers, the head's rate for feature
extraction (which has no other knob; the others keep the shared head rate 1e-2, and ``--head-check`` re-runs
one-shot at its chosen body rate with the other head rates, to show whether 1e-2 holds it back).
Then the baseline (one-shot), gradual and feature extraction are re-run at their chosen rates with twice the
steps (``--convergence``): does the budget reach a plateau, and does the comparison hold with more steps?

Every arm trains its full budget and is scored after its last epoch. Every run records its validation accuracy
and which of the test images it got right (a hex bit string, in
the order of ``target_split``'s test set), so the notebook can compute paired differences over seeds and bootstrap
over test images from the stored runs. Validation: 100 digit images x 2 scenes; test: the other 400 x 2 (no digit
in both).

Usage (from the repository root; ``make bench-unfreezing``)::

    PYTHONPATH=src python benchmarks/unfreezing.py --threads 1 --jobs 2   # the committed results
    PYTHONPATH=src python benchmarks/unfreezing.py --seeds 1 --grid 1e-3 --head-grid 1e-2 --no-convergence \
        --results-dir /tmp                                               # smoke test

Writes ``src/transferlab/results/<name>.json`` (rewritten after every run, so a partial grid is readable) with the
provenance of ``benchmarks/provenance.py``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from transferlab.serialization import atomic_open
from transferlab.training import evaluate, predict
from transferlab.unfreezing import ARMS, Budget, run_arm, target_split

from provenance import RESULTS, run_info, run_started


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=5, help="seeds 0..SEEDS-1 for every arm and rate")
    p.add_argument(
        "--grid",
        type=float,
        nargs="+",
        default=[3e-4, 1e-3, 3e-3],
        help="body_lr grid (layer4's rate) of the arms that train pretrained layers",
    )
    p.add_argument(
        "--head-grid",
        type=float,
        nargs="+",
        default=[1e-2, 3e-2],
        help="head-rate grid of feature extraction, and of the --head-check runs",
    )
    p.add_argument("--val-digits", type=int, default=100)
    p.add_argument(
        "--no-convergence",
        dest="convergence",
        action="store_false",
        help="skip the re-runs with twice the steps per epoch",
    )
    p.add_argument("--no-head-check", dest="head_check", action="store_false")
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker process")
    p.add_argument(
        "--jobs", type=int, default=2, help="worker processes (every run seeds itself: the numbers do not depend on it)"
    )
    p.add_argument("--name", default="unfreezing")
    p.add_argument("--results-dir", type=Path, default=RESULTS)
    return p.parse_args(argv)


def bits(correct: torch.Tensor) -> str:
    """A boolean vector as a hex string (4 images a digit, first image in the highest bit)."""
    padded = torch.cat([correct.to(torch.int64), torch.zeros(-len(correct) % 4, dtype=torch.int64)])
    return "".join(f"{int(''.join(map(str, q.tolist())), 2):x}" for q in padded.view(-1, 4))


def one_run(task: tuple) -> dict[str, Any]:
    """Train one (arm, seed, body_lr, head_lr, budget, phase) and score it on validation and test."""
    arm, seed, body_lr, head_lr, budget, phase, val_digits, threads = task
    torch.set_num_threads(threads)
    val, test = _split(val_digits)
    cpu = time.process_time()
    model = run_arm(arm, seed, body_lr, budget, head_lr=head_lr)
    val_acc = evaluate(model, DataLoader(val, batch_size=200))[1]
    preds, targets = predict(model, DataLoader(test, batch_size=200))
    correct = preds == targets
    return {
        "phase": phase,
        "arm": arm,
        "seed": seed,
        "body_lr": body_lr,
        "head_lr": head_lr,
        "steps_per_epoch": budget.steps_per_epoch,
        "val_acc": val_acc,
        "test_acc": correct.float().mean().item(),
        "test_correct": bits(correct),
        "cpu_seconds": round(time.process_time() - cpu, 2),
    }


_SPLITS: dict[int, tuple] = {}


def _split(val_digits: int) -> tuple:
    if val_digits not in _SPLITS:  # once per worker process
        _SPLITS[val_digits] = target_split(val_digits)
    return _SPLITS[val_digits]


def choose(runs: list[dict[str, Any]], arm: str, knob: str) -> float:
    """The value of ``knob`` with the highest mean validation accuracy over seeds (the smaller value wins ties)."""
    grid = sorted({r[knob] for r in runs if r["arm"] == arm and r["phase"] == "grid"})
    means = {
        v: np.mean([r["val_acc"] for r in runs if r["arm"] == arm and r["phase"] == "grid" and r[knob] == v])
        for v in grid
    }
    return max(grid, key=lambda v: (means[v], -v))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    started = run_started()
    budget = Budget()
    val, test = _split(args.val_digits)
    seeds = list(range(args.seeds))
    out = args.results_dir / f"{args.name}.json"
    results: dict[str, Any] = {
        "budget": asdict(budget),
        "arms": list(ARMS),
        "grid": args.grid,
        "head_grid": args.head_grid,
        "seeds": seeds,
        "val_images": len(val),
        "test_images": len(test),
        "jobs": args.jobs,
        "runs": [],
    }
    order = {arm: i for i, arm in enumerate(ARMS)}

    def save(**extra: Any) -> None:
        results["runs"].sort(key=lambda r: (r["phase"], order[r["arm"]], r["seed"], r["body_lr"] or 0, r["head_lr"]))
        results.update(extra, provenance=run_info(started))
        results["provenance"]["cpu_seconds_runs"] = round(sum(r["cpu_seconds"] for r in results["runs"]), 1)
        with atomic_open(out) as f:  # all or nothing: an interrupted run keeps the previous file
            f.write(json.dumps(results, indent=1).encode("utf-8"))

    def run_all(tasks: list[tuple]) -> None:
        with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            for r in pool.map(one_run, tasks):
                results["runs"].append(r)
                print(
                    f"{r['phase']:<11} {r['arm']:<9} seed {r['seed']} body {r['body_lr']} head {r['head_lr']:.0e}: "
                    f"val {r['val_acc']:.3f} test {r['test_acc']:.3f} ({r['cpu_seconds']} s)",
                    flush=True,
                )
                save()

    common = (args.val_digits, args.threads)
    grid = [("features", seed, None, head_lr, budget, "grid", *common) for seed in seeds for head_lr in args.head_grid]
    grid += [
        (arm, seed, body_lr, budget.head_lr, budget, "grid", *common)
        for seed in seeds
        for arm in ARMS[1:]
        for body_lr in args.grid
    ]
    run_all(grid)
    chosen = {"features": {"body_lr": None, "head_lr": choose(results["runs"], "features", "head_lr")}}
    for arm in ARMS[1:]:
        chosen[arm] = {"body_lr": choose(results["runs"], arm, "body_lr"), "head_lr": budget.head_lr}
    save(chosen=chosen)
    later = []
    if args.head_check:
        later += [
            (arm, seed, chosen[arm]["body_lr"], head_lr, budget, "head-check", *common)
            for arm in ("one-shot",)
            for head_lr in args.head_grid
            if head_lr != budget.head_lr
            for seed in seeds
        ]
    if args.convergence:
        longer = replace(budget, steps_per_epoch=2 * budget.steps_per_epoch)
        later += [
            (arm, seed, chosen[arm]["body_lr"], chosen[arm]["head_lr"], longer, "convergence", *common)
            for arm in ("features", "one-shot", "gradual")
            for seed in seeds
        ]
    run_all(later)
    save(chosen=chosen)
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
