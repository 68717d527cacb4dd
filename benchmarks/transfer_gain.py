"""How much does the course's pretrained TinyResNet help on the target task? (a benchmark script, not a test)

For k labelled images per class in {1, 5, 10, 20, 50, all} (100 on request) and 5 seeds (the seed picks the k images,
the initialisation of every new layer and the batch order), each method gets the same budget of optimisation steps
(``transferlab.training.train_steps``: AdamW, cosine schedule, batches drawn with replacement by a seeded generator):

* ``scratch``     ``tiny_resnet(num_classes=10)`` from random init, every layer trained; the best of a few learning
                  rates is reported (each learning rate's own mean is stored too);
* ``features``    the pretrained backbone (``TinyResNet_Weights.DEFAULT``) frozen as a fixed feature extractor
                  (``extract_features``: computed once), the new head from ``replace_head`` trained on them;
* ``finetune``    the pretrained backbone with the new head, every layer trained;
* ``logreg``      scikit-learn logistic regression on the raw pixels, as a reference.

Inputs are normalised with ``TinyResNet_Weights.DEFAULT.transforms()``. Accuracy (``transferlab.training.evaluate``) is
measured on the fixed held-out target test set (1,000 scenes of 500 digit images no training set contains). Wall time
of every run is recorded, and the pretraining time is read from the weights' metadata. Every results file records
the command, the commit, the thread count and the load average (see ``benchmarks/provenance.py``).

Usage (from the repository root, with ``PYTHONPATH=src``; the Makefile's ``bench-*`` targets run the committed ones)::

    python benchmarks/transfer_gain.py --threads 1  # everything: src/transferlab/results/transfer_gain.*
    python benchmarks/transfer_gain.py --ks 5 --threads 1 --name transfer_gain_k5 \\
        --compare src/transferlab/results/transfer_gain.json  # the README's k=5 row (make bench-transfer)
    # parts can run in parallel (one thread each) and be merged; every run seeds itself, so the numbers do not
    # depend on how the runs are grouped (the committed results were made as part_a, part_b, part_c this way)
    python benchmarks/transfer_gain.py --ks 1 5 10 20 --threads 1 --name part_a &
    python benchmarks/transfer_gain.py --ks 50 all --threads 1 --name part_b; wait
    python benchmarks/transfer_gain.py --merge src/transferlab/results/part_a.json src/transferlab/results/part_b.json
    # ablation (make bench-ablation): pretrain without the digit-like letters, then transfer those weights
    python -m transferlab.pretrain --exclude OlZSbBg --threads 1 --out /tmp/ablation.pt
    python benchmarks/transfer_gain.py --ks 5 10 --methods features finetune --weights /tmp/ablation.pt --threads 1
    python benchmarks/transfer_gain.py --ks 5 10 --seeds 3 --methods scratch --scratch-lrs 0.01 --scratch-variant grey
    # repeat check (make bench-repeat): rerun k=5, seed 0 and compare every accuracy with the table's run
    python benchmarks/transfer_gain.py --ks 5 --seeds 1 --threads 1 --name repeat_check_t1 \\
        --compare src/transferlab/results/transfer_gain.json --must-match
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

from transferlab.data import TARGET_CLASSES, target_dataset
from transferlab.env import seed_everything
from transferlab.features import extract_features
from transferlab.heads import replace_head
from transferlab.models import TinyResNet_Weights, tiny_resnet
from transferlab.serialization import load_state_dict_file
from transferlab.training import evaluate, train_steps

from provenance import RESULTS, csv_header, run_info, run_started

ALL_KS = ("1", "5", "10", "20", "50", "100", "all")
DEFAULT_KS = ("1", "5", "10", "20", "50", "all")  # k=100 is close to all (124-133 per class); run it with --ks
NORMALISE = TinyResNet_Weights.DEFAULT.transforms()


# ------------------------------------------------------------------------------------- what only the benchmark needs
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


def batches(images: Tensor, labels: Tensor, size: int = 500) -> list[tuple[Tensor, Tensor]]:
    return list(zip(images.split(size), labels.split(size), strict=True))


def budget(model: nn.Module, params: Iterable[nn.Parameter], images: Tensor, labels: Tensor, lr: float,
           args: argparse.Namespace, seed: int, transform: Callable[[Tensor], Tensor] | None = None,
           generator: torch.Generator | None = None) -> None:
    """The same budget for every method: ``args.steps`` AdamW steps, cosine schedule, batches drawn by ``seed``."""
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, args.steps)
    generator = generator or torch.Generator().manual_seed(seed)
    train_steps(model, (images, labels), args.steps, optimizer, batch_size=min(args.batch, 8 * len(labels)),
                generator=generator, transform=transform, scheduler=schedule)


def test_accuracy(model: nn.Module, images: Tensor, labels: Tensor) -> float:
    return evaluate(model, batches(images, labels))[1]


def pretrained(weights: str | None, seed: int) -> nn.Module:
    """The pretrained TinyResNet (shipped weights, or a state_dict file) with a new 10-way head seeded by ``seed``."""
    torch.manual_seed(seed)
    if weights is None:
        model = tiny_resnet(weights=TinyResNet_Weights.DEFAULT)
    else:
        state = load_state_dict_file(weights)
        model = tiny_resnet(num_classes=len(state["fc.bias"]))
        model.load_state_dict(state)
    return replace_head(model, len(TARGET_CLASSES))


# ------------------------------------------------------------------------------------------------------- the methods
def run_scratch(train, test, seed, args, lr, variant="plain") -> float:
    torch.manual_seed(seed)
    model = tiny_resnet(num_classes=len(TARGET_CLASSES))
    prep = greyscale if variant == "grey" else (lambda x: x)
    if variant == "augment":  # augmented per step, with the generator that draws the batches
        g = torch.Generator().manual_seed(seed)
        budget(model, model.parameters(), train.images, train.labels, lr, args, seed,
               transform=lambda x: NORMALISE(augment(x, g)), generator=g)
    else:
        budget(model, model.parameters(), NORMALISE(prep(train.images)), train.labels, lr, args, seed)
    return test_accuracy(model, NORMALISE(prep(test.images)), test.labels)


def run_finetune(train, test, seed, args) -> float:
    model = pretrained(args.weights, seed)
    budget(model, model.parameters(), NORMALISE(train.images), train.labels, args.ft_lr, args, seed)
    return test_accuracy(model, NORMALISE(test.images), test.labels)


def run_features(train, test, seed, args) -> float:
    model = pretrained(args.weights, seed)
    head, model.fc = model.fc, nn.Identity()
    f_train = extract_features(model, batches(NORMALISE(train.images), train.labels))  # once, not once per step
    f_test = extract_features(model, batches(NORMALISE(test.images), test.labels))
    budget(head, head.parameters(), *f_train.tensors, args.fe_lr, args, seed)
    return test_accuracy(head, *f_test.tensors)


def run_logreg(train, test, seed, args) -> float:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits  # installed with scikit-learn

    with warnings.catch_warnings(), threadpool_limits(limits=args.threads):
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = LogisticRegression(C=args.logreg_c, max_iter=300).fit(train.images.flatten(1).numpy(), train.labels)
    return float(clf.score(test.images.flatten(1).numpy(), test.labels.numpy()))


# ------------------------------------------------------------------------------------------------------------ driver
def planned_runs(args) -> list[tuple[str, Callable[..., float], tuple]]:
    """``(name, method, extra arguments)`` of every run on one training set, in the order they run."""
    runs = [(f"scratch@{lr:g}", run_scratch, (lr, args.scratch_variant)) for lr in args.scratch_lrs]
    runs = runs if "scratch" in args.methods else []
    others = {"features": run_features, "finetune": run_finetune, "logreg": run_logreg}
    return runs + [(name, method, ()) for name, method in others.items() if name in args.methods]


def benchmark(args) -> list[dict]:
    test = target_dataset("test", difficulty=args.difficulty, palette=args.palette)
    rows = []
    for k_name in args.ks:
        k = None if k_name == "all" else int(k_name)
        for seed in range(args.seeds):
            train = target_dataset("train", k=k, seed=seed, difficulty=args.difficulty, palette=args.palette)
            for name, method, extra in planned_runs(args):
                seed_everything(seed)
                start = time.perf_counter()
                acc = method(train, test, seed, args, *extra)
                seconds = time.perf_counter() - start
                row = {"k": k_name, "n_train": len(train), "seed": seed, "run": name, "acc": acc, "seconds": seconds}
                rows.append(row)
                print(f"k={k_name:>4} seed={seed} {name:<16} acc={acc:.3f}  {seconds:5.1f} s", flush=True)
    return rows


def _stats(runs: list[dict]) -> dict[str, float]:
    accs = [r["acc"] for r in runs]
    std = statistics.pstdev(accs) if len(accs) > 1 else 0.0
    return {"mean": statistics.mean(accs), "std": std, "seconds": statistics.mean(r["seconds"] for r in runs),
            "n": len(runs)}


def summarise(rows: list[dict]) -> dict[str, dict[str, dict[str, float]]]:
    """Per k and method: mean and std over seeds; ``scratch`` is the learning rate with the best mean."""
    table: dict[str, dict[str, dict[str, float]]] = {}
    for k in dict.fromkeys(r["k"] for r in rows):
        by_run: dict[str, list[dict]] = {}
        for r in rows:
            if r["k"] == k:
                by_run.setdefault(r["run"], []).append(r)
        stats = {name: _stats(runs) for name, runs in by_run.items()}
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


def compare(rows: list[dict], path: str) -> dict[str, object]:
    """The repeat check: every run here against the run with the same k, seed and name in an earlier results file."""
    with open(path, encoding="utf-8") as f:
        earlier = {(r["k"], r["seed"], r["run"]): r["acc"] for r in json.load(f)["runs"]}
    pairs = [(r, earlier.get((r["k"], r["seed"], r["run"]))) for r in rows]
    # accuracies are counts over the 1,000 test images: equal counts are the same result
    # runs are named "seed S name": one name per seed would let a differing seed hide behind an identical one
    label = "seed {} {}".format
    same = [label(r["seed"], r["run"]) for r, acc in pairs
            if acc is not None and round(1000 * acc) == round(1000 * r["acc"])]
    differ = {label(r["seed"], r["run"]): [acc, r["acc"]] for r, acc in pairs
              if acc is not None and label(r["seed"], r["run"]) not in same}
    missing = [label(r["seed"], r["run"]) for r, acc in pairs if acc is None]
    return {"against": os.path.relpath(path), "identical": same, "different": differ, "missing": missing,
            "all_identical": not differ and not missing}


NAMES = {"scratch": "from scratch (best lr)", "features": "fixed features", "finetune": "full fine-tuning",
         "logreg": "logistic regression (pixels)"}


def markdown_table(table) -> str:
    """Mean +- std (over seeds) of every method per k, and the mean seconds per run, as a Markdown table."""
    methods = [m for m in NAMES if any(m in s for s in table.values())]
    lines = ["| k per class | " + " | ".join(NAMES[m] for m in methods) + " |", "|---" * (len(methods) + 1) + "|"]
    for k, s in table.items():
        cells = []
        for m in methods:
            lr = f" (lr {s[m]['lr']:g})" if m == "scratch" and m in s else ""
            cells.append(f"{s[m]['mean']:.3f} ± {s[m]['std']:.3f}{lr}" if m in s else "")
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    seconds = [f"{NAMES[m]} {statistics.mean(s[m]['seconds'] for s in table.values() if m in s):.1f} s"
               for m in methods]
    return "\n".join(lines) + "\n\nMean wall time per run: " + ", ".join(seconds) + "."


def plot(table, path: str, title: str, info: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = list(table)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for m, style in (("finetune", "o-"), ("features", "s-"), ("scratch", "^-"), ("logreg", "x--")):
        pts = [(i, table[k][m]["mean"], table[k][m]["std"]) for i, k in enumerate(ks) if m in table[k]]
        if pts:
            i, mu, sd = zip(*pts, strict=True)
            ax.errorbar(i, mu, yerr=sd, fmt=style, capsize=3, label=NAMES[m])
    ax.set_xticks(range(len(ks)), ks)
    ax.set_xlabel("labelled target images per class (k)")
    ax.set_ylabel("target test accuracy")
    ax.axhline(1 / len(TARGET_CLASSES), color="grey", lw=0.8, ls=":", label="chance")
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    footer = f"commit {info['commit'][:10]}, {info['threads']} thread(s), load {info['load_average'][0]:.1f}"
    fig.text(0.99, 0.01, footer, ha="right", va="bottom", fontsize=6, color="grey")
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Description": json.dumps(info)})
    plt.close(fig)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ks", nargs="+", default=list(DEFAULT_KS), choices=ALL_KS)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--methods", nargs="+", default=["scratch", "features", "finetune", "logreg"],
                   choices=["scratch", "features", "finetune", "logreg"])
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
    p.add_argument("--weights", default=None, help="a state_dict file to transfer instead of the shipped weights "
                   "(e.g. from `python -m transferlab.pretrain --exclude ... --out FILE`)")
    p.add_argument("--threads", type=int, default=1, help="torch (and scikit-learn) CPU threads")
    p.add_argument("--name", default="transfer_gain", help="results file stem in src/transferlab/results/")
    p.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                   help="no training: combine the runs of earlier results files (e.g. parts run in parallel)")
    p.add_argument("--compare", default=None, metavar="JSON",
                   help="repeat check: compare every accuracy with the same run (k, seed, method) in this results file")
    p.add_argument("--must-match", action="store_true", help="with --compare: exit 1 unless every run is identical")
    return p.parse_args(argv)


def write_results(stem: str, result: dict) -> None:
    """``stem``.json (everything), .csv (the summary, provenance in ``#`` lines above it), .png (the plot)."""
    with open(stem + ".json", "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    with open(stem + ".csv", "w", newline="", encoding="utf-8") as f:
        f.write(csv_header(result["provenance"]))
        writer = csv.DictWriter(f, fieldnames=["k", "method", "mean", "std", "seconds_per_run", "n_seeds", "lr"])
        writer.writeheader()
        for k, stats in result["summary"].items():
            for m, s in stats.items():
                row = {"k": k, "method": m, "mean": round(s["mean"], 4), "std": round(s["std"], 4),
                       "seconds_per_run": round(s["seconds"], 2), "n_seeds": s["n"], "lr": s.get("lr", "")}
                writer.writerow(row)
    args = result["args"]
    title = f"TinyResNet, target: digits in scenes ({args['seeds']} seeds, {args['steps']} steps each)"
    plot(result["summary"], stem + ".png", title, result["provenance"])


def main(argv=None) -> int:
    args = parse_args(argv)
    from transferlab import data

    args.difficulty = data.TARGET_DIFFICULTY if args.difficulty is None else args.difficulty
    args.palette = args.palette or data.TARGET_PALETTE
    torch.set_num_threads(args.threads)
    started = run_started()
    parts = []
    if args.merge:
        for path in args.merge:
            with open(path, encoding="utf-8") as f:
                parts.append(json.load(f))
        rows = [row for part in parts for row in part["runs"]]
        args.seeds = max(r["seed"] for r in rows) + 1
        args.merged_from = [os.path.basename(path) for path in args.merge]
    else:
        rows = benchmark(args)
    table = summarise(rows)
    meta = TinyResNet_Weights.DEFAULT.meta
    result = {
        "args": vars(args),
        "provenance": run_info(started),
        "parts_provenance": {os.path.basename(p): part.get("provenance") for p, part in zip(args.merge or [], parts,
                                                                                                strict=True)},
        "pretraining_seconds": meta.get("build", {}).get("seconds") if not args.weights else None,
        "source_test_accuracy": meta.get("_metrics") if not args.weights else None,
        "benchmark_seconds": sum(p["benchmark_seconds"] for p in parts) if parts else time.time() - started["time"],
        "summary": table,
        "gap": verdict(table),
        "repeat_check": compare(rows, args.compare) if args.compare else None,
        "runs": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = str(RESULTS / args.name)
    write_results(stem, result)
    print(markdown_table(table))
    for k, v in result["gap"].items():
        print(f"k={k:>4}: best transfer ({v['best_transfer']}) beats scratch by {v['gap_points']:.1f} points "
              f"= {v['gap_over_pooled_std']:.1f} pooled std")
    print(f"wrote {stem}.json/.csv/.png")
    if result["repeat_check"] is not None:
        check = result["repeat_check"]
        print(f"repeat check against {check['against']}: identical {check['identical']}, different "
              f"{check['different']}, missing {check['missing']}")
        return 0 if check["all_identical"] or not args.must_match else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
