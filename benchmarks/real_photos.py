"""Real photos, few labels: which features, which probe, which source? (the tables behind notebook 08)

Part ``photos``. Six photos of scikit-image's wheel that look alike all over (``transferlab.photos.TEXTURES``) are cut
into grey 64x64 patches, 32 train and 32 test per photo, in two layouts (``photo_patches``): ``checkerboard`` (train
and test squares alternate over the whole photo: same distribution, no shared pixel) and ``halves`` (train from the
left half, test from the right: the layout of the previous edition, kept to measure what it leaked). With k = 1, 3, 5
labelled patches per class (``few_shot_indices``, one draw per seed), every feature set below is scored on all 192
test patches by three probes:

* ``logreg_c1``   StandardScaler + LogisticRegression(C=1) (scikit-learn defaults: the previous edition's probe),
* ``ncm``         nearest class mean on L2-normalised features (``transferlab.probes``; no knob to tune),
* ``logreg_loo``  LogisticRegression on L2-normalised features, C from a grid picked by leave-one-out accuracy on
                  the k labelled patches alone (k >= 3 only; ImageNet at blocks[2] and last, the histogram;
                  5 seeds: it is costly).

Feature sets: EfficientNet-Lite0 (patches resized to 96 px) with ``imagenet`` weights, with ``random`` weights and
its BatchNorm statistics re-estimated on the layout's 192 unlabelled train patches (``adapt_bn``: the fair
architecture-only control), with ``random_init`` weights and BatchNorm as initialised (mean 0, var 1: the previous
edition's control), each pooled after ``blocks[2]``, ``blocks[3]``, ``blocks[4]`` and the last layer (one forward pass:
``pooled_features_at``); ``pixels`` (4,096 grey values) and ``histogram`` (32-bin grey histogram, shift-invariant).

Part ``digits``. The course's digits target (k = 5 labelled scenes per class, 3 seeds, the first 500 test scenes):
Lite0 ImageNet features at 96 and 160 px and the four depths, Lite0 random + adapt_bn (96 px, statistics from 512
unlabelled pool scenes), the course's letters TinyResNet (32 px, last layer), pixels; probes ``logreg_c1`` and
``ncm``.

Part ``finetune``. The same digits target at k = 5: Lite0 (ImageNet, 96 px) fine-tuned end to end against a linear
head on its frozen last-layer features, both trained with ``train_steps`` (AdamW, the same steps and batch, full
batch of the 50 labelled scenes), each arm's learning rate picked from the same grid on a validation set (10 scenes
per class from the training pool, none of the 50), 3 seeds, scored after 12, 24 and 48 steps of one run (the
convergence check: each budget against twice it, same seeds; the lr is picked on validation at every budget).

Usage (repository root, one thread)::

    PYTHONPATH=src python benchmarks/real_photos.py  # full run -> src/transferlab/results/real_photos.*
    # or in two parts, in parallel (one thread each; every run seeds itself, so the grouping changes no number)
    PYTHONPATH=src python benchmarks/real_photos.py --parts photos digits --name rp_a &
    PYTHONPATH=src python benchmarks/real_photos.py --parts finetune --name rp_b &
    wait; PYTHONPATH=src python benchmarks/real_photos.py --merge rp_a rp_b   # -> results/real_photos.json

Every part file and the merged file carry their provenance (``benchmarks/provenance.py``).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import LeaveOneOut, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset
from torchvision.transforms import v2

from transferlab.data import target_dataset
from transferlab.env import seed_everything
from transferlab.features import extract_features, pooled_features_at
from transferlab.lite0 import EfficientNetLite0_Weights, efficientnet_lite0
from transferlab.models import TinyResNet_Weights, tiny_resnet
from transferlab.photos import LAYOUTS, TEXTURES, few_shot_indices, photo_patches
from transferlab.probes import grey_histogram, l2_normalise, nearest_class_mean
from transferlab.shift import adapt_bn
from transferlab.training import evaluate, train_steps

from provenance import RESULTS, run_info, run_started

DEPTHS = {"blocks2": "2.blocks.2", "blocks3": "2.blocks.3", "blocks4": "2.blocks.4", "last": "2.bn2"}
C_GRID = (0.1, 1.0, 10.0, 100.0)
LR_GRID = (1e-3, 1e-2)


def lite0(weights: EfficientNetLite0_Weights | None, size: int, classes: int = 0) -> nn.Sequential:
    """Resize to ``size``, normalise as the ImageNet weights expect, Lite0 (``classes=0``: pooled 1,280 features)."""
    seed_everything(0)  # the random-weights network is one fixed initialisation
    model = efficientnet_lite0(weights=weights)
    model.reset_classifier(classes)
    pre = EfficientNetLite0_Weights.DEFAULT.transforms()
    return nn.Sequential(v2.Resize((size, size), antialias=True), v2.Normalize(pre.mean, pre.std), model)


def loader(images: Tensor, batch_size: int = 64) -> DataLoader:
    return DataLoader(TensorDataset(images, torch.zeros(len(images))), batch_size=batch_size)


def depth_features(model: nn.Module, images: Tensor) -> dict[str, Tensor]:
    feats = pooled_features_at(model, loader(images), list(DEPTHS.values()))
    return {depth: feats[name] for depth, name in DEPTHS.items()}


def logreg_c1(tr: Tensor, ytr: Tensor, te: Tensor) -> np.ndarray:
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(tr.numpy(), ytr.numpy())
    return clf.predict(te.numpy())


def loo_C(tr: Tensor, ytr: Tensor) -> float:
    """The C of ``C_GRID`` with the best leave-one-out accuracy on the labelled set (first best: smallest C)."""
    x = l2_normalise(tr).numpy()
    scores = [
        cross_val_score(LogisticRegression(C=c, max_iter=1000), x, ytr.numpy(), cv=LeaveOneOut()).mean() for c in C_GRID
    ]
    return C_GRID[int(np.argmax(scores))]


def logreg_loo(tr: Tensor, ytr: Tensor, te: Tensor) -> tuple[np.ndarray, float]:
    c = loo_C(tr, ytr)
    clf = LogisticRegression(C=c, max_iter=1000).fit(l2_normalise(tr).numpy(), ytr.numpy())
    return clf.predict(l2_normalise(te).numpy()), c


def accuracy(pred, truth: Tensor) -> float:
    return float((np.asarray(pred) == truth.numpy()).mean())


def part_photos(args) -> list[dict]:
    rows = []
    for layout in LAYOUTS:
        train_x, train_y = photo_patches("train", layout=layout).tensors
        test_x, test_y = photo_patches("test", layout=layout).tensors
        pools = {}
        for name, weights, adapt in [
            ("imagenet", EfficientNetLite0_Weights.DEFAULT, False),
            ("random", None, True),
            ("random_init", None, False),
        ]:
            model = lite0(weights, args.size).eval()
            if adapt:  # unlabelled train patches of this layout, equal batches of 64
                adapt_bn(model, loader(train_x))
            tr, te = depth_features(model, train_x), depth_features(model, test_x)
            for depth in DEPTHS:
                pools[(name, depth)] = (tr[depth], te[depth])
        pools[("pixels", "-")] = (train_x[:, 0].flatten(1), test_x[:, 0].flatten(1))
        pools[("histogram", "-")] = (grey_histogram(train_x), grey_histogram(test_x))
        loo_sets = {("imagenet", "blocks2"), ("imagenet", "last"), ("histogram", "-")}  # bounded: LOO is costly
        for k in args.ks:
            for seed in range(args.seeds):
                pick = few_shot_indices(train_y, k, seed)
                for (name, depth), (tr, te) in pools.items():
                    base = {"part": "photos", "layout": layout, "features": name, "depth": depth, "k": k, "seed": seed}
                    preds = {
                        "ncm": nearest_class_mean(tr[pick], train_y[pick], te).numpy(),
                        "logreg_c1": logreg_c1(tr[pick], train_y[pick], te),
                    }
                    for probe, pred in preds.items():
                        per_class = [accuracy(pred[test_y == c], test_y[test_y == c]) for c in range(len(TEXTURES))]
                        rows.append(
                            {**base, "probe": probe, "accuracy": accuracy(pred, test_y), "per_class": per_class}
                        )
                    if layout == "checkerboard" and k >= 3 and (name, depth) in loo_sets and seed < args.loo_seeds:
                        pred, c = logreg_loo(tr[pick], train_y[pick], te)
                        rows.append({**base, "probe": "logreg_loo", "accuracy": accuracy(pred, test_y), "C": c})
                print(f"photos {layout} k={k} done", flush=True)
    return rows


def letters_backbone() -> nn.Module:
    weights = TinyResNet_Weights.DEFAULT
    model = tiny_resnet(weights=weights)
    model.fc = nn.Identity()
    return nn.Sequential(weights.transforms(), model).eval()


def part_digits(args) -> list[dict]:
    test = target_dataset("test")
    test_x, test_y = test.images[: args.digit_test], test.labels[: args.digit_test]
    trains = {(k, s): target_dataset("train", k=k, seed=s) for k in args.digit_ks for s in args.digit_seeds}
    unlabelled = target_dataset("train").images[torch.randperm(1000, generator=torch.Generator().manual_seed(0))[:512]]
    configs = {}  # (features, size) -> function images -> {depth: feats}
    for size in args.digit_sizes:
        model = lite0(EfficientNetLite0_Weights.DEFAULT, size).eval()
        configs[("imagenet", size)] = lambda x, m=model: depth_features(m, x)
    rand = lite0(None, args.size).eval()
    adapt_bn(rand, loader(unlabelled))
    configs[("random", args.size)] = lambda x: depth_features(rand, x)
    letters = letters_backbone()
    configs[("letters", 32)] = lambda x: {"last": extract_features(letters, loader(x)).tensors[0]}
    configs[("pixels", 32)] = lambda x: {"-": x.flatten(1)}
    rows = []
    for (name, size), fn in configs.items():
        start = time.process_time()
        te = fn(test_x)
        ms = 1000 * (time.process_time() - start) / len(test_x)
        for (k, seed), train in trains.items():
            tr = fn(train.images)
            for depth in te:
                for probe in ("ncm", "logreg_c1"):
                    if probe == "ncm":
                        pred = nearest_class_mean(tr[depth], train.labels, te[depth]).numpy()
                    else:
                        pred = logreg_c1(tr[depth], train.labels, te[depth])
                    rows.append(
                        {
                            "part": "digits",
                            "features": name,
                            "size": size,
                            "depth": depth,
                            "probe": probe,
                            "k": k,
                            "seed": seed,
                            "accuracy": accuracy(pred, test_y),
                            "cpu_ms_per_scene": ms,
                        }
                    )
        print(f"digits {name} {size}px done", flush=True)
    return rows


def validation_scenes(train, per_class: int, seed: int):
    """``per_class`` scenes per class from the training pool whose digit image is not in ``train``."""
    pool = target_dataset("train")  # every training-pool image once (scenes of seed 0's renderer)
    unused = ~torch.isin(pool.source_index, train.source_index)
    g = torch.Generator().manual_seed(1000 + seed)
    keep = torch.cat(
        [
            torch.nonzero(unused & (pool.labels == c)).flatten()[
                torch.randperm(int((unused & (pool.labels == c)).sum()), generator=g)[:per_class]
            ]
            for c in range(10)
        ]
    )
    return pool.images[keep], pool.labels[keep]


def scorer(model: nn.Module, budgets: list[int], val: tuple, test: tuple, record: dict, label: str):
    """An ``on_step`` callback for ``train_steps``: after each step in ``budgets``, the model's val and test accuracy
    (and the step's loss and the CPU time so far) go into ``record[step]``; ``evaluate`` restores train mode."""
    start = time.process_time()

    def on_step(step: int, loss: float) -> None:
        if step + 1 in budgets:
            record[step + 1] = {
                "val": evaluate(model, [val])[1],
                "test": evaluate(model, DataLoader(TensorDataset(*test), batch_size=100))[1],
                "loss": loss,
                "cpu": time.process_time() - start,
            }
            print(f"{label} steps={step + 1}: {record[step + 1]}", flush=True)

    return on_step


def part_finetune(args) -> list[dict]:
    """Fine-tune vs frozen head, scored at every budget of ``--ft-budgets`` along one run per arm, seed and lr.

    ``train_steps`` with a constant learning rate draws the same batches whatever the total, so the model after B
    steps of a 2B-step run is the model of a B-step run: one run of the largest budget gives every smaller one
    (the convergence check: budget B against 2B, same seeds). At every budget each arm's lr is picked on the
    validation scenes, never on the test set.
    """
    test = target_dataset("test")
    test_x, test_y = test.images[: args.digit_test], test.labels[: args.digit_test]
    frozen = lite0(EfficientNetLite0_Weights.DEFAULT, args.size).eval()
    frozen_test = extract_features(frozen, DataLoader(TensorDataset(test_x, test_y), batch_size=64)).tensors[0]
    budgets = sorted(args.ft_budgets)
    rows = []
    for seed in range(args.ft_seeds):
        train = target_dataset("train", k=args.ft_k, seed=seed)
        val_x, val_y = validation_scenes(train, 10, seed)
        frozen_train = extract_features(frozen, DataLoader(TensorDataset(train.images, train.labels), 64)).tensors[0]
        frozen_val = extract_features(frozen, DataLoader(TensorDataset(val_x, val_y), 64)).tensors[0]
        for arm in ("finetune", "frozen_head"):
            at: dict[float, dict[int, dict]] = {}  # lr -> budget -> scores of the model after that many steps
            for lr in LR_GRID:
                torch.manual_seed(seed)
                g = torch.Generator().manual_seed(seed)
                if arm == "finetune":
                    model = lite0(EfficientNetLite0_Weights.DEFAULT, args.size, classes=10)
                    torch.manual_seed(seed)
                    model[2].reset_classifier(10)  # the head's init is drawn from the seed
                    data, vx, tx = (train.images, train.labels), val_x, test_x
                else:
                    model = nn.Linear(1280, 10)
                    data, vx, tx = (frozen_train, train.labels), frozen_val, frozen_test
                opt = torch.optim.AdamW(model.parameters(), lr=lr)
                at[lr] = {}
                score = scorer(
                    model, budgets, (vx, val_y), (tx, test_y), at[lr], f"finetune seed={seed} {arm} lr={lr:g}"
                )
                train_steps(model, data, budgets[-1], opt, batch_size=len(train), generator=g, on_step=score)
            for steps in budgets:
                lr = max(LR_GRID, key=lambda r: at[r][steps]["val"])  # first best: the smaller lr
                best = at[lr][steps]
                rows.append(
                    {
                        "part": "finetune",
                        "arm": arm,
                        "seed": seed,
                        "k": args.ft_k,
                        "steps": steps,
                        "lr": lr,
                        "val_accuracy": best["val"],
                        "accuracy": best["test"],
                        "final_train_loss": best["loss"],
                        "val_by_lr": {str(r): at[r][steps]["val"] for r in LR_GRID},
                        "test_by_lr": {str(r): at[r][steps]["test"] for r in LR_GRID},
                        "cpu_seconds": best["cpu"],
                    }
                )
                print(f"finetune seed={seed} steps={steps} {arm}: lr={lr:g} test={best['test']:.3f}", flush=True)
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    """Mean, sample std (ddof=1) and standard error over seeds of every configuration."""
    groups: dict[tuple, list[float]] = {}
    for row in rows:
        key = tuple(
            (k, v)
            for k, v in row.items()
            if k
            not in (
                "seed",
                "accuracy",
                "per_class",
                "C",
                "lr",
                "val_accuracy",
                "val_by_lr",
                "final_train_loss",
                "cpu_seconds",
                "cpu_ms_per_scene",
                "test_by_lr",
            )
        )
        groups.setdefault(key, []).append(row["accuracy"])
    out = []
    for key, accs in groups.items():
        sd = float(np.std(accs, ddof=1)) if len(accs) > 1 else 0.0
        out.append(
            {**dict(key), "mean": float(np.mean(accs)), "std": sd, "se": sd / np.sqrt(len(accs)), "n": len(accs)}
        )
    return out


def markdown(summary: list[dict]) -> str:
    """The headline tables (mean ± SE over seeds) as Markdown, for the README."""

    def row(**key):
        return {r["k"]: r for r in summary if all(r.get(k) == v for k, v in key.items())}

    def cells(rows, ks):
        return " | ".join(f"{rows[k]['mean']:.3f} ± {rows[k]['se']:.3f}" if k in rows else "" for k in ks)

    out = [
        "Few labels on real photos (checkerboard split, nearest class mean on L2-normalised features, mean ± SE):",
        "",
        "| features | k = 1 | k = 3 | k = 5 |",
        "|---|---|---|---|",
    ]
    for name in ("imagenet", "random", "random_init"):
        for depth in DEPTHS:
            out.append(
                f"| Lite0 {name}, {depth} | "
                + cells(row(part="photos", layout="checkerboard", probe="ncm", features=name, depth=depth), (1, 3, 5))
                + " |"
            )
    for name in ("histogram", "pixels"):
        out.append(
            f"| {name} | "
            + cells(row(part="photos", layout="checkerboard", probe="ncm", features=name), (1, 3, 5))
            + " |"
        )
    out += [
        "",
        "Probes on Lite0 ImageNet, last layer (checkerboard):",
        "",
        "| probe | k = 1 | k = 3 | k = 5 |",
        "|---|---|---|---|",
    ]
    for probe in ("logreg_c1", "logreg_loo", "ncm"):
        out.append(
            f"| {probe} | "
            + cells(
                row(part="photos", layout="checkerboard", probe=probe, features="imagenet", depth="last"), (1, 3, 5)
            )
            + " |"
        )
    out += [
        "",
        "Digits target, k = 5 (mean ± SE):",
        "",
        "| features | size | depth | ncm | logreg_c1 |",
        "|---|---|---|---|---|",
    ]
    digits = [r for r in summary if r["part"] == "digits"]
    for key in dict.fromkeys((r["features"], r["size"], r["depth"]) for r in digits):
        by_probe = {r["probe"]: r for r in digits if (r["features"], r["size"], r["depth"]) == key}
        out.append(
            f"| {key[0]} | {key[1]} | {key[2]} | "
            + " | ".join(f"{by_probe[p]['mean']:.3f} ± {by_probe[p]['se']:.3f}" for p in ("ncm", "logreg_c1"))
            + " |"
        )
    out += [
        "",
        "Fine-tuning vs a head on frozen features (digits, k = 5; test accuracy, mean ± SE):",
        "",
        "| arm | steps | accuracy | seeds |",
        "|---|---|---|---|",
    ]
    for r in summary:
        if r["part"] == "finetune":
            out.append(f"| {r['arm']} | {r['steps']} | {r['mean']:.3f} ± {r['se']:.3f} | {r['n']} |")
    return "\n".join(out) + "\n"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--parts", nargs="+", default=["photos", "digits", "finetune"], choices=["photos", "digits", "finetune"]
    )
    p.add_argument("--ks", type=int, nargs="+", default=[1, 3, 5])
    p.add_argument("--seeds", type=int, default=10, help="draws of the k labelled patches (photos)")
    p.add_argument("--loo-seeds", type=int, default=5, help="seeds for the leave-one-out probe (photos)")
    p.add_argument("--size", type=int, default=96, help="Lite0 input size")
    p.add_argument("--digit-sizes", type=int, nargs="+", default=[96, 160])
    p.add_argument("--digit-ks", type=int, nargs="+", default=[5])
    p.add_argument("--digit-seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--digit-test", type=int, default=500)
    p.add_argument("--ft-k", type=int, default=5)
    p.add_argument("--ft-seeds", type=int, default=3)
    p.add_argument(
        "--ft-budgets", type=int, nargs="+", default=[12, 24, 48], help="steps at which both arms are scored"
    )
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--merge", nargs="+", metavar="NAME", help="merge part files (stems in results/)")
    p.add_argument("--name", default="real_photos")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    started = run_started()
    if args.merge:
        parts = [json.loads((RESULTS / f"{stem}.json").read_text(encoding="utf-8")) for stem in args.merge]
        rows = [row for part in parts for row in part["runs"]]
        result = {
            "provenance": run_info(started),
            "parts": [part["provenance"] for part in parts],
            "args": [part["args"] for part in parts],
        }
    else:
        rows = []
        for part in args.parts:
            start = time.process_time()
            rows += {"photos": part_photos, "digits": part_digits, "finetune": part_finetune}[part](args)
            print(f"part {part}: {time.process_time() - start:.0f} s CPU", flush=True)
        result = {"provenance": {**run_info(started), "cpu_seconds": round(time.process_time(), 1)}, "args": vars(args)}
    result.update(
        {
            "classes": list(TEXTURES),
            "c_grid": list(C_GRID),
            "lr_grid": list(LR_GRID),
            "summary": summarise(rows),
            "runs": rows,
        }
    )
    path = RESULTS / f"{args.name}.json"
    path.write_text(json.dumps(result, indent=0), encoding="utf-8")
    if {r["part"] for r in rows} == {"photos", "digits", "finetune"}:  # a complete result: its tables for the README
        info = result["provenance"]
        path.with_suffix(".md").write_text(
            f"<!-- {info['command']} @ {info['commit']} -->\n\n" + markdown(result["summary"]), encoding="utf-8"
        )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
