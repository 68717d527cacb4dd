"""How much does the course's pretrained TinyResNet help on the target task? (a benchmark script, not a test)

For k labelled images per class in {1, 5, 20, all} (10, 50, 100 on request) and 5 seeds (the seed picks the k
images, the initialisation of every new layer and the batch order), every method gets the same recipe and budget
(``recipe``: ``--steps`` AdamW steps, default weight decay, cosine schedule, batches of ``--batch`` drawn with
replacement by a seeded generator, the last weights tested) and its learning rate from the SAME grid (``--lrs``),
chosen per k by the mean accuracy on the VALIDATION part of the held-out set (``split_held_out``: the scenes of 100
of its 500 digit images; the other 800 scenes are the test part, reported):

* ``scratch``     ``tiny_resnet(num_classes=10)`` from random init, every layer trained;
* ``features``    the pretrained backbone (``TinyResNet_Weights.DEFAULT``) frozen as a fixed feature extractor
                  (``extract_features``: computed once), the new head from ``replace_head`` trained on them;
* ``finetune``    the pretrained backbone with the new head, every layer trained;
* ``logreg``      scikit-learn logistic regression on the raw pixels, the baseline (``C`` chosen on validation).

At ``--convergence-ks`` scratch runs again with twice the steps at its chosen learning rate: is it under-trained?
Notebook 05 runs the same recipe with 10 steps at k = 5 (and a grid half a decade higher). Spreads are sample
standard deviations (ddof = 1) and every comparison is paired over seeds (``paired``: a tie unless the mean
difference clears 2 standard errors). Inputs are normalised with ``TinyResNet_Weights.DEFAULT.transforms()``. Wall
and CPU time of every run are recorded, and the pretraining time is read from the weights' metadata. Every results
file records the command, the commit, the thread count and the load average (see ``benchmarks/provenance.py``).

A table can be built in parts and merged (every run seeds itself, so the numbers do not depend on how the runs are
grouped): ``--seed-list`` adds seeds, ``--chosen-from`` runs every method only at the rate an earlier file chose
(and skips the runs it holds), ``--select-seeds`` makes a merge choose every rate on those seeds' validation
accuracy. ``benchmarks/transfer_table.sh`` (make bench-table) is the sequence that made the committed table.

Usage (from the repository root, with ``PYTHONPATH=src``)::

    python benchmarks/transfer_gain.py --threads 1  # the whole grid for every seed (about 40 min of one core)
    bash benchmarks/transfer_table.sh python        # the committed table (src/transferlab/results/transfer_gain.*)
    # repeat check (make bench-repeat): rerun k=5, seed 0 and compare every accuracy with the table's run
    python benchmarks/transfer_gain.py --ks 5 --seed-list 0 --convergence-ks --threads 1 --name repeat_check_t1 \\
        --compare src/transferlab/results/transfer_gain.json --must-match
    # other questions: transfer other weights (--weights FILE, e.g. from `python -m transferlab.pretrain --exclude
    # OlZSbBg --out FILE`), or scratch on greyscale or augmented input (--methods scratch --scratch-variant grey)
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
from transferlab.models import TinyResNet_Weights, tiny_resnet, tiny_resnet_from_file
from transferlab.training import evaluate, train_recipe

from provenance import RESULTS, csv_header, run_info, run_started

ALL_KS = ("1", "5", "10", "20", "50", "100", "all")
TEST_SCENES = 2  # the held-out set shows every digit image in this many scenes (data.TARGET_TEST_SCENES)
VAL_DIGITS = 100  # digit images whose scenes form the validation part of the held-out set
# The one learning-rate grid of every method, half-decade steps. 1e-3..1e-2 left chosen rates at both edges (scratch
# 1e-2 at every k, fine-tuning 1e-3 at k = 5 and 20): widened by one point on each side so that every choice is inside.
LRS = (3e-4, 1e-3, 3e-3, 1e-2, 3e-2)
LOGREG_CS = (1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0, 1000.0)  # the pixel baseline's grid of C, widened until inside
DEFAULT_KS = ("1", "5", "20", "all")  # 10 and 50 cut to fit 35 min of one core; k=100 is close to all
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


def recipe(
    model: nn.Module,
    params: Iterable[nn.Parameter],
    images: Tensor,
    labels: Tensor,
    lr: float,
    steps: int,
    batch: int,
    seed: int,
    transform: Callable[[Tensor], Tensor] | None = None,
    generator: torch.Generator | None = None,
) -> None:
    """The one training recipe of every method: `transferlab.training.train_recipe`, as notebook 05 runs it.

    ``steps`` AdamW steps (PyTorch's default weight decay, 0.01) at learning rate ``lr`` with a cosine schedule
    down to 0, each on ``batch`` images drawn with replacement by a generator seeded with ``seed``; the weights
    after the last step are the result (no best-epoch selection).
    """
    train_recipe(
        model,
        params,
        (images, labels),
        steps,
        lr,
        seed=seed,
        batch_size=batch,
        transform=transform,
        generator=generator,
    )


def accuracies(model: nn.Module, held_out: dict[str, tuple[Tensor, Tensor]]) -> dict[str, float]:
    """Accuracy on the validation and the test part of the held-out set."""
    return {part: evaluate(model, batches(images, labels))[1] for part, (images, labels) in held_out.items()}


def pretrained(weights: str | None, seed: int) -> nn.Module:
    """The pretrained TinyResNet (shipped weights, or a state_dict file) with a new 10-way head seeded by ``seed``."""
    torch.manual_seed(seed)
    if weights is None:
        model = tiny_resnet(weights=TinyResNet_Weights.DEFAULT)
    else:
        model = tiny_resnet_from_file(weights)  # all or nothing; the head replaced below
    return replace_head(model, len(TARGET_CLASSES))


def split_held_out(test) -> dict[str, tuple[Tensor, Tensor]]:
    """The fixed held-out set cut into validation (picks learning rates) and test (reported), by digit image.

    The held-out set shows each of its 500 digit images in two scenes; the scenes of the first ``VAL_DIGITS``
    digit images (200 scenes) are the validation part, the other 800 the test part, so no digit image is in both.
    Notebook 05 uses the first 100 scenes as validation and the next 300 as test: a subset of the same split.
    """
    digit = torch.arange(len(test)) % (len(test) // TEST_SCENES)
    val = digit < VAL_DIGITS
    return {"val": (test.images[val], test.labels[val]), "test": (test.images[~val], test.labels[~val])}


def normalised(held_out, prep: Callable[[Tensor], Tensor] = lambda x: x) -> dict[str, tuple[Tensor, Tensor]]:
    return {part: (NORMALISE(prep(images)), labels) for part, (images, labels) in held_out.items()}


# ------------------------------------------------------------------------------------------------------- the methods
def run_scratch(train, held_out, seed, args, lr, steps=None, variant="plain") -> dict[str, float]:
    torch.manual_seed(seed)
    model = tiny_resnet(num_classes=len(TARGET_CLASSES))
    prep = greyscale if variant == "grey" else (lambda x: x)
    steps, batch = steps or args.steps, min(args.batch, 8 * len(train.labels))
    if variant == "augment":  # augmented per step, with the generator that draws the batches
        g = torch.Generator().manual_seed(seed)
        recipe(
            model,
            model.parameters(),
            train.images,
            train.labels,
            lr,
            steps,
            batch,
            seed,
            transform=lambda x: NORMALISE(augment(x, g)),
            generator=g,
        )
    else:
        recipe(model, model.parameters(), NORMALISE(prep(train.images)), train.labels, lr, steps, batch, seed)
    return accuracies(model, normalised(held_out, prep))


def run_finetune(train, held_out, seed, args, lr) -> dict[str, float]:
    model = pretrained(args.weights, seed)
    recipe(
        model,
        model.parameters(),
        NORMALISE(train.images),
        train.labels,
        lr,
        args.steps,
        min(args.batch, 8 * len(train.labels)),
        seed,
    )
    return accuracies(model, normalised(held_out))


_FEATURES: dict[tuple, object] = {}  # the backbone runs once per image set, not once per learning rate


def _features(args, key, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    if key not in _FEATURES:
        _FEATURES.clear() if len(_FEATURES) > 8 else None
        model = pretrained(args.weights, 0)
        model.fc = nn.Identity()
        _FEATURES[key] = extract_features(model, batches(NORMALISE(images), labels)).tensors
    return _FEATURES[key]


def run_features(train, held_out, seed, args, lr) -> dict[str, float]:
    head = pretrained(args.weights, seed).fc  # the same seeded head as fine-tuning's
    f_train = _features(args, ("train", len(train), seed, int(train.source_index.sum())), train.images, train.labels)
    f_held = {part: _features(args, (part,), *data) for part, data in held_out.items()}
    recipe(head, head.parameters(), *f_train, lr, args.steps, min(args.batch, 8 * len(train.labels)), seed)
    return accuracies(head, f_held)


def run_logreg(train, held_out, seed, args, c) -> dict[str, float]:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits  # installed with scikit-learn

    with warnings.catch_warnings(), threadpool_limits(limits=args.threads):
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = LogisticRegression(C=c, max_iter=300).fit(train.images.flatten(1).numpy(), train.labels)
    return {
        part: float(clf.score(images.flatten(1).numpy(), labels.numpy())) for part, (images, labels) in held_out.items()
    }


# ------------------------------------------------------------------------------------------------------------ driver
def planned_runs(args, chosen: dict | None = None) -> list[tuple[str, Callable[..., dict[str, float]], tuple]]:
    """``(name, method, extra arguments)`` of every run on one training set, in the order they run; with ``chosen``
    (one k's summary from an earlier results file) every method runs only at the rate chosen there."""
    runs = []
    if chosen is not None:
        methods = {"scratch": run_scratch, "features": run_features, "finetune": run_finetune, "logreg": run_logreg}
        for name in METHODS:
            if name in args.methods:
                lr = chosen[name]["lr"]
                extra = (lr, None, args.scratch_variant) if name == "scratch" else (lr,)
                runs.append((f"{name}@{lr:g}", methods[name], extra))
        return runs
    if "scratch" in args.methods:
        grid = args.scratch_lrs or args.lrs
        runs += [(f"scratch@{lr:g}", run_scratch, (lr, None, args.scratch_variant)) for lr in grid]
    for name, method in (("features", run_features), ("finetune", run_finetune)):
        if name in args.methods:
            runs += [(f"{name}@{lr:g}", method, (lr,)) for lr in args.lrs]
    if "logreg" in args.methods:
        runs += [(f"logreg@{c:g}", run_logreg, (c,)) for c in args.logreg_cs]
    return runs


def benchmark(args) -> list[dict]:
    held_out = split_held_out(target_dataset("test", difficulty=args.difficulty, palette=args.palette))
    rows = []

    def record(k_name, train, seed, name, method, extra):
        seed_everything(seed)
        start, cpu = time.perf_counter(), time.process_time()
        acc = method(train, held_out, seed, args, *extra)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        row = {
            "k": k_name,
            "n_train": len(train),
            "seed": seed,
            "run": name,
            "acc": acc["test"],
            "val_acc": acc["val"],
            "seconds": seconds,
            "cpu_seconds": cpu,
        }
        rows.append(row)
        print(
            f"k={k_name:>4} seed={seed} {name:<18} val={acc['val']:.3f} test={acc['test']:.3f}  {seconds:5.1f} s "
            f"(cpu {cpu:5.1f} s)",
            flush=True,
        )

    earlier = None
    if args.chosen_from:  # every method at the rate chosen in an earlier (merged) results file, no grid
        with open(args.chosen_from, encoding="utf-8") as f:
            earlier = json.load(f)
    done = set() if earlier is None else {(r["k"], r["seed"], r["run"]) for r in earlier["runs"]}
    seeds = args.seed_list if args.seed_list is not None else list(range(args.seeds))
    for k_name in args.ks:
        k = None if k_name == "all" else int(k_name)
        sets = {}
        for seed in seeds:
            train = sets[seed] = target_dataset(
                "train", k=k, seed=seed, difficulty=args.difficulty, palette=args.palette
            )
            for name, method, extra in planned_runs(args, None if earlier is None else earlier["summary"][k_name]):
                if (k_name, seed, name) not in done:  # runs the earlier file holds are not repeated
                    record(k_name, train, seed, name, method, extra)
        if "scratch" in args.methods and k_name in args.convergence_ks:
            # the convergence check: scratch at its chosen learning rate, with `convergence_factor` x the steps
            if earlier is None:
                lr = summarise([r for r in rows if r["k"] == k_name])[k_name]["scratch"]["lr"]
            else:
                lr = earlier["summary"][k_name]["scratch"]["lr"]
            name = f"scratch_x{args.convergence_factor}@{lr:g}"
            steps = args.convergence_factor * args.steps
            for seed in seeds:
                if (k_name, seed, name) in done:
                    continue
                record(
                    k_name,
                    sets[seed],
                    seed,
                    name,
                    run_scratch,
                    (lr, steps, args.scratch_variant),
                )
    return rows


def _stats(runs: list[dict]) -> dict[str, float]:
    accs, vals = [r["acc"] for r in runs], [r.get("val_acc", float("nan")) for r in runs]
    std = statistics.stdev(accs) if len(accs) > 1 else 0.0  # ddof = 1: the sample standard deviation
    return {
        "mean": statistics.mean(accs),
        "std": std,
        "val_mean": statistics.mean(vals),
        "seconds": statistics.mean(r["seconds"] for r in runs),
        "n": len(runs),
        "seeds": [r["seed"] for r in runs],
    }


METHODS = ("scratch", "features", "finetune", "logreg")


def summarise(rows: list[dict], select_seeds: list[int] | None = None) -> dict[str, dict[str, dict[str, float]]]:
    """Per k and run: mean and std (ddof = 1) over seeds; per method, the learning rate (for logistic regression
    the ``C``) with the best mean VALIDATION accuracy (over ``select_seeds`` only, when given: the seeds that ran the
    whole grid), reported with its test accuracy over every seed."""
    table: dict[str, dict[str, dict[str, float]]] = {}
    for k in dict.fromkeys(r["k"] for r in rows):
        by_run: dict[str, list[dict]] = {}
        for r in rows:
            if r["k"] == k:
                by_run.setdefault(r["run"], []).append(r)
        stats = {name: _stats(runs) for name, runs in by_run.items()}
        for method in METHODS:
            grid = [n for n in stats if n.startswith(method + "@")]
            if grid:
                if select_seeds is None:
                    best = max(grid, key=lambda n: stats[n]["val_mean"])
                else:
                    select = {n: [r["val_acc"] for r in by_run[n] if r["seed"] in select_seeds] for n in grid}
                    best = max(grid, key=lambda n: statistics.mean(select[n]))
                lr = float(best.split("@")[1])
                values = sorted(float(n.split("@")[1]) for n in grid)
                # a choice at the edge of the grid says the grid may be too narrow for that method
                at_edge = len(values) > 1 and lr in (values[0], values[-1])
                stats[method] = {**stats[best], "lr": lr, "run": best, "at_edge": at_edge}
        # the convergence runs at scratch's chosen rate (a merge may hold others, at rates chosen on fewer seeds)
        converged = [
            n
            for n in stats
            if n.startswith("scratch_x") and "scratch" in stats and float(n.split("@")[1]) == stats["scratch"]["lr"]
        ]
        if converged:
            stats["scratch_longer"] = {
                **stats[converged[0]],
                "lr": float(converged[0].split("@")[1]),
                "run": converged[0],
            }
        table[k] = stats
    return table


PAIRS = (
    ("finetune", "features"),
    ("features", "scratch"),
    ("finetune", "scratch"),
    ("logreg", "scratch"),
    ("features", "logreg"),
    ("scratch_longer", "scratch"),
)


def paired(rows: list[dict], table) -> dict[str, dict[str, dict[str, float]]]:
    """Per k, A - B paired over seeds (the same seed: the same training images): mean, std (ddof = 1), standard
    error, and the verdict: A or B when the mean clears 2 standard errors, else "tie"."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for k, stats in table.items():
        acc = {(r["run"], r["seed"]): r["acc"] for r in rows if r["k"] == k}
        for a, b in PAIRS:
            if a not in stats or b not in stats:
                continue
            seeds = sorted(set(stats[a]["seeds"]) & set(stats[b]["seeds"]))
            if not seeds:  # a partial merge: nothing to pair
                continue
            diffs = [acc[stats[a]["run"], s] - acc[stats[b]["run"], s] for s in seeds]
            mean = statistics.mean(diffs)
            sd = statistics.stdev(diffs) if len(diffs) > 1 else float("nan")
            se = sd / len(diffs) ** 0.5
            verdict = (a if mean > 0 else b) if abs(mean) > 2 * se else "tie"
            out.setdefault(k, {})[f"{a}-{b}"] = {"mean": mean, "std": sd, "se": se, "n": len(diffs), "verdict": verdict}
    return out


def compare(rows: list[dict], path: str) -> dict[str, object]:
    """The repeat check: every run here against the run with the same k, seed and name in an earlier results file."""
    with open(path, encoding="utf-8") as f:
        earlier = {(r["k"], r["seed"], r["run"]): r["acc"] for r in json.load(f)["runs"]}
    pairs = [(r, earlier.get((r["k"], r["seed"], r["run"]))) for r in rows]
    # accuracies are counts over the 1,000 test images: equal counts are the same result
    # runs are named "seed S name": one name per seed would let a differing seed hide behind an identical one
    label = "seed {} {}".format
    same = [
        label(r["seed"], r["run"])
        for r, acc in pairs
        if acc is not None and round(1000 * acc) == round(1000 * r["acc"])
    ]
    differ = {
        label(r["seed"], r["run"]): [acc, r["acc"]]
        for r, acc in pairs
        if acc is not None and label(r["seed"], r["run"]) not in same
    }
    missing = [label(r["seed"], r["run"]) for r, acc in pairs if acc is None]
    return {
        "against": os.path.relpath(path),
        "identical": same,
        "different": differ,
        "missing": missing,
        "all_identical": not differ and not missing,
    }


NAMES = {
    "scratch": "from scratch",
    "features": "fixed features",
    "finetune": "full fine-tuning",
    "logreg": "logistic regression (pixels)",
}


def markdown_table(table) -> str:
    """Mean +- std (ddof = 1, over seeds) of every method per k at its validation-chosen learning rate (``C`` for
    logistic regression), and the mean seconds per run, as a Markdown table."""
    methods = [m for m in NAMES if any(m in s for s in table.values())]
    lines = ["| k per class | " + " | ".join(NAMES[m] for m in methods) + " |", "|---" * (len(methods) + 1) + "|"]
    for k, s in table.items():
        cells = []
        for m in methods:
            lr = f" ({'C' if m == 'logreg' else 'lr'} {s[m]['lr']:g})" if m in s else ""
            edge = "*" if m in s and s[m].get("at_edge") else ""
            cells.append(f"{s[m]['mean']:.3f} ± {s[m]['std']:.3f}{lr}{edge}" if m in s else "")
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    seconds = [
        f"{NAMES[m]} {statistics.mean(s[m]['seconds'] for s in table.values() if m in s):.1f} s" for m in methods
    ]
    return (
        "\n".join(lines) + "\n\n(lr / C chosen on the validation part; * at the edge of its grid.) "
        "Mean wall time per run: " + ", ".join(seconds) + "."
    )


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
    p.add_argument("--seeds", type=int, default=5, help="seeds 0 .. SEEDS-1")
    p.add_argument(
        "--seed-list",
        type=int,
        nargs="+",
        default=None,
        help="these seeds instead of 0 .. SEEDS-1 (to add seeds to earlier results, then --merge)",
    )
    p.add_argument(
        "--chosen-from",
        default=None,
        metavar="JSON",
        help="no grid: every method at the rate chosen in this results file (the convergence runs at scratch's), "
        "for --seed-list; runs that file already holds are skipped",
    )
    p.add_argument(
        "--select-seeds",
        type=int,
        nargs="+",
        default=None,
        help="choose every rate on the validation accuracy of these seeds only (those that ran the whole grid)",
    )
    p.add_argument(
        "--methods",
        nargs="+",
        default=["scratch", "features", "finetune", "logreg"],
        choices=["scratch", "features", "finetune", "logreg"],
    )
    p.add_argument("--steps", type=int, default=150, help="optimisation steps per run (same for every method)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument(
        "--lrs",
        type=float,
        nargs="+",
        default=list(LRS),
        help="the learning-rate grid of every method; each method's is chosen on the validation part",
    )
    p.add_argument(
        "--scratch-lrs",
        type=float,
        nargs="+",
        default=None,
        help="a grid for scratch alone (the rescue experiments); default: --lrs",
    )
    p.add_argument("--scratch-variant", default="plain", choices=["plain", "grey", "augment"])
    p.add_argument(
        "--logreg-cs",
        type=float,
        nargs="+",
        default=list(LOGREG_CS),
        help="inverse regularisation strengths of the pixel baseline, chosen on the validation part",
    )
    p.add_argument(
        "--convergence-ks",
        nargs="*",
        default=["5", "all"],
        choices=ALL_KS,
        help="at these k, scratch runs again at its chosen lr with --convergence-factor x the steps",
    )
    p.add_argument("--convergence-factor", type=int, default=2)
    p.add_argument("--difficulty", type=float, default=None, help="target scene difficulty (default: the data's)")
    p.add_argument("--palette", default=None, help="target palette (default: the data's)")
    p.add_argument(
        "--weights",
        default=None,
        help="a state_dict file to transfer instead of the shipped weights "
        "(e.g. from `python -m transferlab.pretrain --exclude ... --out FILE`)",
    )
    p.add_argument("--threads", type=int, default=1, help="torch (and scikit-learn) CPU threads")
    p.add_argument("--name", default="transfer_gain", help="results file stem in src/transferlab/results/")
    p.add_argument(
        "--merge",
        nargs="+",
        default=None,
        metavar="JSON",
        help="no training: combine the runs of earlier results files (e.g. parts run in parallel)",
    )
    p.add_argument(
        "--compare",
        default=None,
        metavar="JSON",
        help="repeat check: compare every accuracy with the same run (k, seed, method) in this results file",
    )
    p.add_argument("--must-match", action="store_true", help="with --compare: exit 1 unless every run is identical")
    return p.parse_args(argv)


def write_results(stem: str, result: dict) -> None:
    """``stem``.json (everything), .csv (the summary, provenance in ``#`` lines above it), .png (the plot)."""
    with open(stem + ".json", "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    with open(stem + ".csv", "w", newline="", encoding="utf-8") as f:
        f.write(csv_header(result["provenance"]))
        fields = ["k", "method", "mean", "std", "val_mean", "seconds_per_run", "n_seeds", "lr"]
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for k, stats in result["summary"].items():
            for m, s in stats.items():
                row = {
                    "k": k,
                    "method": m,
                    "mean": round(s["mean"], 4),
                    "std": round(s["std"], 4),
                    "val_mean": round(s["val_mean"], 4),
                    "seconds_per_run": round(s["seconds"], 2),
                    "n_seeds": s["n"],
                    "lr": s.get("lr", ""),
                }
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
    table = summarise(rows, args.select_seeds)
    meta = TinyResNet_Weights.DEFAULT.meta
    result = {
        "args": vars(args),
        "provenance": run_info(started),
        "parts_provenance": {
            os.path.basename(p): part.get("provenance") for p, part in zip(args.merge or [], parts, strict=True)
        },
        "pretraining_seconds": meta.get("build", {}).get("seconds") if not args.weights else None,
        "source_test_accuracy": meta.get("_metrics") if not args.weights else None,
        "benchmark_seconds": sum(p["benchmark_seconds"] for p in parts) if parts else time.time() - started["time"],
        "benchmark_cpu_seconds": sum(r.get("cpu_seconds", 0.0) for r in rows),  # one thread: the core-seconds
        "summary": table,
        "paired": paired(rows, table),
        "repeat_check": compare(rows, args.compare) if args.compare else None,
        "runs": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = str(RESULTS / args.name)
    write_results(stem, result)
    print(markdown_table(table))
    for k, pairs in result["paired"].items():
        print(
            f"k={k:>4} paired over seeds: "
            + "; ".join(
                f"{name} {100 * v['mean']:+.1f} ± {100 * v['se']:.1f} pts (se) -> {v['verdict']}"
                for name, v in pairs.items()
            )
        )
    print(f"wrote {stem}.json/.csv/.png")
    if result["repeat_check"] is not None:
        check = result["repeat_check"]
        print(
            f"repeat check against {check['against']}: identical {check['identical']}, different "
            f"{check['different']}, missing {check['missing']}"
        )
        return 0 if check["all_identical"] or not args.must_match else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
