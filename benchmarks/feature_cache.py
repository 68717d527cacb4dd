"""Benchmark: training a head on cached features vs recomputing the frozen backbone every epoch.

Both runs train the same linear head for E epochs on the course's target task with the frozen,
pretrained TinyResNet backbone. "recompute" runs the backbone on every batch of every epoch (what a
fixed-feature-extractor loop without caching does); "cached" runs it once (`extract_features`) and then
trains on the stored vectors (`train_head`). The speed-up is measured in one run, in one process.

    PYTHONPATH=src python benchmarks/feature_cache.py --epochs 10 --repeats 5   # make bench-cache

Writes src/transferlab/results/feature_cache.json (every repeat, their median, and the run's provenance).
Target: speed-up >= 0.8 x E.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch import nn
from torch.utils.data import DataLoader

from transferlab.data import TARGET_CLASSES, target_dataset
from transferlab.env import seed_everything
from transferlab.features import extract_features, train_head
from transferlab.models import TinyResNet_Weights, tiny_resnet

from provenance import RESULTS, run_info, run_started


def backbone_and_data(k: int | None, batch_size: int):
    weights = TinyResNet_Weights.DEFAULT
    backbone = tiny_resnet(weights=weights)
    in_features = backbone.fc.in_features
    backbone.fc = nn.Identity()
    backbone.requires_grad_(False)
    backbone.eval()
    data = target_dataset("train", k=k, seed=0, transform=weights.transforms())
    return backbone, in_features, data


def recompute(backbone: nn.Module, data, in_features: int, epochs: int, batch_size: int) -> float:
    seed_everything(0)
    head = nn.Linear(in_features, len(TARGET_CLASSES))
    optimizer = torch.optim.SGD(head.parameters(), lr=0.1, momentum=0.9)
    loader = DataLoader(data, batch_size=batch_size, shuffle=True, num_workers=0)
    start = time.perf_counter()
    for _ in range(epochs):
        for inputs, targets in loader:
            with torch.no_grad():
                features = backbone(inputs)  # the expensive part, repeated every epoch
            loss = nn.functional.cross_entropy(head(features), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return time.perf_counter() - start


def cached(backbone: nn.Module, data, in_features: int, epochs: int, batch_size: int) -> tuple[float, float]:
    seed_everything(0)
    head = nn.Linear(in_features, len(TARGET_CLASSES))
    optimizer = torch.optim.SGD(head.parameters(), lr=0.1, momentum=0.9)
    start = time.perf_counter()
    features = extract_features(backbone, DataLoader(data, batch_size=batch_size, num_workers=0))
    extracted = time.perf_counter()
    # No validation set: the benchmark times training only, as `recompute` does (fit then evaluates on the cache).
    train_head(head, features, None, optimizer, epochs, batch_size=batch_size, progress=False)
    return time.perf_counter() - start, extracted - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--k", type=int, default=None, help="labelled images per class (default: all)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1, help="measure both ways this many times, alternating")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = run_started()
    backbone, in_features, data = backbone_and_data(args.k, args.batch_size)
    runs = []
    for _ in range(args.repeats):
        t_recompute = recompute(backbone, data, in_features, args.epochs, args.batch_size)
        t_cached, t_extract = cached(backbone, data, in_features, args.epochs, args.batch_size)
        runs.append(
            {
                "recompute_s": round(t_recompute, 3),
                "cached_s": round(t_cached, 3),
                "extract_once_s": round(t_extract, 3),
                "head_s": round(t_cached - t_extract, 3),
                "speedup": round(t_recompute / t_cached, 2),
            }
        )
        print(
            f"{len(data)} images, {args.epochs} epochs: recompute {t_recompute:.2f} s, cached {t_cached:.2f} s "
            f"(extraction {t_extract:.2f} s) -> speed-up {t_recompute / t_cached:.1f}x",
            flush=True,
        )
    speedups = [r["speedup"] for r in runs]
    result = {
        "provenance": run_info(started),
        "epochs": args.epochs,
        "images": len(data),
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "speedup": statistics.median(speedups),
        "speedups": speedups,
        "target": round(0.8 * args.epochs, 2),
        "meets_target": statistics.median(speedups) >= 0.8 * args.epochs,
        "runs": runs,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "feature_cache.json").write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"median speed-up {result['speedup']:.1f}x over {args.repeats} run(s) {speedups} "
        f"(target >= {0.8 * args.epochs:.1f}x)"
    )


if __name__ == "__main__":
    main()
