"""Compare a benchmark's stored results file with a re-run of its command: what is identical, what moved, how far.

A re-run on the same machine and thread count gives the same numbers; on another CPU the floating-point rounding of
its kernels differs, and trained models move by a seed's noise. This reports, per top-level section of the file:
how many leaves are identical, the largest difference among the measured values (floats: accuracies, losses, ...),
and every other leaf that differs: a *choice* (a learning rate or regularisation strength chosen on validation), a
count or a setting. Times, load averages and provenance are not compared.

Usage (from the repository root)::

    python benchmarks/compare_runs.py src/transferlab/results/unfreezing.json /tmp/rerun/.../unfreezing.json

Example:
    >>> report({"runs": [{"lr": 0.1, "acc": 0.5}]}, {"runs": [{"lr": 0.1, "acc": 0.52}]})["runs"]["max_diff"]
    0.02
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Iterator
from typing import Any

__all__ = ["report"]

SKIP = re.compile(
    r"provenance|parts|seconds|wall|^load|cpu|_ms|utc|commit|command|merged_from|extended_from|_correct$|^correct$"
)
CHOICE = re.compile(r"(^|_)(lr|lrs|c|best_c|chosen|body_lr|head_lr|lr_by_seed)$", re.IGNORECASE)


def _leaves(a: Any, b: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any, Any]]:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in a.keys() | b.keys():
            if not SKIP.search(str(key)):
                yield from _leaves(a.get(key), b.get(key), (*path, str(key)))
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            yield from _leaves(x, y, (*path, f"[{i}]"))
    else:
        yield path, a, b


def _is_choice(path: tuple[str, ...]) -> bool:
    """Whether the leaf's own name (its last key, list positions aside) names a choice: ``lr``, ``lr_by_seed``."""
    names = [part for part in path if not part.startswith("[")]
    return bool(names) and CHOICE.search(names[-1]) is not None


def report(stored: dict[str, Any], rerun: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per top-level key: leaves compared, identical, the largest float difference, the other differing leaves.

    The other differing leaves (chosen rates and strengths, counts, settings) are listed under ``"choices"``, each as
    ``"path: stored -> rerun"``.
    """
    sections: dict[str, dict[str, Any]] = {}
    for path, a, b in _leaves(stored, rerun):
        s = sections.setdefault(path[0] if path else "", {"leaves": 0, "identical": 0, "max_diff": 0.0, "choices": []})
        s["leaves"] += 1
        if a == b:
            s["identical"] += 1
        elif _is_choice(path):
            s["choices"].append(f"{'/'.join(path)}: {a} -> {b}")
        elif isinstance(a, float) and isinstance(b, float):  # a measured value (ints are counts and settings)
            s["max_diff"] = max(s["max_diff"], round(abs(a - b), 6))
        else:
            s["choices"].append(f"{'/'.join(path)}: {str(a)[:40]} -> {str(b)[:40]}")
    return sections


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("stored")
    parser.add_argument("rerun")
    args = parser.parse_args()
    stored, rerun = (json.loads(open(p, encoding="utf-8").read()) for p in (args.stored, args.rerun))
    for name, s in report(stored, rerun).items():
        line = f"{name}: {s['identical']}/{s['leaves']} identical, largest value difference {s['max_diff']:g}"
        print(line + (f", {len(s['choices'])} other leaves differ:" if s["choices"] else ", no other leaf differs"))
        for choice in s["choices"][:12]:
            print("   ", choice)
        if len(s["choices"]) > 12:
            print(f"    ... and {len(s['choices']) - 12} more")


if __name__ == "__main__":
    main()
