"""Fine-tune fewer parameters on real photos: Lite0 from ImageNet, five methods (notebook 13's second table).

The real-photo task of notebook 08: six photos of scikit-image's wheel that look alike all over
(``transferlab.photos.TEXTURES``: brick, grass, gravel, moon, cell, ihc), cut into grey 64 x 64 patches on a
checkerboard (``photo_patches``: 32 train and 32 test squares per photo, no shared pixel). Per class, the train
squares at even positions are the labelled pool (``--k`` of them drawn per seed by ``few_shot_indices``), those at
odd positions the **validation** split (16 per class, 96 patches) and the 192 test squares the **test** split.
Inputs stay at 64 px (small, so the whole grid is affordable on one CPU thread) and are scaled as the weights
expect (mean = std = 0.5), once, before any run.

Source model: EfficientNet-Lite0 with ImageNet weights (``transferlab.lite0``), its 1000-way classifier kept aside,
a new 6-way head seeded by the seed, BatchNorm statistics frozen at ImageNet's in every arm (``freeze_bn``). The arms
differ only in what trains:

* ``probe``    the head only;
* ``bitfit``   every bias (here: the BatchNorm shifts; Lite0's convolutions have none) and the head;
* ``lora_r2``, ``lora_r8``   ``transferlab.lora.apply_lora`` (alpha = 8) on the 32 1x1 (pointwise) convolutions
               (expansions, projections, ``conv_head``; the depthwise convs have one input channel per filter,
               nothing to factorise), and the head;
* ``full``     every parameter.

Every arm: ``--steps`` AdamW steps (no weight decay, cosine schedule) on batches of ``--batch`` drawn with
replacement from the seed's labelled patches; every seed runs the whole grid ``--lrs`` (a decade apart, 1e-4 to
1e-1: coarse, to fit the CPU budget, and wide) and keeps the rate with its best validation accuracy (ties: the
smaller rate). Reported per seed at its chosen rate: test accuracy, process
seconds per step (one thread), and **forgetting**: on the real photos of the wheel (``transferlab.photos.PHOTOS``, in
colour, the weights' own 224 px transform, each photo and its mirror image), the fine-tuned backbone under the
original ImageNet classifier is compared with the source model: the share of photos with the same top-1 class
(agreement) and the mean KL divergence from the source's predicted distribution. Per method, once: trained
parameters, the bytes one task stores (safetensors: what it trained, vs the whole model), and the memory one
training step holds (``transferlab.memory.step_memory``). Seed 0 also runs at twice the budget (convergence check).
The results file records its provenance (``benchmarks/provenance.py``); it is written after every method
(``"complete": false`` until the last).

Usage (from the repository root, with ``PYTHONPATH=src``)::

    python benchmarks/peft_photos.py --threads 1        # writes src/transferlab/results/peft_photos.json
    # a choice on the grid's edge (here: the probe, at 0.1): run the next rate for that method, then merge
    python benchmarks/peft_photos.py --methods probe --lrs 1.0 --name peft_photos_more_rates
    python benchmarks/peft_photos.py --extend src/transferlab/results/{peft_photos,peft_photos_more_rates}.json
    # (full fine-tuning chose 1e-4 on seed 0: the same with --methods full --lrs 1e-5, extending the extended file)
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import Tensor, nn
from torch.nn import functional as F

from transferlab.env import seed_everything
from transferlab.freeze import count_parameters, freeze_bn
from transferlab.lite0 import EfficientNetLite0_Weights, efficientnet_lite0
from transferlab.lora import apply_lora, bitfit, lora_state_dict
from transferlab.memory import step_memory
from transferlab.photos import PHOTOS, TEXTURES, few_shot_indices, load_photo, photo_patches
from transferlab.training import predict, train_steps

import rate_choice
from provenance import RESULTS, run_info, run_started

WEIGHTS = EfficientNetLite0_Weights.DEFAULT
METHODS = ("probe", "bitfit", "lora_r2", "lora_r8", "full")
ALPHA = 8.0


def pointwise_convs(model: nn.Module) -> list[str]:
    """The names of every 1x1 convolution of Lite0 (where LoRA goes)."""
    return [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)]


def splits() -> dict[str, tuple[Tensor, Tensor]]:
    """The labelled pool, validation and test patches (scaled to [-1, 1]), and the source photos (224 px)."""
    train_x, train_y = photo_patches("train").tensors
    test_x, test_y = photo_patches("test").tensors
    per_class = len(train_y) // len(TEXTURES)
    position = torch.arange(len(train_y)) % per_class  # patch i is the (i mod 32)-th square of its photo
    pool, val = position % 2 == 0, position % 2 == 1
    pre = WEIGHTS.transforms()
    photos = torch.stack([pre(load_photo(name)) for name in PHOTOS])
    return {
        "pool": (train_x[pool] * 2 - 1, train_y[pool]),
        "val": (train_x[val] * 2 - 1, train_y[val]),
        "test": (test_x * 2 - 1, test_y),
        "photos": (torch.cat([photos, photos.flip(-1)]), torch.zeros(2 * len(PHOTOS), dtype=torch.long)),
    }


@functools.cache
def _source() -> nn.Module:
    return efficientnet_lite0(weights=WEIGHTS)  # read (and hash-checked) once; every run starts from a copy


def build(method: str, seed: int) -> tuple[nn.Module, nn.Module]:
    """ImageNet Lite0 set up for ``method`` with a new 6-way head seeded by ``seed``, and its ImageNet classifier."""
    model = copy.deepcopy(_source())
    imagenet_head = model.classifier
    torch.manual_seed(seed)
    model.classifier = nn.Linear(model.classifier.in_features, len(TEXTURES))
    freeze_bn(model)
    if method == "probe":
        model.requires_grad_(False)
    elif method == "bitfit":
        bitfit(model)
    elif method.startswith("lora_r"):
        apply_lora(model, pointwise_convs(model), r=int(method.removeprefix("lora_r")), alpha=ALPHA)
    elif method == "full":
        model.requires_grad_(True)
    else:
        raise ValueError(f"unknown method {method!r}; use one of {METHODS}")
    model.classifier.requires_grad_(True)
    return model, imagenet_head


@torch.no_grad()
def logits(model: nn.Module, images: Tensor, head: nn.Module | None = None) -> Tensor:
    """Eval-mode logits in batches of 64, through ``head`` in place of the model's classifier if given."""
    own, was = model.classifier, model.training
    model.classifier = head if head is not None else own
    model.eval()
    try:
        return torch.cat([model(x) for x in images.split(64)])
    finally:
        model.classifier = own
        model.train(was)


def accuracy(model: nn.Module, data: tuple[Tensor, Tensor]) -> float:
    """Top-1 accuracy through the package's evaluation loop (`training.predict`, batches of 64, eval mode)."""
    preds, targets = predict(model, zip(data[0].split(64), data[1].split(64), strict=True))
    return (preds == targets).float().mean().item()


def forgetting(model: nn.Module, head: nn.Module, photos: Tensor, source: Tensor) -> dict[str, float]:
    """Top-1 agreement with the source model's ImageNet predictions, and KL(source || fine-tuned), on the photos."""
    out = logits(model, photos, head)
    kl = F.kl_div(out.log_softmax(1), source.log_softmax(1), log_target=True, reduction="batchmean")
    return {"imagenet_agreement": (out.argmax(1) == source.argmax(1)).float().mean().item(), "imagenet_kl": kl.item()}


def train(method: str, seed: int, lr: float, steps: int, pool: tuple[Tensor, Tensor], args: argparse.Namespace):
    """One run: the model, its ImageNet classifier and the process seconds per step."""
    seed_everything(seed)
    model, head = build(method, seed)
    chosen = few_shot_indices(pool[1], args.k, seed)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    start = time.process_time()
    train_steps(
        model,
        (pool[0][chosen], pool[1][chosen]),
        steps,
        optimizer,
        batch_size=args.batch,
        generator=torch.Generator().manual_seed(seed),
        scheduler=schedule,
    )
    return model, head, (time.process_time() - start) / steps


def task_tensors(model: nn.Module, method: str) -> dict[str, Tensor]:
    """What one task stores besides the shared source model: what it trained (the whole model for ``full``)."""
    if method == "full":
        return dict(model.state_dict())
    keep = {f"classifier.{k}": v for k, v in model.classifier.state_dict().items()}
    if method == "bitfit":
        keep |= {k: v for k, v in model.named_parameters() if k.endswith(".bias")}
    if method.startswith("lora"):
        keep |= lora_state_dict(model)
    return keep


def costs(method: str, data: dict[str, tuple[Tensor, Tensor]], args: argparse.Namespace) -> dict[str, int]:
    """Trained parameters, the bytes of the task's safetensors file and of the whole model's, one step's memory."""
    model, _ = build(method, 0)
    whole = dict(build("full", 0)[0].state_dict())  # the plain model with its 6-way head
    with tempfile.TemporaryDirectory() as tmp:
        sizes = {}
        for what, tensors in (("task", task_tensors(model, method)), ("whole", whole)):
            path = Path(tmp) / f"{what}.safetensors"
            save_file({k: v.detach().contiguous() for k, v in tensors.items()}, path)
            sizes[what] = path.stat().st_size
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    batch = few_shot_indices(data["pool"][1], args.k, 0)
    memory = step_memory(model, optimizer, data["pool"][0][batch], data["pool"][1][batch])
    return {
        "trainable": count_parameters(model).trainable,
        "stored_bytes": sizes["task"],
        "whole_model_bytes": sizes["whole"],
        "step_activations_bytes": memory.activations,
        "step_gradients_bytes": memory.gradients,
        "step_optimizer_bytes": memory.optimizer_state,
        "step_training_bytes": memory.training,
    }


def extend(base_path: str, extra_path: str, name: str) -> None:
    """A run, and a run of the same settings on more rates for some methods, as one file
    (:func:`rate_choice.extend`: each seed keeps the best rate of the union on validation, ties: the smaller)."""
    base, extra = (json.loads(open(p, encoding="utf-8").read()) for p in (base_path, extra_path))
    merged = rate_choice.extend(base, extra, [base_path, extra_path])
    (RESULTS / f"{name}.json").write_text(json.dumps(merged, indent=1) + "\n", encoding="utf-8")
    print("wrote", RESULTS / f"{name}.json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--lrs", nargs="+", type=float, default=[1e-4, 1e-3, 1e-2, 1e-1])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--check-seeds", type=int, default=1, help="seeds 0..n-1 also run at twice the budget")
    parser.add_argument("--k", type=int, default=2, help="labelled patches per class")
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--batch", type=int, default=12)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--name", default="peft_photos")
    parser.add_argument("--extend", nargs=2, metavar="JSON", help="a run, and a run of the same on more rates")
    args = parser.parse_args()
    if args.extend:
        extend(*args.extend, args.name)
        return
    torch.set_num_threads(args.threads)
    started = run_started()
    data = splits()
    source, imagenet_head = build("probe", 0)
    source_logits = logits(source, data["photos"][0], imagenet_head)
    results: dict = {
        "settings": {k: v for k, v in vars(args).items() if k not in ("name", "extend")} | {"size": 64, "alpha": ALPHA},
        "splits": {name: len(y) for name, (_, y) in data.items()},
        "lora_targets": pointwise_convs(source),
        "source_photo_classes": [WEIGHTS.meta["categories"][i] for i in source_logits.argmax(1)[: len(PHOTOS)]],
        "methods": {},
    }
    for method in args.methods:
        runs, val = [], {f"{lr:g}": [] for lr in args.lrs}
        for seed in range(args.seeds):
            best, seed_val, grid = rate_choice.run_grid(  # this seed's choice; ties: the smaller rate
                args.lrs,
                functools.partial(train, method, seed, steps=args.steps, pool=data["pool"], args=args),
                lambda run: accuracy(run[0], data["val"]),
            )
            for lr in args.lrs:
                val[f"{lr:g}"].append(seed_val[lr])
            model, head, per_step = grid[best]
            run = {
                "seed": seed,
                "lr": best,
                "test_acc": accuracy(model, data["test"]),
                "val_acc": seed_val[best],
                "seconds_per_step": per_step,
                **forgetting(model, head, data["photos"][0], source_logits),
            }
            if seed < args.check_seeds:
                longer = train(method, seed, best, 2 * args.steps, data["pool"], args)[0]
                run["test_acc_2x_steps"] = accuracy(longer, data["test"])
            runs.append(run)
            del grid
        results["methods"][method] = {
            **costs(method, data, args),
            "lr_by_seed": [r["lr"] for r in runs],
            "val_acc_by_lr": val,  # lr -> validation accuracy of seeds 0, 1, ...
            "runs": runs,
        }
        print(
            method,
            "lr",
            [r["lr"] for r in runs],
            "test",
            [round(r["test_acc"], 3) for r in runs],
            "agreement",
            [round(r["imagenet_agreement"], 3) for r in runs],
            f"{1000 * runs[0]['seconds_per_step']:.0f} ms/step",
            flush=True,
        )
        write(results, started, args.name, done=method == args.methods[-1])  # after every method: a partial file


def write(results: dict, started: dict, name: str, done: bool) -> None:
    results["complete"] = done
    results["provenance"] = run_info(started)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    print("wrote", path, "(complete)" if done else "(partial)", flush=True)


if __name__ == "__main__":
    main()
