"""How much does the course's pretrained TinyResNet help on the target task? (a benchmark script, not a test)

For k labelled images per class in {1, 5, 10, 20, 50, all} (100 on request) and 5 seeds (the seed picks the k images, the
initialisation of every new layer and the batch order), each method gets the same budget of optimisation steps:

* ``scratch``     TinyResNet from random init, every layer trained; the best of a few learning rates is reported
                  (each learning rate's own mean is stored too);
* ``features``    the pretrained backbone frozen as a fixed feature extractor (features computed once), a new
                  linear head trained on them;
* ``finetune``    the pretrained backbone with a new head, every layer trained;
* ``logreg``      scikit-learn logistic regression on the raw pixels, as a reference.

Accuracy is measured on the fixed held-out target test set (1,000 scenes of 500 digit images no training set
contains). Wall time of every run is recorded, and the pretraining time is read from the weights' metadata.

Usage (from the repository root, with ``PYTHONPATH=src``)::

    python benchmarks/transfer_gain.py                       # full run, writes benchmarks/results/transfer_gain.*
    python benchmarks/transfer_gain.py --ks 5 10 --seeds 2   # a quicker subset
    # parts can run in parallel (one thread each) and be merged; every run seeds itself, so the numbers do not
    # depend on how the runs are grouped (the committed results were made as part_a, part_b, part_c this way)
    python benchmarks/transfer_gain.py --ks 1 5 10 20 --threads 1 --name part_a &
    python benchmarks/transfer_gain.py --ks 50 all --threads 1 --name part_b; wait
    python benchmarks/transfer_gain.py --merge benchmarks/results/part_a.json benchmarks/results/part_b.json
    python benchmarks/transfer_gain.py --ks 5 10 --source-exclude OlZSbBg --weights /tmp/ablation.pt  # ablation
    python benchmarks/transfer_gain.py --ks 5 10 --methods scratch --scratch-variant grey   # rescue attempts
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable

import torch
from torch import Tensor, nn

from transferlab.data import TARGET_CLASSES, target_dataset
from transferlab.env import seed_everything
from transferlab.models import NORM_MEAN, NORM_STD, TinyResNet, TinyResNet_Weights

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
ALL_KS = ("1", "5", "10", "20", "50", "100", "all")
DEFAULT_KS = ("1", "5", "10", "20", "50", "all")  # k=100 is close to all (124-133 per class); run it with --ks


# ------------------------------------------------------------------------------------------------ tiny training loop
def normalise(images: Tensor) -> Tensor:
    return (images - torch.tensor(NORM_MEAN).view(1, 3, 1, 1)) / torch.tensor(NORM_STD).view(1, 3, 1, 1)


def greyscale(images: Tensor) -> Tensor:
    """Luminance, repeated over 3 channels (so the same network takes it)."""
    grey = (images * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    return grey.expand(-1, 3, -1, -1)


def augment(images: Tensor, g: torch.Generator) -> Tensor:
    """Colour and geometric augmentation: random channel order, random inversion, shifts of up to 4 pixels."""
    n = images.shape[0]
    perm = torch.stack([torch.randperm(3, generator=g) for _ in range(n)])
    images = images[torch.arange(n)[:, None], perm]
    invert = torch.rand(n, 1, 1, 1, generator=g) < 0.5
    images = torch.where(invert, 1 - images, images)
    padded = nn.functional.pad(images, (4, 4, 4, 4), mode="replicate")
    dx, dy = torch.randint(0, 9, (n,), generator=g), torch.randint(0, 9, (n,), generator=g)
    return torch.stack([padded[i, :, dy[i] : dy[i] + 32, dx[i] : dx[i] + 32] for i in range(n)])


def train_steps(model: nn.Module, params, images: Tensor, labels: Tensor, steps: int, lr: float, batch: int,
                seed: int, batch_fn: Callable[[Tensor, torch.Generator], Tensor] | None = None) -> None:  # fmt: skip
    """``steps`` AdamW steps with a cosine schedule on minibatches drawn (with replacement) from the images."""
    g = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(steps):
        pick = torch.randint(len(labels), (min(batch, 8 * len(labels)),), generator=g)
        x = images[pick] if batch_fn is None else batch_fn(images[pick], g)
        loss = loss_fn(model(x), labels[pick])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()


@torch.no_grad()
def accuracy(model: nn.Module, images: Tensor, labels: Tensor) -> float:
    model.eval()
    return float((torch.cat([model(x).argmax(1) for x in images.split(500)]) == labels).float().mean())


def pretrained_backbone(weights_path: str | None) -> dict[str, Tensor]:
    if weights_path:
        return torch.load(weights_path, map_location="cpu", weights_only=True)
    return TinyResNet_Weights.DEFAULT.get_state_dict()


def new_model(state: dict[str, Tensor] | None, seed: int) -> TinyResNet:
    """TinyResNet with a new 10-way head: random everywhere (state None) or pretrained below the head."""
    torch.manual_seed(seed)
    model = TinyResNet(num_classes=len(state["fc.bias"]) if state else len(TARGET_CLASSES))
    if state is not None:
        model.load_state_dict(state)
        model.fc = nn.Linear(model.fc.in_features, len(TARGET_CLASSES))
    return model


# ------------------------------------------------------------------------------------------------------- the methods
def run_scratch(train, test, seed, args, lr, variant="plain") -> float:
    prep = greyscale if variant == "grey" else (lambda x: x)
    model = new_model(None, seed)
    model.train()
    batch_fn = (lambda x, g: normalise(augment(x, g))) if variant == "augment" else None
    images = normalise(prep(train.images)) if batch_fn is None else train.images
    train_steps(model, model.parameters(), images, train.labels, args.steps, lr, args.batch, seed, batch_fn)
    return accuracy(model, normalise(prep(test.images)), test.labels)


def run_finetune(train, test, seed, args, state) -> float:
    model = new_model(state, seed)
    model.train()
    train_steps(model, model.parameters(), normalise(train.images), train.labels, args.steps, args.ft_lr,
                args.batch, seed)  # fmt: skip
    return accuracy(model, normalise(test.images), test.labels)


def run_features(train, test, seed, args, state) -> float:
    model = new_model(state, seed).eval()
    head, model.fc = model.fc, nn.Identity()
    with torch.no_grad():  # the backbone runs once over the images, not once per step
        f_train = torch.cat([model(x) for x in normalise(train.images).split(500)])
        f_test = torch.cat([model(x) for x in normalise(test.images).split(500)])
    train_steps(head, head.parameters(), f_train, train.labels, args.steps, args.fe_lr, args.batch, seed)
    return accuracy(head, f_test, test.labels)


def run_logreg(train, test, seed, args) -> float:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits  # installed with scikit-learn

    with warnings.catch_warnings(), threadpool_limits(limits=args.threads):
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = LogisticRegression(C=args.logreg_c, max_iter=300).fit(train.images.flatten(1).numpy(), train.labels)
    return float(clf.score(test.images.flatten(1).numpy(), test.labels.numpy()))


# ------------------------------------------------------------------------------------------------------------ driver
def timed(fn, *a, **kw) -> tuple[float, float]:
    start = time.perf_counter()
    acc = fn(*a, **kw)
    return acc, time.perf_counter() - start


def benchmark(args) -> list[dict]:
    state = pretrained_backbone(args.weights) if {"features", "finetune"} & set(args.methods) else None
    test = target_dataset("test", difficulty=args.difficulty, palette=args.palette)
    rows = []
    for k_name in args.ks:
        k = None if k_name == "all" else int(k_name)
        for seed in range(args.seeds):
            train = target_dataset("train", k=k, seed=seed, difficulty=args.difficulty, palette=args.palette)
            runs: list[tuple[str, Callable[[], float]]] = []
            if "scratch" in args.methods:
                for lr in args.scratch_lrs:
                    runs.append((f"scratch@{lr:g}", lambda lr=lr: run_scratch(train, test, seed, args, lr,
                                                                               args.scratch_variant)))  # fmt: skip
            if "features" in args.methods:
                runs.append(("features", lambda: run_features(train, test, seed, args, state)))
            if "finetune" in args.methods:
                runs.append(("finetune", lambda: run_finetune(train, test, seed, args, state)))
            if "logreg" in args.methods:
                runs.append(("logreg", lambda: run_logreg(train, test, seed, args)))
            for name, fn in runs:
                seed_everything(seed)
                acc, seconds = timed(fn)
                rows.append({"k": k_name, "n_train": len(train), "seed": seed, "run": name, "acc": acc,
                             "seconds": seconds})  # fmt: skip
                print(f"k={k_name:>4} seed={seed} {name:<16} acc={acc:.3f}  {seconds:5.1f} s", flush=True)
    return rows


def summarise(rows: list[dict]) -> dict[str, dict[str, dict[str, float]]]:
    """Per k and method: mean and std over seeds; ``scratch`` is the learning rate with the best mean."""
    table: dict[str, dict[str, dict[str, float]]] = {}
    for k in dict.fromkeys(r["k"] for r in rows):
        by_run: dict[str, list[dict]] = {}
        for r in rows:
            if r["k"] == k:
                by_run.setdefault(r["run"], []).append(r)
        stats = {name: {"mean": statistics.mean(x["acc"] for x in rs), "std": statistics.pstdev(x["acc"] for x in rs)
                        if len(rs) > 1 else 0.0, "seconds": statistics.mean(x["seconds"] for x in rs), "n": len(rs)}
                 for name, rs in by_run.items()}  # fmt: skip
        scratch = [n for n in stats if n.startswith("scratch@")]
        if scratch:
            best = max(scratch, key=lambda n: stats[n]["mean"])
            stats["scratch"] = {**stats[best], "lr": float(best.split("@")[1])}
        table[k] = stats
    return table


def verdict(table) -> dict[str, dict[str, float]]:
    """Gap between the best transfer method and the best scratch run, in points and in pooled stds."""
    out = {}
    for k, s in table.items():
        if "scratch" not in s or not {"features", "finetune"} & set(s):
            continue
        best = max((m for m in ("features", "finetune") if m in s), key=lambda m: s[m]["mean"])
        gap = s[best]["mean"] - s["scratch"]["mean"]
        pooled = ((s[best]["std"] ** 2 + s["scratch"]["std"] ** 2) / 2) ** 0.5
        # with a single seed there is no spread to compare against
        ratio = gap / pooled if pooled > 0 else float("nan")
        out[k] = {"best_transfer": best, "gap_points": 100 * gap, "gap_over_pooled_std": ratio}
    return out


def markdown_table(table) -> str:
    """Mean +- std (over seeds) of every method per k, and the mean seconds per run, as a Markdown table."""
    methods = [m for m in ("scratch", "features", "finetune", "logreg") if any(m in s for s in table.values())]
    names = {"scratch": "from scratch (best lr)", "features": "fixed features", "finetune": "full fine-tuning",
             "logreg": "logistic regression (pixels)"}  # fmt: skip
    lines = ["| k per class | " + " | ".join(names[m] for m in methods) + " |", "|---" * (len(methods) + 1) + "|"]
    for k, s in table.items():
        cells = [f"{s[m]['mean']:.3f} ± {s[m]['std']:.3f}" + (f" (lr {s[m]['lr']:g})" if m == "scratch" else "")
                 if m in s else "" for m in methods]  # fmt: skip
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    seconds = [f"{names[m]} {statistics.mean(s[m]['seconds'] for s in table.values() if m in s):.1f} s"
               for m in methods]  # fmt: skip
    return "\n".join(lines) + "\n\nMean wall time per run: " + ", ".join(seconds) + "."


def plot(table, path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = list(table)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    labels = {"finetune": "full fine-tuning", "features": "fixed feature extractor",
              "scratch": "from scratch (best lr)", "logreg": "logistic regression, raw pixels"}  # fmt: skip
    for m, style in (("finetune", "o-"), ("features", "s-"), ("scratch", "^-"), ("logreg", "x--")):
        pts = [(i, table[k][m]["mean"], table[k][m]["std"]) for i, k in enumerate(ks) if m in table[k]]
        if pts:
            i, mu, sd = zip(*pts)
            ax.errorbar(i, mu, yerr=sd, fmt=style, capsize=3, label=labels[m])
    ax.set_xticks(range(len(ks)), ks)
    ax.set_xlabel("labelled target images per class (k)")
    ax.set_ylabel("target test accuracy")
    ax.axhline(1 / len(TARGET_CLASSES), color="grey", lw=0.8, ls=":", label="chance")
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ks", nargs="+", default=list(DEFAULT_KS), choices=ALL_KS)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--methods", nargs="+", default=["scratch", "features", "finetune", "logreg"])
    p.add_argument("--steps", type=int, default=150, help="optimisation steps per run (same for every method)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--scratch-lrs", type=float, nargs="+", default=[3e-3, 1e-2, 3e-2],
                   help="scratch runs at each; the best mean is reported (3e-4 and 1e-3 were tried, never best)")
    p.add_argument("--scratch-variant", default="plain", choices=["plain", "grey", "augment"])
    p.add_argument("--ft-lr", type=float, default=1e-3)
    p.add_argument("--fe-lr", type=float, default=1e-2)
    p.add_argument("--logreg-c", type=float, default=0.1)
    p.add_argument("--difficulty", type=float, default=None, help="target scene difficulty (default: the data's)")
    p.add_argument("--palette", default=None, help="target palette (default: the data's)")
    p.add_argument("--weights", default=None, help="a state_dict file to transfer instead of the shipped weights")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--name", default="transfer_gain", help="results file stem in benchmarks/results/")
    p.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                   help="no training: combine the runs of earlier results files (e.g. parts run in parallel)")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    from transferlab import data

    args.difficulty = data.TARGET_DIFFICULTY if args.difficulty is None else args.difficulty
    args.palette = args.palette or data.TARGET_PALETTE
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    if args.merge:
        parts = [json.load(open(path, encoding="utf-8")) for path in args.merge]
        rows = [row for part in parts for row in part["runs"]]
        args.seeds = max(r["seed"] for r in rows) + 1
        args.merged_from = [os.path.basename(path) for path in args.merge]
    else:
        rows = benchmark(args)
    table = summarise(rows)
    gaps = verdict(table)
    meta = TinyResNet_Weights.DEFAULT.meta
    result = {
        "args": vars(args),
        "pretraining_seconds": meta.get("build", {}).get("seconds") if not args.weights else None,
        "source_test_accuracy": meta.get("_metrics") if not args.weights else None,
        "benchmark_seconds": sum(p["benchmark_seconds"] for p in parts) if args.merge else time.perf_counter() - start,
        "machine": {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": platform.processor(),
                    "cpus": os.cpu_count()},  # fmt: skip
        "summary": table,
        "gap": gaps,
        "runs": rows,
    }
    os.makedirs(RESULTS_DIR, exist_ok=True)
    stem = os.path.join(RESULTS_DIR, args.name)
    with open(stem + ".json", "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    with open(stem + ".csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["k", "method", "mean", "std", "seconds_per_run", "n_seeds", "lr"])
        writer.writeheader()
        for k, stats in table.items():
            for m, s in stats.items():
                writer.writerow({"k": k, "method": m, "mean": round(s["mean"], 4), "std": round(s["std"], 4),
                                 "seconds_per_run": round(s["seconds"], 2), "n_seeds": s["n"], "lr": s.get("lr", "")})  # fmt: skip
    plot(table, stem + ".png", f"TinyResNet, target: digits in scenes ({args.seeds} seeds, {args.steps} steps each)")
    print(markdown_table(table))
    for k, v in gaps.items():
        print(f"k={k:>4}: best transfer ({v['best_transfer']}) beats scratch by {v['gap_points']:.1f} points "
              f"= {v['gap_over_pooled_std']:.1f} pooled std")  # fmt: skip
    print(f"wrote {stem}.json/.csv/.png")


if __name__ == "__main__":
    main()
