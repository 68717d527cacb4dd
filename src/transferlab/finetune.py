"""Fine-tune the offline ImageNet EfficientNet-Lite0 on a folder of photos: the recipe of notebook 12, as a command.

    python -m transferlab.finetune DATA_DIR --out DIR [--strategy lpft] [--size 48] [--steps 12] [--lrs 1e-3,3e-3,1e-2]

``DATA_DIR`` is ImageFolder-shaped (``DATA_DIR/class/*.jpg``, or ``DATA_DIR/{train,val[,test]}/class/*.jpg``; see
:func:`transferlab.imagefolder.load_splits`). Every learning rate of the grid is tried on one seed; the one with the
best validation accuracy wins, and within a run the weights of the best validation check are kept. Strategies:
``probe`` (a linear head on cached frozen features), ``full`` (all weights, a fresh head) and ``lpft`` (probe first,
then fine-tune everything from the probe's head; Kumar et al. 2022). Training is a fixed number of AdamW steps under
a one-cycle schedule, with random-resized-crop and flip augmentation. ``DIR`` receives ``model.safetensors`` and
``model.json`` (classes, preprocessing, the chosen rate and accuracies); :func:`load_finetuned` reads them back.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from timm.models import EfficientNet
from torch import nn
from torchvision.transforms import v2
from torchvision.transforms.functional import InterpolationMode

from transferlab.env import get_device, seed_everything
from transferlab.features import extract_features
from transferlab.imagefolder import ImageFolderError, Splits, load_splits
from transferlab.lite0 import EfficientNetLite0_Weights, efficientnet_lite0
from transferlab.progress import tqdm
from transferlab.training import predict, train_steps

__all__ = [
    "FolderData",
    "Run",
    "accuracy",
    "augment",
    "eval_transform",
    "finetune_command",
    "finetune_folder",
    "load_data",
    "load_finetuned",
    "main",
    "new_lite0",
    "probe_features",
    "save_finetuned",
    "train_run",
]

WEIGHTS = EfficientNetLite0_Weights.DEFAULT
MEAN = STD = (0.5, 0.5, 0.5)  # Lite0's inputs are scaled to [-1, 1]
LRS = (1e-3, 3e-3, 1e-2)
SIZE, STEPS, PROBE_STEPS, BATCH = 48, 12, 192, 16  # the defaults of the command, as notebook 12 runs it
STRATEGIES = ("probe", "full", "lpft")


def eval_transform(size: int) -> nn.Module:
    """The weights' own eval transform at ``size`` px: resize the short side to ``size * 256 / 224``, centre-crop
    ``size``, scale to [-1, 1] (at ``size=224`` this is ``WEIGHTS.transforms()`` itself).

    Example:
        >>> eval_transform(64)
        ImageClassification(
            crop_size=[64]
            resize_size=[73]
            mean=[0.5, 0.5, 0.5]
            std=[0.5, 0.5, 0.5]
            interpolation=InterpolationMode.BICUBIC
        )
    """
    return WEIGHTS.transforms(crop_size=size, resize_size=round(size * 256 / 224))


@dataclass
class FolderData:
    """Images of a split, held in memory: ``eval`` are model inputs (the eval transform), ``raw`` are uint8 squares
    of ``size * 256 / 224`` px that :func:`augment` crops from during training."""

    classes: list[str]
    size: int
    paths: dict[str, list[Path]] = field(repr=False)
    eval: dict[str, torch.Tensor] = field(repr=False)
    raw: dict[str, torch.Tensor] = field(repr=False)
    labels: dict[str, torch.Tensor] = field(repr=False)


def load_data(root: str | os.PathLike | Splits, size: int = SIZE, seed: int = 0) -> FolderData:
    """Read every image of ``root`` (checked and split by :func:`load_splits`) into tensors, once."""
    splits = root if isinstance(root, Splits) else load_splits(root, seed=seed)
    to_eval = eval_transform(size)
    resize = round(size * 256 / 224)
    to_raw = v2.Compose(
        [v2.PILToTensor(), v2.Resize(resize, interpolation=InterpolationMode.BICUBIC), v2.CenterCrop(resize)]
    )
    paths, evals, raws, labels = {}, {}, {}, {}
    for name in ("train", "val", "test"):
        items = getattr(splits, name)
        images = []
        for path, _ in items:
            with Image.open(path) as image:
                images.append(image.convert("RGB"))
        paths[name] = [p for p, _ in items]
        evals[name] = torch.stack([to_eval(im) for im in images])
        raws[name] = torch.stack([to_raw(im) for im in images])
        labels[name] = torch.tensor([label for _, label in items], dtype=torch.int64)
    return FolderData(splits.classes, size, paths, evals, raws, labels)


def augment(raw: torch.Tensor, size: int, scale: tuple[float, float] = (0.5, 1.0)) -> torch.Tensor:
    """Train-time augmentation of a uint8 batch ``(N, 3, H, W)``: a random resized crop and a random flip per
    image, then the eval transform's scaling to [-1, 1]. Draws from torch's global generator.

    Example:
        >>> augment(torch.zeros(2, 3, 73, 73, dtype=torch.uint8), 64).shape
        torch.Size([2, 3, 64, 64])
    """
    crop = v2.Compose(
        [
            v2.RandomResizedCrop(size, scale=scale, interpolation=InterpolationMode.BICUBIC, antialias=True),
            v2.RandomHorizontalFlip(),
        ]
    )
    batch = torch.stack([crop(image) for image in raw]).float() / 255.0
    return (batch - 0.5) / 0.5


def accuracy(
    model: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    device: torch.device | str = "cpu",
    batch_size: int = 256,
) -> float:
    """Accuracy of ``model`` on in-memory inputs (`transferlab.training.predict`: eval mode, no gradients; the mode
    is restored)."""
    preds, _ = predict(model, zip(inputs.split(batch_size), labels.split(batch_size), strict=True), device=device)
    return int((preds == labels.cpu()).sum()) / len(labels)


@functools.lru_cache(maxsize=1)
def _imagenet_state() -> dict[str, torch.Tensor]:
    """The ImageNet Lite0 state_dict, read (and hash-checked) once per process; loading copies it into a model."""
    return efficientnet_lite0(weights=WEIGHTS).state_dict()


def new_lite0(num_classes: int, seed: int) -> EfficientNet:
    """The ImageNet Lite0 with a fresh ``num_classes`` head drawn by ``seed``.

    Example:
        >>> new_lite0(3, seed=0).classifier
        Linear(in_features=1280, out_features=3, bias=True)
    """
    model = efficientnet_lite0()
    model.load_state_dict(_imagenet_state(), strict=True)
    torch.manual_seed(seed)
    model.reset_classifier(num_classes)
    # channels-last memory order (only the order of the values in memory changes): on a CPU, Lite0's depthwise
    # convolutions train in it in about a quarter less time (benchmarks/channels_last.py)
    return model.to(memory_format=torch.channels_last)


def probe_features(model: EfficientNet, data: FolderData, device: torch.device | str = "cpu") -> dict[str, tuple]:
    """Frozen Lite0 features (1280 per image, global-average-pooled) of every split, computed once."""
    backbone = copy.deepcopy(model)
    backbone.reset_classifier(0)  # the classifier becomes an Identity
    out = {}
    for name in ("train", "val", "test"):
        batches = zip(data.eval[name].split(256), data.labels[name].split(256), strict=True)
        out[name] = extract_features(backbone.to(device), batches, device).tensors
    return out


@dataclass
class Run:
    """One training run: the best validation accuracy, the step it was reached at, and every step's loss."""

    lr: float
    seed: int
    val_acc: float
    best_step: int
    losses: list[float] = field(repr=False)


def train_run(
    model: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    *,
    lr: float,
    steps: int,
    seed: int,
    batch_size: int = BATCH,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    label_smoothing: float = 0.0,
    eval_every: int = 4,
    device: torch.device | str = "cpu",
    autocast_dtype: torch.dtype | None = None,
) -> Run:
    """Train the trainable parameters of ``model`` for ``steps`` AdamW steps under one-cycle (peak ``lr``),
    checking validation accuracy every ``eval_every`` steps and at the end; the best weights are loaded back.

    ``transform`` is applied to every drawn batch (e.g. :func:`augment`); ``autocast_dtype`` runs the steps under
    ``torch.autocast`` (bf16 on CPU, fp16 on CUDA). The batches and the augmentation are drawn by ``seed``.
    """
    device = torch.device(device)
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
    best = {"acc": -1.0, "step": -1, "state": None}

    def check(step: int, loss: float) -> None:
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            acc = accuracy(model, *val, device=device)
            if acc > best["acc"]:
                best.update(acc=acc, step=step + 1, state=copy.deepcopy(model.state_dict()))

    torch.manual_seed(seed)  # the augmentation's draws
    generator = torch.Generator().manual_seed(seed)  # the batches' draws
    with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        losses = train_steps(
            model,
            train,
            steps,
            optimizer,
            batch_size=batch_size,
            generator=generator,
            transform=transform,
            scheduler=scheduler,
            device=device,
            on_step=check,
            loss_fn=nn.CrossEntropyLoss(label_smoothing=label_smoothing),
        )
    model.load_state_dict(best["state"])
    return Run(lr, seed, best["acc"], best["step"], losses)


def _pick(runs: Sequence[Run]) -> Run:
    return max(runs, key=lambda r: r.val_acc)  # the first best wins ties: the smallest rate of the grid


def finetune_folder(
    data: FolderData,
    strategy: str = "lpft",
    lrs: Sequence[float] = LRS,
    steps: int = STEPS,
    seed: int = 0,
    batch_size: int = BATCH,
    label_smoothing: float = 0.0,
    device: torch.device | str = "cpu",
    progress: bool = True,
    probe_lrs: Sequence[float] | None = None,
    probe_steps: int = PROBE_STEPS,
) -> tuple[nn.Module, dict[str, list[Run]]]:
    """The recipe: for ``strategy`` ("probe", "full" or "lpft"), train one run per rate of ``lrs`` on ``seed`` and
    keep the model of the best validation accuracy. Returns the model and the runs of each stage
    (``{"probe": [...], "full": [...]}``; LP-FT has both stages: its probe rate is picked first, from
    ``probe_lrs``, default ``lrs``). The probe trains for ``probe_steps`` steps: on cached features a step costs
    next to nothing, so it is trained to convergence rather than cut at the fine-tune's ``steps``.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    seed_everything(seed)
    n, runs = len(data.classes), {}
    base = new_lite0(n, seed)
    probe_lrs = lrs if probe_lrs is None else probe_lrs
    n_runs = {"probe": len(probe_lrs), "full": len(lrs), "lpft": len(probe_lrs) + len(lrs)}[strategy]
    bar = tqdm(total=n_runs, desc=strategy, disable=not progress, leave=True)
    head = None
    if strategy in ("probe", "lpft"):
        feats = probe_features(base, data, device)
        heads, runs["probe"] = [], []
        for lr in probe_lrs:
            torch.manual_seed(seed)
            heads.append(nn.Linear(feats["train"][0].shape[1], n))
            runs["probe"].append(
                train_run(
                    heads[-1],
                    feats["train"],
                    feats["val"],
                    lr=lr,
                    steps=probe_steps,
                    seed=seed,
                    batch_size=batch_size,
                    label_smoothing=label_smoothing,
                    device=device,
                )
            )
            bar.update()
            bar.set_postfix(stage="probe", lr=lr, val_acc=f"{runs['probe'][-1].val_acc:.3f}")
        head = heads[runs["probe"].index(_pick(runs["probe"]))]
        if strategy == "probe":
            base.classifier = head
            bar.close()
            return base.to(device), runs
    models, runs["full"] = [], []
    for lr in lrs:
        model = copy.deepcopy(base)
        if head is not None:
            model.classifier = copy.deepcopy(head)
        runs["full"].append(
            train_run(
                model,
                (data.raw["train"], data.labels["train"]),
                (data.eval["val"], data.labels["val"]),
                lr=lr,
                steps=steps,
                seed=seed,
                batch_size=batch_size,
                transform=lambda x: augment(x, data.size),
                label_smoothing=label_smoothing,
                device=device,
            )
        )
        models.append(model)
        bar.update()
        bar.set_postfix(stage="fine-tune", lr=lr, val_acc=f"{runs['full'][-1].val_acc:.3f}")
    bar.close()
    return models[runs["full"].index(_pick(runs["full"]))], runs


def save_finetuned(
    model: nn.Module, out: str | os.PathLike, classes: Sequence[str], size: int, **extra: object
) -> tuple[Path, Path]:
    """Write ``out/model.safetensors`` (the state_dict) and ``out/model.json`` (classes, preprocessing, ``extra``)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    weights, meta = out / "model.safetensors", out / "model.json"
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(weights))
    preprocessing = {
        "crop_size": size,
        "resize_size": round(size * 256 / 224),
        "mean": list(MEAN),
        "std": list(STD),
        "interpolation": "bicubic",
    }
    meta.write_text(
        json.dumps(
            {
                "architecture": "timm tf_efficientnet_lite0",
                "classes": list(classes),
                "preprocessing": preprocessing,
                **extra,
            },
            indent=2,
        )
    )
    return weights, meta


def load_finetuned(out: str | os.PathLike) -> tuple[nn.Module, dict, nn.Module]:
    """Read what :func:`save_finetuned` wrote into a fresh Lite0: ``(model in eval mode, metadata, eval transform)``.

    The weights load strictly (every tensor by name and shape); no ImageNet file is read. The model is in the
    channels-last memory order, as :func:`new_lite0` trains it, so it computes the very same logits.
    """
    out = Path(out)
    meta = json.loads((out / "model.json").read_text())
    model = efficientnet_lite0(num_classes=len(meta["classes"])).to(memory_format=torch.channels_last)  # as trained
    model.load_state_dict(load_file(str(out / "model.safetensors")), strict=True)
    pre = meta["preprocessing"]
    transform = WEIGHTS.transforms(crop_size=pre["crop_size"], resize_size=pre["resize_size"])
    return model.eval(), meta, transform


def finetune_command(argv: Sequence[str] | None = None) -> tuple[dict, nn.Module]:
    """What ``python -m transferlab.finetune`` does: prints its progress and numbers, saves the model, and returns
    ``(report, model)``: the printed numbers as a dict, and the chosen model (the notebook goes on with it)."""
    parser = argparse.ArgumentParser(
        prog="python -m transferlab.finetune", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("data_dir", help="ImageFolder-shaped folder: DATA_DIR/class/*.jpg or DATA_DIR/train|val/...")
    parser.add_argument("--out", required=True, help="folder for model.safetensors and model.json")
    parser.add_argument("--strategy", choices=STRATEGIES, default="lpft")
    parser.add_argument("--size", type=int, default=SIZE, help=f"input side in pixels (default {SIZE})")
    parser.add_argument("--steps", type=int, default=STEPS, help=f"fine-tuning steps per run (default {STEPS})")
    parser.add_argument(
        "--probe-steps",
        type=int,
        default=PROBE_STEPS,
        help=f"steps of the probe on cached features (default {PROBE_STEPS})",
    )
    parser.add_argument("--batch-size", type=int, default=BATCH)
    parser.add_argument("--lrs", default=",".join(map(str, LRS)), help="comma-separated learning rates to try")
    parser.add_argument("--probe-lrs", default=None, help="rates for the probe stage (default: --lrs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--label-smoothing", type=float, default=0.0)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    lrs = [float(x) for x in args.lrs.split(",")]
    probe_lrs = None if args.probe_lrs is None else [float(x) for x in args.probe_lrs.split(",")]
    device = get_device()
    try:
        data = load_data(args.data_dir, args.size, args.seed)
    except ImageFolderError as err:  # a bad folder: the message, not a traceback
        raise SystemExit(f"error: {err}") from err
    counts = {s: len(data.labels[s]) for s in ("train", "val", "test")}
    print(f"classes: {', '.join(data.classes)}; images: {counts}; device: {device}")
    model, runs = finetune_folder(
        data,
        args.strategy,
        lrs,
        args.steps,
        args.seed,
        args.batch_size,
        args.label_smoothing,
        device,
        progress=not args.no_progress,
        probe_lrs=probe_lrs,
        probe_steps=args.probe_steps,
    )
    report: dict = {"strategy": args.strategy, "classes": data.classes}
    for stage, stage_runs in runs.items():
        for run in stage_runs:
            print(f"{stage:>5}  lr {run.lr:g}  val_acc {run.val_acc:.4f}  (best at step {run.best_step})")
        report[f"{stage}_val"] = {run.lr: run.val_acc for run in stage_runs}
        report[f"{stage}_lr"] = _pick(stage_runs).lr
    report["val_acc"] = _pick(runs["full" if "full" in runs else "probe"]).val_acc
    report["test_acc"] = accuracy(model, data.eval["test"], data.labels["test"], device)
    chosen = ", ".join(f"{stage} lr {report[stage + '_lr']:g}" for stage in runs)
    print(f"chosen on validation: {chosen}; val_acc {report['val_acc']:.4f}; test_acc {report['test_acc']:.4f}")
    weights, meta = save_finetuned(
        model,
        args.out,
        data.classes,
        args.size,
        strategy=args.strategy,
        lr={s: report[f"{s}_lr"] for s in runs},
        val_acc=report["val_acc"],
        test_acc=report["test_acc"],
    )
    print(f"saved {weights} and {meta}")
    return report, model


def main(argv: Sequence[str] | None = None) -> dict:
    """The command line; returns the report of :func:`finetune_command`."""
    return finetune_command(argv)[0]


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
