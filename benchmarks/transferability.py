"""How transferable are features? The grid of Yosinski et al. (2014) at small scale (a benchmark, not a test).

A fair version of the paper's experiment, affordable on one CPU thread:

* **Same data, same budget for everyone.** Each half (A, B: ``split_classes(seed=0)``, 26 letters each) has fixed
  finite data, ``TRAIN_PER_CLASS`` scenes per letter (``transferability.task_data``). The donors baseA and baseB
  (seed 0) and every network trained on B get the same recipe and budget (``FitConfig``: ``--epochs`` passes).
* **Trained to a plateau.** baseB is also trained at twice the budget (``baseB2x``, seeds 1..``--seeds-tuned``):
  the convergence check (it should gain under one point) and the same-total-compute control for AnB+ (the donor's
  epochs on A plus the fine-tuning epochs on B equal baseB2x's epochs).
* **A test set that resolves two points.** ``TEST_PER_CLASS`` held-out scenes per letter (2,600 for B: binomial
  SE <= 0.01); every run stores its per-image correctness, so notebook 09 computes paired differences over seeds
  (ddof = 1) and a bootstrap over test images.
* **Cheap where it can be.** A narrow TinyResNet (``WIDTHS``) on 16x16 scenes; frozen prefixes computed once
  (``transferability.fit(..., frozen=n)``). Frozen variants (AnB, BnB) run ``--seeds`` seeds (their differences are
  small), fine-tuned ones ``--seeds-tuned`` at ``--tuned-depths``.
* **A dissimilar split** (notebook 09's exercise 2): ``case_split()``, each letter with its other case, a..m in A
  and n..z in B; donors and the frozen AnB/BnB at ``--dissimilar-depths``.

Usage (from the repository root; ``make bench-transferability``)::

    PYTHONPATH=src python benchmarks/transferability.py --jobs 1
    PYTHONPATH=src python benchmarks/transferability.py --epochs 1 --seeds 2 --seeds-tuned 2 --depths 1 5 \
        --dissimilar-depths 5 --name smoke --results-dir /tmp                    # smoke test

Writes ``src/transferlab/results/<name>.json`` (atomically after every run, so a partial grid is readable; the
provenance of ``benchmarks/provenance.py``: command, commit, threads, load) and ``<name>.csv`` (mean and std per
cell) once complete.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import time
from typing import Any

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from transferlab.data import SOURCE_CLASSES
from transferlab.serialization import atomic_open
from transferlab.transferability import (
    DIFFICULTY,
    STAGES,
    TEST_PER_CLASS,
    TRAIN_PER_CLASS,
    WIDTHS,
    FitConfig,
    case_split,
    correct,
    fit,
    pack_correct,
    scratch_model,
    split_classes,
    task_data,
    transfer_model,
)

from provenance import RESULTS, csv_header, run_info, run_started

VARIANTS = ("BnB", "AnB", "BnB+", "AnB+")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=FitConfig.epochs, help="budget of every run (donors included)")
    p.add_argument("--batch-size", type=int, default=FitConfig.batch_size)
    p.add_argument("--lr", type=float, default=FitConfig.lr)
    p.add_argument("--seeds", type=int, default=5, help="seeds 1..SEEDS for baseB and the frozen AnB, BnB")
    p.add_argument("--seeds-tuned", type=int, default=3, help="seeds 1..N for AnB+, BnB+ and baseB2x")
    p.add_argument("--depths", type=int, nargs="+", default=list(range(1, len(STAGES) + 1)))
    p.add_argument("--tuned-depths", type=int, nargs="+", default=[1, 3, 5], help="depths of AnB+ and BnB+")
    p.add_argument("--dissimilar-depths", type=int, nargs="+", default=[3, 4, 5])
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--jobs", type=int, default=1, help="kept for the Makefile; the grid runs in one process")
    p.add_argument("--name", default="transferability")
    p.add_argument("--results-dir", default=str(RESULTS))
    return p.parse_args(argv)


def _write(result: dict[str, Any], path: str) -> None:
    """Write JSON all or nothing (transferlab.serialization.atomic_open)."""
    with atomic_open(path) as f:
        f.write((json.dumps(result, indent=0) + "\n").encode("utf-8"))


def run_point(
    split: str,
    variant: str,
    n: int,
    seed: int,
    data: dict[str, Any],
    donors: dict[str, torch.nn.Module],
    args: argparse.Namespace,
) -> tuple[dict[str, Any], torch.nn.Module]:
    """Train one network on B (or a donor) and score it on B's test scenes (A's for baseA)."""
    start, cpu = time.perf_counter(), time.process_time()
    epochs = args.epochs * (2 if variant == "baseB2x" else 1)
    cfg = FitConfig(epochs=epochs, batch_size=args.batch_size, lr=args.lr, seed=seed)
    half = "A" if variant == "baseA" else "B"
    x, y = data[half + "train"]
    frozen = 0
    if variant in ("baseA", "baseB", "baseB2x"):
        model = scratch_model(len(data[half]), seed)
    else:
        tuned = variant.endswith("+")
        model = transfer_model(donors[variant[0]], n, len(data["B"]), fine_tune=tuned, seed=seed)
        frozen = 0 if tuned else n
    fit(model, x, y, cfg, frozen=frozen)
    hits = correct(model, *data[half + "test"])
    row = {
        "split": split,
        "variant": variant,
        "n": n,
        "seed": seed,
        "epochs": epochs,
        "acc": round(float(hits.float().mean()), 5),
        "correct": pack_correct(hits),
        "seconds": round(time.perf_counter() - start, 2),
        "cpu_seconds": round(time.process_time() - cpu, 2),
        "load_1min": round(os.getloadavg()[0], 2),
    }
    print(
        f"{split:10s} {variant:8s} n={n} seed={seed} acc={row['acc']:.4f} "
        f"({row['seconds']} s, cpu {row['cpu_seconds']} s)",
        flush=True,
    )
    return row, model


def plan(args: argparse.Namespace) -> list[tuple[str, str, int, int]]:
    """(split, variant, n, seed) in the order they run: donors first, then the cells by importance."""
    s5, s3 = range(1, args.seeds + 1), range(1, args.seeds_tuned + 1)
    points = [("random", "baseA", 0, 0), ("random", "baseB", 0, 0)]
    points += [("random", "baseB", 0, s) for s in s5]
    points += [("random", v, n, s) for n in args.depths for v in ("BnB", "AnB") for s in s5]
    points += [("random", "baseB2x", 0, s) for s in s3]
    points += [("random", v, n, s) for n in args.tuned_depths for v in ("AnB+", "BnB+") for s in s3]
    points += [("dissimilar", "baseA", 0, 0), ("dissimilar", "baseB", 0, 0)]
    points += [("dissimilar", v, n, s) for n in args.dissimilar_depths for v in ("BnB", "AnB") for s in s5]
    return points


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and std (ddof = 1) over seeds of every (split, variant, n) cell."""
    cells: dict[tuple[str, str, int], list[float]] = {}
    for r in runs:
        if r["seed"] != 0:
            cells.setdefault((r["split"], r["variant"], r["n"]), []).append(r["acc"])
    return [
        {
            "split": sp,
            "variant": v,
            "n": n,
            "mean": round(statistics.mean(a), 4),
            "std": round(statistics.stdev(a), 4) if len(a) > 1 else float("nan"),
            "seeds": len(a),
        }
        for (sp, v, n), a in cells.items()
    ]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    started = run_started()
    splits = {"random": split_classes(SOURCE_CLASSES, args.split_seed), "dissimilar": case_split()}
    path = os.path.join(args.results_dir, args.name + ".json")
    result: dict[str, Any] = {
        "design": {
            "widths": WIDTHS,
            "image_side": 16,
            "difficulty": DIFFICULTY,
            "train_per_class": TRAIN_PER_CLASS,
            "test_per_class": TEST_PER_CLASS,
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "seeds": args.seeds,
            "seeds_tuned": args.seeds_tuned,
            "depths": args.depths,
            "tuned_depths": args.tuned_depths,
            "dissimilar_depths": args.dissimilar_depths,
            "stages": STAGES,
        },
        "splits": {name: {"A": a, "B": b} for name, (a, b) in splits.items()},
        "complete": False,
        "runs": [],
    }
    datas: dict[str, dict[str, Any]] = {}
    donors: dict[str, dict[str, torch.nn.Module]] = {"random": {}, "dissimilar": {}}
    t0 = time.perf_counter()
    for split, variant, n, seed in plan(args):
        if split not in datas:
            a, b = splits[split]
            datas[split] = {
                "A": a,
                "B": b,
                "Atrain": task_data(a),
                "Btrain": task_data(b),
                "Atest": task_data(a, "test"),
                "Btest": task_data(b, "test"),
            }
        row, model = run_point(split, variant, n, seed, datas[split], donors[split], args)
        if seed == 0:
            donors[split][variant[-1]] = model
        result["runs"].append(row)
        result["provenance"] = run_info(started)
        _write(result, path)
        print(f"[{time.perf_counter() - t0:7.1f} s] {len(result['runs'])} runs recorded", flush=True)
    result.update(complete=True, summary=summarise(result["runs"]), provenance=run_info(started))
    result["cpu_seconds"] = round(sum(r["cpu_seconds"] for r in result["runs"]), 1)
    _write(result, path)
    with open(os.path.join(args.results_dir, args.name + ".csv"), "w", newline="", encoding="utf-8") as f:
        f.write(csv_header(result["provenance"]))
        writer = csv.DictWriter(f, fieldnames=["split", "variant", "n", "mean", "std", "seeds"])
        writer.writeheader()
        writer.writerows(result["summary"])
    print(f"done in {result['provenance']['wall_seconds']} s (cpu {result['cpu_seconds']} s); wrote {path} and .csv")


if __name__ == "__main__":
    main()
