"""Per-seed learning-rate choice on validation, shared by notebook 13's two benchmarks (peft_compare, peft_photos).

The rule: every seed runs the whole grid and keeps the rate with its best validation accuracy; a tie goes to the
smaller rate. A method whose choice touched an edge of the grid gets the next rate beyond that edge in a second run
on those rates alone, and :func:`extend` keeps each seed's best of the union, as one run on the union would have.

Example:
    >>> best_rate({1e-3: 0.5, 1e-2: 0.7, 1e-1: 0.7})
    0.01
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

__all__ = ["best_rate", "extend", "run_grid"]

Run = TypeVar("Run")


def best_rate(val_acc: Mapping[float, float]) -> float:
    """The rate with the highest validation accuracy; of tied rates, the smallest."""
    return max(val_acc, key=lambda lr: (val_acc[lr], -lr))


def run_grid(
    lrs: Sequence[float], train: Callable[[float], Run], score: Callable[[Run], float]
) -> tuple[float, dict[float, float], dict[float, Run]]:
    """One seed's grid: ``train(lr)`` at every rate, ``score`` each run on validation; the choice, scores and runs.

    Example:
        >>> best_rate_, scores, runs = run_grid([0.1, 1.0], lambda lr: -abs(lr - 0.2), lambda run: run)
        >>> best_rate_, scores
        (0.1, {0.1: -0.1, 1.0: -0.8})
    """
    runs = {lr: train(lr) for lr in lrs}
    scores = {lr: score(runs[lr]) for lr in lrs}
    return best_rate(scores), scores, runs


def _key(lr: float) -> str:
    return f"{lr:g}"  # how the results files spell a rate


def extend(base: dict[str, Any], extra: dict[str, Any], paths: Sequence[str]) -> dict[str, Any]:
    """``base`` (a run or an earlier extension) and ``extra`` (the same settings, more ``lrs`` for some methods) as one.

    Each method's grid becomes the union (``settings.lrs_by_method``), and every seed keeps the best rate of the
    union on validation by :func:`best_rate`, whose run (test accuracy, ...) it takes from whichever file ran that
    rate. Extending again with the same ``extra`` changes nothing.

    Example:
        >>> base = {"settings": {"lrs": [1.0], "k": 2}, "provenance": {"commit": "a"}, "methods": {"m": {
        ...     "val_acc_by_lr": {"1": [0.5]}, "lr_by_seed": [1.0], "runs": [{"lr": 1.0, "test_acc": 0.4}]}}}
        >>> extra = {"settings": {"lrs": [10.0], "k": 2}, "provenance": {"commit": "b"}, "methods": {"m": {
        ...     "val_acc_by_lr": {"10": [0.6]}, "lr_by_seed": [10.0], "runs": [{"lr": 10.0, "test_acc": 0.5}]}}}
        >>> merged = extend(base, extra, ["base.json", "extra.json"])
        >>> merged["methods"]["m"]["lr_by_seed"], merged["settings"]["lrs_by_method"]
        ([10.0], {'m': [1.0, 10.0]})
        >>> extend(merged, extra, ["base.json", "extra.json"]) == merged
        True
    """
    drop = ("lrs", "methods", "lrs_by_method")  # an extended base carries each method's grid
    if {k: v for k, v in base["settings"].items() if k not in drop} != {
        k: v for k, v in extra["settings"].items() if k not in drop
    }:
        raise ValueError("the two runs differ in more than their rates and methods; rerun them alike")
    merged = {**base, "methods": {}, "settings": {**base["settings"], "lrs_by_method": {}}}
    for method, b in base["methods"].items():
        e = extra["methods"].get(method)
        own = base["settings"].get("lrs_by_method", {}).get(method, base["settings"]["lrs"])
        lrs = sorted(set(own) | set(extra["settings"]["lrs"] if e else []))
        merged["settings"]["lrs_by_method"][method] = lrs
        if e is None:
            merged["methods"][method] = b
            continue
        val = {_key(lr): (b["val_acc_by_lr"] | e["val_acc_by_lr"])[_key(lr)] for lr in lrs}
        runs = []
        for seed, (rb, re) in enumerate(zip(b["runs"], e["runs"], strict=True)):
            best = best_rate({lr: val[_key(lr)][seed] for lr in lrs})
            runs.append(rb if best == rb["lr"] else re)
            if best != runs[-1]["lr"]:
                raise ValueError(f"{method}, seed {seed}: the best rate {best:g} is in neither run's choices")
        merged["methods"][method] = {**b, "lr_by_seed": [r["lr"] for r in runs], "val_acc_by_lr": val, "runs": runs}
    parts = list(base["provenance"].get("parts", [base["provenance"]]))
    if extra["provenance"] not in parts:  # extending twice with the same run adds nothing
        parts.append(extra["provenance"])
    merged["provenance"] = {"parts": parts, "extended_from": list(paths)}
    return merged
