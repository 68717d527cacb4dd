"""benchmarks/compare_runs.py: a stored results file against a re-run of its command."""

import doctest
import sys

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))  # the benchmarks import their helpers as top-level modules
import compare_runs

STORED = {
    "provenance": {"commit": "a", "wall_seconds": 10.0},
    "runs": [{"seed": 0, "lr": 0.01, "val_acc": 0.5, "test_acc": 0.6, "cpu_seconds": 3.0, "test_correct": "0101"}],
    "chosen": {"scratch": {"lr": 0.01}},
}


def test_docstring_examples():
    assert doctest.testmod(compare_runs).failed == 0


def test_a_rerun_that_only_ran_elsewhere_is_identical():
    rerun = {**STORED, "provenance": {"commit": "b", "wall_seconds": 99.0}}
    rerun["runs"] = [{**STORED["runs"][0], "cpu_seconds": 5.0, "test_correct": "1111"}]  # times and bitmaps skipped
    report = compare_runs.report(STORED, rerun)
    assert "provenance" not in report
    assert report["runs"] == {"leaves": 4, "identical": 4, "max_diff": 0.0, "choices": []}


def test_moved_values_and_changed_choices_are_reported_apart():
    rerun = {
        **STORED,
        "runs": [{**STORED["runs"][0], "test_acc": 0.625}],
        "chosen": {"scratch": {"lr": 0.03}},
    }
    report = compare_runs.report(STORED, rerun)
    assert report["runs"]["max_diff"] == 0.025 and report["runs"]["choices"] == []
    assert report["chosen"]["choices"] == ["chosen/scratch/lr: 0.01 -> 0.03"]
