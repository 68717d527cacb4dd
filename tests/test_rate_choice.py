"""The per-seed rate choice of notebook 13's benchmarks (benchmarks/rate_choice.py): toy runs and the stored files."""

import copy
import doctest
import json
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))  # the benchmarks import their helpers as top-level modules
import rate_choice

RESULTS = ROOT / "src" / "transferlab" / "results"


def test_docstring_examples():
    assert doctest.testmod(rate_choice).failed == 0


def test_best_rate_breaks_ties_towards_the_smaller_rate():
    assert rate_choice.best_rate({1e-2: 0.8, 1e-3: 0.8, 1e-1: 0.7}) == 1e-3
    assert rate_choice.best_rate({1e-2: 0.81, 1e-3: 0.8}) == 1e-2


def test_run_grid_trains_every_rate_once_and_scores_each():
    trained = []

    def train(lr):
        trained.append(lr)
        return {"lr": lr, "val": {0.1: 0.3, 0.3: 0.9, 1.0: 0.9}[lr]}

    best, scores, runs = rate_choice.run_grid([0.1, 0.3, 1.0], train, lambda run: run["val"])
    assert trained == [0.1, 0.3, 1.0]
    assert (best, scores) == (0.3, {0.1: 0.3, 0.3: 0.9, 1.0: 0.9})
    assert runs[1.0]["lr"] == 1.0


def _run(lrs, val_by_seed, chosen):
    """A results file with one method: val_by_seed[lr] lists the seeds' validation accuracies."""
    return {
        "settings": {"lrs": lrs, "k": 2, "methods": ["m"]},
        "provenance": {"commit": str(lrs)},
        "methods": {
            "m": {
                "val_acc_by_lr": {f"{lr:g}": v for lr, v in val_by_seed.items()},
                "lr_by_seed": chosen,
                "runs": [{"seed": s, "lr": lr, "test_acc": lr + s} for s, lr in enumerate(chosen)],
            }
        },
    }


def test_extend_keeps_each_seeds_best_of_the_union():
    base = _run([1e-3, 1e-2], {1e-3: [0.5, 0.6], 1e-2: [0.7, 0.6]}, [1e-2, 1e-3])
    extra = _run([1e-1], {1e-1: [0.9, 0.6]}, [1e-1, 1e-1])
    merged = rate_choice.extend(base, extra, ["a.json", "b.json"])
    method = merged["methods"]["m"]
    assert method["lr_by_seed"] == [1e-1, 1e-3]  # seed 0 moves to the new rate; seed 1's tie keeps the smaller rate
    assert [r["test_acc"] for r in method["runs"]] == [1e-1 + 0, 1e-3 + 1]  # each run from the file that ran it
    assert merged["settings"]["lrs_by_method"] == {"m": [1e-3, 1e-2, 1e-1]}
    assert merged["provenance"]["parts"] == [base["provenance"], extra["provenance"]]
    assert rate_choice.extend(merged, extra, ["a.json", "b.json"]) == merged  # idempotent


def test_extend_refuses_runs_with_other_settings():
    base = _run([1e-3], {1e-3: [0.5]}, [1e-3])
    extra = _run([1e-2], {1e-2: [0.6]}, [1e-2])
    extra["settings"]["k"] = 5
    with pytest.raises(ValueError, match="differ in more than their rates"):
        rate_choice.extend(base, extra, ["a.json", "b.json"])


def test_extend_refuses_a_choice_neither_run_made():
    base = _run([1e-3, 1e-2], {1e-3: [0.5], 1e-2: [0.7]}, [1e-3])  # a base whose recorded choice is not its best
    extra = _run([1e-1], {1e-1: [0.6]}, [1e-1])
    with pytest.raises(ValueError, match="in neither run's choices"):
        rate_choice.extend(base, extra, ["a.json", "b.json"])


@pytest.mark.parametrize(
    ("stored", "extra"),
    [("peft_compare", "peft_more_rates"), ("peft_photos", "peft_photos_more_rates_full")],
)
def test_the_stored_tables_are_what_their_last_extend_command_makes(stored, extra):
    """`make bench-peft` ends with these --extend commands: run on the committed files, they change nothing."""
    base = json.loads((RESULTS / f"{stored}.json").read_text(encoding="utf-8"))
    more = json.loads((RESULTS / f"{extra}.json").read_text(encoding="utf-8"))
    paths = [f"src/transferlab/results/{stored}.json", f"src/transferlab/results/{extra}.json"]
    assert rate_choice.extend(copy.deepcopy(base), more, paths) == base
