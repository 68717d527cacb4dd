"""Fine-tune fewer parameters: linear probe, BitFit, LoRA at two ranks, full fine-tuning (notebook 13's table).

TinyResNet pretrained on letters (``TinyResNet_Weights.DEFAULT``), target: digits with ``--k`` labelled images per
class (``target_dataset``). Every method gets the same budget: ``--steps`` AdamW steps (no weight decay, cosine
schedule) on batches of ``--batch`` drawn with replacement by a generator seeded with the seed, a new 10-way head
seeded by the seed, BatchNorm running statistics frozen at the source model's (``freeze_bn``) in every arm, so the
arms differ only in which parameters train:

* ``probe``    the head only (the frozen backbone as a fixed feature extractor);
* ``bitfit``   the biases (here: every BatchNorm shift; TinyResNet's convolutions have none) and the head;
* ``lora_r2``, ``lora_r8``   ``transferlab.lora.apply_lora`` on every convolution (alpha = 8), and the head;
* ``full``     every parameter.

The learning rate of every method is chosen from the same grid (``--lrs``, half-decade steps from 3e-5 to 3e-2, wide
enough that every choice lies inside it) **per seed**: every seed runs the whole grid and keeps the rate with its
best validation accuracy (ties: the smaller rate), the same rule for every arm; the validation split is 150 digit
images (one scene each) of the held-out set, the test split the other 350 digit images (two scenes each, 700
images), so no digit image is in both. Reported per seed at its chosen rate: the rate, test accuracy, the source
task's accuracy (letters test set, 1,560 images) of the fine-tuned backbone under the original letters head
(forgetting), seed 0's run at twice the budget (convergence check), and seconds per step
(process time, one thread). Every results file records its provenance (``benchmarks/provenance.py``).

Usage (from the repository root, with ``PYTHONPATH=src``)::

    python benchmarks/peft_compare.py --threads 1        # writes src/transferlab/results/peft_compare.json
    # or in parts (one thread each; every run seeds itself, so the grouping changes no number):
    python benchmarks/peft_compare.py --methods probe bitfit --name peft_part_a   # ... and the other methods
    python benchmarks/peft_compare.py --merge src/transferlab/results/peft_part_*.json   # then delete the parts
    # a grid found too narrow: run the added rates alone, then keep each seed's best of the union
    python benchmarks/peft_compare.py --methods bitfit --lrs 0.1 --name peft_more_rates
    python benchmarks/peft_compare.py --extend src/transferlab/results/{peft_compare,peft_more_rates}.json
"""

from __future__ import annotations

import argparse
import functools
import json
import time

import torch
from torch import Tensor, nn

from transferlab.data import TARGET_CLASSES, source_dataset, target_dataset
from transferlab.env import seed_everything
from transferlab.freeze import count_parameters, freeze_bn
from transferlab.lora import apply_lora, bitfit
from transferlab.models import TinyResNet_Weights, tiny_resnet
from transferlab.training import evaluate, train_steps

import rate_choice
from provenance import RESULTS, run_info, run_started

WEIGHTS = TinyResNet_Weights.DEFAULT
NORMALISE = WEIGHTS.transforms()
METHODS = ("probe", "bitfit", "lora_r2", "lora_r8", "full")
ALPHA = 8.0  # LoRA scaling alpha / r
VAL_DIGITS = 150  # the first 150 held-out digit images (scene 1) validate; digits 150..499 (both scenes) test


def splits() -> dict[str, tuple[Tensor, Tensor]]:
    """Validation and test tensors (normalised) from the fixed held-out set, and the letters test set."""
    held = target_dataset("test")
    n = len(held) // 2  # 500 digit images, each in two scenes: index i and i + 500 show the same digit
    val = torch.arange(VAL_DIGITS)
    test = torch.cat([torch.arange(VAL_DIGITS, n), torch.arange(n + VAL_DIGITS, 2 * n)])
    letters = source_dataset("test")
    return {
        "val": (NORMALISE(held.images[val]), held.labels[val]),
        "test": (NORMALISE(held.images[test]), held.labels[test]),
        "letters": (NORMALISE(letters.images), letters.labels),
    }


def build(method: str, seed: int) -> tuple[nn.Module, nn.Module]:
    """The pretrained model set up for ``method`` with a new head seeded by ``seed``, and the original letters head."""
    model = tiny_resnet(weights=WEIGHTS)
    letters_head = model.fc
    torch.manual_seed(seed)
    model.fc = nn.Linear(model.fc.in_features, len(TARGET_CLASSES))
    freeze_bn(model)  # every arm: BatchNorm normalises with the source statistics (and its affine params freeze)
    convs = [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if method == "probe":
        model.requires_grad_(False)
    elif method == "bitfit":
        bitfit(model)  # the BatchNorm shifts train again (their statistics stay frozen)
    elif method.startswith("lora_r"):
        apply_lora(model, convs, r=int(method.removeprefix("lora_r")), alpha=ALPHA)
    elif method == "full":
        model.requires_grad_(True)
    else:
        raise ValueError(f"unknown method {method!r}; use one of {METHODS}")
    model.fc.requires_grad_(True)
    return model, letters_head


def accuracy(model: nn.Module, data: tuple[Tensor, Tensor]) -> float:
    return evaluate(model, list(zip(data[0].split(500), data[1].split(500), strict=True)))[1]


def letters_accuracy(model: nn.Module, letters_head: nn.Module, data: tuple[Tensor, Tensor]) -> float:
    """The source task through the (possibly fine-tuned) backbone and the original letters head."""
    target_head, model.fc = model.fc, letters_head
    try:
        return accuracy(model, data)
    finally:
        model.fc = target_head


def train(
    method: str, seed: int, lr: float, steps: int, args: argparse.Namespace
) -> tuple[nn.Module, nn.Module, float]:
    """One run: the model, its letters head, and the process seconds per step."""
    seed_everything(seed)
    model, letters_head = build(method, seed)
    data = target_dataset("train", k=args.k, seed=seed)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    start = time.process_time()
    train_steps(
        model,
        (NORMALISE(data.images), data.labels),
        steps,
        optimizer,
        batch_size=args.batch,
        generator=torch.Generator().manual_seed(seed),
        scheduler=schedule,
    )
    return model, letters_head, (time.process_time() - start) / steps


def merge(paths: list[str], name: str) -> None:
    """One results file from parts run with the same settings on disjoint ``--methods`` (run in parallel)."""
    parts = [json.loads(open(p, encoding="utf-8").read()) for p in paths]
    settings = [{k: v for k, v in p["settings"].items() if k != "methods"} for p in parts]
    if any(s != settings[0] for s in settings):
        raise ValueError("the parts were run with different settings; rerun them alike")
    merged = {
        "settings": {**settings[0], "methods": [m for p in parts for m in p["settings"]["methods"]]},
        "methods": {m: r for p in parts for m, r in p["methods"].items()},
        "source_letters_acc": parts[0]["source_letters_acc"],
        "provenance": {"parts": [p["provenance"] for p in parts], "merged_from": paths},
    }
    (RESULTS / f"{name}.json").write_text(json.dumps(merged, indent=1) + "\n", encoding="utf-8")
    print("wrote", RESULTS / f"{name}.json")


def extend(base_path: str, extra_path: str, name: str) -> None:
    """One results file from a run and a run of the same settings on more rates (``--lrs``) for some methods
    (:func:`rate_choice.extend`: each seed keeps the best rate of the union on validation, ties: the smaller)."""
    base, extra = (json.loads(open(p, encoding="utf-8").read()) for p in (base_path, extra_path))
    merged = rate_choice.extend(base, extra, [base_path, extra_path])
    (RESULTS / f"{name}.json").write_text(json.dumps(merged, indent=1) + "\n", encoding="utf-8")
    print("wrote", RESULTS / f"{name}.json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--lrs", nargs="+", type=float, default=[3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--check-seeds", type=int, default=1, help="seeds 0..n-1 also run at twice the budget")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--name", default="peft_compare")
    parser.add_argument("--merge", nargs="+", metavar="JSON", help="merge the parts written by earlier runs")
    parser.add_argument("--extend", nargs=2, metavar="JSON", help="a run, and a run of the same on more rates")
    args = parser.parse_args()
    if args.extend:
        extend(*args.extend, args.name)
        return
    if args.merge:
        merge(args.merge, args.name)
        return
    torch.set_num_threads(args.threads)
    started = run_started()
    data = splits()
    settings = {k: v for k, v in vars(args).items() if k not in ("name", "merge", "extend")}
    results: dict = {"settings": settings, "methods": {}}
    for method in args.methods:
        runs, val = [], {f"{lr:g}": [] for lr in args.lrs}
        for seed in range(args.seeds):
            best, seed_val, grid = rate_choice.run_grid(  # this seed's choice; ties: the smaller rate
                args.lrs,
                functools.partial(train, method, seed, steps=args.steps, args=args),
                lambda run: accuracy(run[0], data["val"]),
            )
            for lr in args.lrs:
                val[f"{lr:g}"].append(seed_val[lr])
            model, letters_head, per_step = grid[best]
            run = {
                "seed": seed,
                "lr": best,
                "test_acc": accuracy(model, data["test"]),
                "val_acc": seed_val[best],
                "letters_acc": letters_accuracy(model, letters_head, data["letters"]),
                "seconds_per_step": per_step,
            }
            if seed < args.check_seeds:
                run["test_acc_2x_steps"] = accuracy(train(method, seed, best, 2 * args.steps, args)[0], data["test"])
            runs.append(run)
        results["methods"][method] = {
            "trainable": count_parameters(model).trainable,
            "lr_by_seed": [r["lr"] for r in runs],
            "val_acc_by_lr": val,  # lr -> validation accuracy of seeds 0, 1, ...
            "runs": runs,
        }
        print(
            method,
            "lr",
            [r["lr"] for r in runs],
            [round(r["test_acc"], 3) for r in runs],
            "letters",
            [round(r["letters_acc"], 3) for r in runs],
            flush=True,
        )
    source, letters_head = build("probe", 0)
    results["source_letters_acc"] = letters_accuracy(source, letters_head, data["letters"])
    results["provenance"] = run_info(started)
    path = RESULTS / f"{args.name}.json"
    path.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    print("wrote", path)


if __name__ == "__main__":
    main()
