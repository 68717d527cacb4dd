"""Real photos, few labels: which features, and which source to transfer from? (the tables behind notebook 08)

Part 1, few labels on real photos. Six photos of scikit-image's wheel that look alike all over (brick, grass,
gravel, moon, cell, ihc; ``transferlab.photos.TEXTURES``) are cut into grey 64x64 patches: 32 train patches from the
LEFT half of each photo, 32 test patches from the RIGHT half (``photo_patches``). With k = 1, 3, 5 labelled patches per
class (``few_shot_indices``, one draw per seed), a logistic regression (scikit-learn, standardised inputs) is fitted on

* ``imagenet``  pooled features of EfficientNet-Lite0 with its ImageNet weights (patches resized to 96 px),
* ``random``    the same architecture with random weights (one fixed init, ``seed_everything(0)``),
* ``pixels``    the raw pixels (64 x 64 = 4,096 grey values),

and scored on all 192 test patches. Features are computed once per backbone (``extract_features``) and reused.

Part 2, which source? On the course's digits target (``target_dataset``: k labelled scenes per class; scored on the
first 500 scenes of the fixed test set, one scene of each held-out digit image), the same logistic regression on

* ``letters``   the course's TinyResNet pretrained on 52 printed letters in scenes (its own normalisation, 32 px),
* ``imagenet``  EfficientNet-Lite0 with ImageNet weights (scenes resized 32 -> 96 px, its own normalisation),
* ``pixels``    the raw pixels (3 x 32 x 32), as a reference.

Usage (repository root)::

    PYTHONPATH=src python benchmarks/real_photos.py  # full run -> src/transferlab/results/real_photos.*
    PYTHONPATH=src python benchmarks/real_photos.py --seeds 2 --digit-ks 5 --name quick   # a quick subset
    # or in parts, in parallel (one thread each; every run seeds itself, so the numbers do not depend on the grouping)
    PYTHONPATH=src python benchmarks/real_photos.py --parts photos --name rp_photos &
    PYTHONPATH=src python benchmarks/real_photos.py --parts digits --digit-ks 5 10 --name rp_digits_a &
    PYTHONPATH=src python benchmarks/real_photos.py --parts digits --digit-ks 50 --digit-seeds 0 --name rp_digits_b &
    ...; wait
    PYTHONPATH=src python benchmarks/real_photos.py --merge src/transferlab/results/rp_*.json

The result file records the command line, the git commit, the thread count, the machine load and the time per image.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import timm
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset
from torchvision.transforms import v2

from transferlab.data import target_dataset
from transferlab.env import seed_everything
from transferlab.features import extract_features
from transferlab.lite0 import EfficientNetLite0_Weights, efficientnet_lite0
from transferlab.models import TinyResNet_Weights, tiny_resnet
from transferlab.photos import TEXTURES, few_shot_indices, load_photo, photo_patches

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "src" / "transferlab" / "results"  # package data: notebooks read it through transferlab.results


def lite0_extractor(weights: EfficientNetLite0_Weights | None, size: int) -> nn.Module:
    """Resize to ``size``, normalise as the ImageNet weights expect, run Lite0 up to its pooled 1280 features."""
    seed_everything(0)  # the random-weights model is one fixed initialisation
    model = efficientnet_lite0(weights=weights)
    model.reset_classifier(0)  # timm: the head becomes Identity, the output is the pooled (N, 1280) features
    preprocess = EfficientNetLite0_Weights.DEFAULT.transforms()
    return nn.Sequential(v2.Resize((size, size), antialias=True), v2.Normalize(preprocess.mean, preprocess.std), model)


def letters_extractor() -> nn.Module:
    """The course's TinyResNet (letters) with its own normalisation, up to its pooled 256 features."""
    weights = TinyResNet_Weights.DEFAULT
    model = tiny_resnet(weights=weights)
    model.fc = nn.Identity()
    return nn.Sequential(weights.transforms(), model)


def features(backbone: nn.Module, images: Tensor, labels: Tensor) -> tuple[Tensor, float]:
    """Cached features of ``images`` and the seconds per image it took."""
    start = time.perf_counter()
    feats, _ = extract_features(backbone, DataLoader(TensorDataset(images, labels), batch_size=64)).tensors
    return feats, (time.perf_counter() - start) / len(images)


def probe_accuracy(train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor) -> float:
    """Logistic regression (standardised inputs, scikit-learn defaults) fitted on train, accuracy on test."""
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    clf.fit(train_x.numpy(), train_y.numpy())
    return float((clf.predict(test_x.numpy()) == test_y.numpy()).mean())


def part_photos(args) -> tuple[list[dict], dict]:
    train_x, train_y = photo_patches("train").tensors
    test_x, test_y = photo_patches("test").tensors
    pools, timing = {}, {}
    for method, weights in [("imagenet", EfficientNetLite0_Weights.DEFAULT), ("random", None)]:
        backbone = lite0_extractor(weights, args.size)
        tr, s_tr = features(backbone, train_x, train_y)
        te, s_te = features(backbone, test_x, test_y)
        pools[method], timing[f"lite0_{args.size}px_ms_per_patch_{method}"] = (tr, te), 1000 * (s_tr + s_te) / 2
    pools["pixels"] = (train_x[:, 0].flatten(1), test_x[:, 0].flatten(1))  # grey: one channel holds everything
    rows = []
    for k in args.ks:
        for seed in range(args.seeds):
            pick = few_shot_indices(train_y, k, seed)
            for method, (tr, te) in pools.items():
                acc = probe_accuracy(tr[pick], train_y[pick], te, test_y)
                rows.append({"part": "photos", "method": method, "k": k, "seed": seed, "accuracy": acc})
                print(f"photos k={k} seed={seed} {method:9s} {acc:.3f}", flush=True)
    return rows, timing


def part_digits(args) -> tuple[list[dict], dict]:
    test = target_dataset("test")
    test_x, test_y = test.images[: args.digit_test], test.labels[: args.digit_test]
    backbones = {
        "letters": letters_extractor(),
        "imagenet": lite0_extractor(EfficientNetLite0_Weights.DEFAULT, args.size),
    }
    test_feats, timing = {}, {}
    for name, backbone in backbones.items():
        test_feats[name], s = features(backbone, test_x, test_y)
        timing[f"{name}_ms_per_scene"] = 1000 * s
    test_feats["pixels"] = test_x.flatten(1)
    rows = []
    for k in args.digit_ks:
        for seed in args.digit_seeds:
            train = target_dataset("train", k=k, seed=seed)
            for name in ("letters", "imagenet", "pixels"):
                tr = (
                    train.images.flatten(1)
                    if name == "pixels"
                    else features(backbones[name], train.images, train.labels)[0]
                )
                acc = probe_accuracy(tr, train.labels, test_feats[name], test_y)
                rows.append({"part": "digits", "method": name, "k": k, "seed": seed, "accuracy": acc})
                print(f"digits k={k} seed={seed} {name:9s} {acc:.3f}", flush=True)
    return rows, timing


def photo_timing() -> dict:
    """Lite0 at 224 px (its own transforms) on real photos, batch 1, after one warm-up: ms per image, and the top-3."""
    weights = EfficientNetLite0_Weights.DEFAULT
    model = efficientnet_lite0(weights=weights).eval()
    names = ["chelsea", "coffee", "camera", "rocket", "motorcycle_left", "astronaut"]
    batch = torch.stack([weights.transforms()(load_photo(n)) for n in names])
    top3 = {}
    with torch.no_grad():
        model(batch[:1])
        start = time.perf_counter()
        probs = torch.cat([model(x[None]) for x in batch]).softmax(1)
        ms = 1000 * (time.perf_counter() - start) / len(names)
    for name, p in zip(names, probs, strict=True):
        values, index = p.topk(3)
        top3[name] = [[weights.meta["categories"][i], round(float(v), 3)] for v, i in zip(values, index, strict=True)]
    return {"lite0_224px_ms_per_photo_batch1": ms, "top3": top3}


def summarise(rows: list[dict]) -> dict:
    """part -> method -> k -> {mean, std, n} (std over seeds, population std as numpy's default)."""
    table: dict = {}
    for row in rows:
        table.setdefault(row["part"], {}).setdefault(row["method"], {}).setdefault(str(row["k"]), []).append(
            row["accuracy"]
        )
    return {
        part: {
            m: {k: {"mean": float(np.mean(v)), "std": float(np.std(v)), "n": len(v)} for k, v in ks.items()}
            for m, ks in methods.items()
        }
        for part, methods in table.items()
    }


def markdown(summary: dict, part: str, label: dict[str, str]) -> str:
    methods = summary[part]
    ks = list(next(iter(methods.values())))
    lines = ["| features | " + " | ".join(f"k = {k}" for k in ks) + " |", "|---|" + "---|" * len(ks)]
    for method, cells in methods.items():
        lines.append(
            f"| {label[method]} | " + " | ".join(f"{c['mean']:.3f} ± {c['std']:.3f}" for c in cells.values()) + " |"
        )
    return "\n".join(lines)


LABELS = {
    "photos": {"imagenet": "Lite0, ImageNet weights", "random": "Lite0, random weights", "pixels": "raw pixels"},
    "digits": {"letters": "TinyResNet, letters (ours)", "imagenet": "Lite0, ImageNet weights", "pixels": "raw pixels"},
}


def git_commit() -> str:
    def git(*cmd: str) -> str:
        return subprocess.run(["git", *cmd], cwd=ROOT, capture_output=True, text=True, check=False).stdout.strip()

    return git("rev-parse", "HEAD") + (" (with uncommitted changes)" if git("status", "--porcelain") else "")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ks", type=int, nargs="+", default=[1, 3, 5], help="labelled patches per class (photos)")
    p.add_argument("--seeds", type=int, default=10, help="draws of the k patches (photos)")
    p.add_argument("--size", type=int, default=96, help="Lite0 input size (64 px patches and 32 px scenes are resized)")
    p.add_argument("--digit-ks", type=int, nargs="+", default=[5, 10, 50], help="labelled scenes per class (digits)")
    p.add_argument("--digit-seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of the training sets (digits)")
    p.add_argument(
        "--digit-test", type=int, default=500, help="first N test scenes (500: one scene per held-out digit)"
    )
    p.add_argument("--parts", nargs="+", default=["photos", "digits"], choices=["photos", "digits"])
    p.add_argument("--merge", nargs="+", metavar="JSON", help="merge the runs of part files into one result")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--name", default="real_photos", help="results file stem in src/transferlab/results/")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    start, load_start, commit = time.perf_counter(), os.getloadavg(), git_commit()  # the code as it was when started
    if args.merge:
        parts = [json.loads(Path(path).read_text(encoding="utf-8")) for path in args.merge]
        rows = [row for part in parts for row in part["runs"]]
        timing = {key: value for part in parts for key, value in part["timing"].items()}
        provenance = [
            {
                key: part[key]
                for key in ("command", "commit", "threads", "loadavg_start", "loadavg_end", "benchmark_seconds")
            }
            for part in parts
        ]
        args.seeds = max(r["seed"] for r in rows if r["part"] == "photos") + 1
        args.digit_seeds = sorted({r["seed"] for r in rows if r["part"] == "digits"})
        args.threads = max(part["threads"] for part in parts)
    else:
        rows, timing, provenance = [], {}, []
        if "photos" in args.parts:
            timing.update(photo_timing())
            rows_p, t_p = part_photos(args)
            rows, timing = rows + rows_p, {**timing, **t_p}
        if "digits" in args.parts:
            rows_d, t_d = part_digits(args)
            rows, timing = rows + rows_d, {**timing, **t_d}
    summary = summarise(rows)
    result = {
        "command": " ".join(["python", *sys.argv]),
        "commit": commit,
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "threads": args.threads,
        "loadavg_start": load_start,
        "loadavg_end": os.getloadavg(),
        "note": "times measured under load (other jobs shared the 2 cores)" if load_start[0] > 2.5 else "",
        "machine": {
            "torch": torch.__version__,
            "timm": timm.__version__,
            "cpu": platform.processor(),
            "cpus": os.cpu_count(),
        },
        "args": vars(args),
        "classes": list(TEXTURES),
        "timing": timing,
        "benchmark_seconds": sum(p["benchmark_seconds"] for p in provenance)
        if args.merge
        else time.perf_counter() - start,
        "parts": provenance,
        "summary": summary,
        "runs": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / args.name
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    tables = ""
    if "photos" in summary:
        tables += (
            f"Few labels on real photos ({len(TEXTURES)} classes, chance {1 / len(TEXTURES):.3f}; "
            f"{args.seeds} seeds):\n\n{markdown(summary, 'photos', LABELS['photos'])}\n\n"
        )
    if "digits" in summary:
        tables += (
            f"Which source? Digits target ({len(args.digit_seeds)} seeds, {args.digit_test} test scenes):\n\n"
            f"{markdown(summary, 'digits', LABELS['digits'])}\n"
        )
    stem.with_suffix(".md").write_text(
        f"<!-- {result['command']} @ {result['commit']} -->\n\n{tables}", encoding="utf-8"
    )
    print(tables)
    print(f"wrote {stem}.json/.md in {result['benchmark_seconds']:.0f} s")


if __name__ == "__main__":
    main()
