"""The fine-tuning recipes that notebook 07 and ``benchmarks/unfreezing.py`` compare, defined once.

Every recipe ("arm") starts from the pretrained TinyResNet with a new 10-way head, trains with AdamW for the same
`Budget` (epochs x steps of ``batch`` images, the same batches for a given seed) and a step schedule that halves
every learning rate every ``step_size`` epochs, and is scored as it is after the last epoch. They differ in what
trains, when, and at which rate. ``body_lr`` is the one knob tuned per arm: the learning rate of ``layer4``, the
pretrained block next to the head (``layer3`` gets ``LAYER3_RATIO`` times it in the discriminative arms).

==================  ==========================================================================================
``features``        head only; the pretrained network, BatchNorm included, frozen (no ``body_lr``)
``one-shot``        everything from epoch 0, every pretrained layer at ``body_lr``, BatchNorm in train mode
``warm-up``         as ``one-shot``, but the pretrained layers' rate ramps up over the first ``warmup`` epochs
``LP-FT``           head only for ``unfreeze_at[0]`` epochs (linear probe), then everything at ``body_lr``
``matched``         gradual's layers and rates from epoch 0: head, ``layer4``, ``layer3``; conv1-layer2 frozen
``gradual``         head first, ``layer4`` at epoch ``unfreeze_at[0]``, ``layer3`` at ``unfreeze_at[1]``
==================  ==========================================================================================

Example:
    >>> model, optimizer, scheduler, on_epoch_start = build_arm("gradual", 1e-3)
    >>> [g["name"] for g in optimizer.param_groups]
    ['fc']
    >>> on_epoch_start(2); [g["name"] for g in optimizer.param_groups]
    ['fc', 'layer4']
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, RandomSampler, TensorDataset

from transferlab.data import TARGET_CLASSES, target_dataset
from transferlab.env import seed_everything
from transferlab.freeze import freeze_bn, unfreeze_bn
from transferlab.models import TinyResNet_Weights, tiny_resnet
from transferlab.optim import GradualUnfreezer, param_groups
from transferlab.training import train_one_epoch

__all__ = [
    "ARMS",
    "BODY",
    "LAYER3_RATIO",
    "Budget",
    "PairedDifference",
    "build_arm",
    "frozen_model",
    "new_model",
    "paired_difference",
    "run_arm",
    "target_split",
    "train_loader_for",
]

ARMS = ("features", "one-shot", "warm-up", "LP-FT", "matched", "gradual")
BODY = ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4")  # the pretrained modules with parameters
LAYER3_RATIO = 0.3  # layer3's learning rate / layer4's in the discriminative arms (matched, gradual)
WEIGHTS = TinyResNet_Weights.DEFAULT


@dataclass(frozen=True)
class Budget:
    """What every arm gets: ``epochs`` x ``steps_per_epoch`` steps of ``batch`` images from ``k`` per class."""

    k: int = 10
    batch: int = 16
    steps_per_epoch: int = 4
    epochs: int = 6
    head_lr: float = 1e-2
    step_size: int = 2  # StepLR: every rate halves every step_size epochs
    gamma: float = 0.5
    warmup: int = 2  # warm-up arm: epochs over which the pretrained layers' rate ramps up
    unfreeze_at: tuple[int, int] = (2, 4)  # LP-FT and gradual: epoch of the first (and gradual's second) unfreezing


def new_model() -> nn.Module:
    """The pretrained TinyResNet with a new 10-way head, everything trainable."""
    model = tiny_resnet(weights=WEIGHTS)
    model.fc = nn.Linear(model.fc.in_features, len(TARGET_CLASSES))
    return model


def frozen_model() -> nn.Module:
    """`new_model` with everything but the head frozen, BatchNorm statistics included (`freeze_bn`)."""
    model = new_model()
    model.requires_grad_(False)
    freeze_bn(model)
    model.fc.requires_grad_(True)
    return model


def _tensors(dataset) -> TensorDataset:
    images, labels = zip(*(dataset[i] for i in range(len(dataset))), strict=True)
    return TensorDataset(torch.stack(images), torch.as_tensor(labels))


def train_loader_for(seed: int, budget: Budget = Budget()) -> DataLoader:
    """``budget.k`` images per class chosen by ``seed``; ``steps_per_epoch`` batches an epoch, with replacement."""
    train = _tensors(target_dataset("train", k=budget.k, seed=seed, transform=WEIGHTS.transforms()))
    sampler = RandomSampler(
        train,
        replacement=True,
        num_samples=budget.batch * budget.steps_per_epoch,
        generator=torch.Generator().manual_seed(seed),
    )
    return DataLoader(train, batch_size=budget.batch, sampler=sampler, num_workers=0)


def target_split(val_digits: int = 100) -> tuple[TensorDataset, TensorDataset]:
    """Validation and test images from the fixed target test set, split by *digit image*.

    The test set shows each of its 500 digit images in two scenes (index ``i`` and ``i + 500``); the first
    ``val_digits`` digits (both scenes) validate, the rest test, so no digit is in both.
    """
    full = target_dataset("test", transform=WEIGHTS.transforms())
    n = len(full) // 2
    if not 0 < val_digits < n:
        raise ValueError(f"val_digits must be between 1 and {n - 1}, got {val_digits}.")
    val = [*range(val_digits), *range(n, n + val_digits)]
    test = [*range(val_digits, n), *range(n + val_digits, 2 * n)]
    data = _tensors(full)
    return TensorDataset(*data[val]), TensorDataset(*data[test])


def _unfreeze(model: nn.Module, names: list[str]) -> None:
    for name in names:
        model.get_submodule(name).requires_grad_(True)
        unfreeze_bn(model, name)  # its BatchNorm follows model.train() again


def build_arm(
    arm: str, body_lr: float | None, budget: Budget = Budget(), head_lr: float | None = None
) -> tuple[nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler, Callable[[int], None]]:
    """A fresh model, its optimizer, scheduler and ``on_epoch_start`` callback for ``fit``, for one arm.

    Args:
        arm: one of `ARMS`.
        body_lr: learning rate of ``layer4`` (ignored by ``features``).
        head_lr: the new head's rate (``budget.head_lr`` if None).
    """
    if arm not in ARMS:
        raise ValueError(f"unknown arm {arm!r}; choose one of {ARMS}.")
    if body_lr is None and arm != "features":
        raise ValueError(f"arm {arm!r} trains pretrained layers: pass body_lr=...")
    head_lr = budget.head_lr if head_lr is None else head_lr
    discriminative: dict[str, float] = {} if body_lr is None else {"layer4": body_lr, "layer3": LAYER3_RATIO * body_lr}
    on_epoch_start: Callable[[int], None] = lambda epoch: None  # noqa: E731
    if arm in ("one-shot", "warm-up"):
        model = new_model()
        groups = param_groups(model, {"fc": head_lr}, default_lr=body_lr)
    elif arm == "matched":
        model = frozen_model()
        _unfreeze(model, ["layer4", "layer3"])
        groups = param_groups(model, {"fc": head_lr, **discriminative})
    else:  # features, LP-FT, gradual start as a linear probe
        model = frozen_model()
        groups = param_groups(model, {"fc": head_lr})
    optimizer = torch.optim.AdamW(groups)
    if arm == "warm-up":
        decay = lambda e: budget.gamma ** (e // budget.step_size)  # noqa: E731  (what StepLR does)
        ramp = lambda e: decay(e) * min(1.0, (e + 1) / (budget.warmup + 1))  # noqa: E731
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, [decay if g["name"] == "fc" else ramp for g in optimizer.param_groups]
        )
    else:
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=budget.step_size, gamma=budget.gamma)
    if arm in ("LP-FT", "gradual"):
        assert body_lr is not None  # checked above: only "features" runs without one
        schedule: dict[int, list[str]]
        lrs: dict[str, float]
        if arm == "LP-FT":
            schedule, lrs = {budget.unfreeze_at[0]: list(BODY)}, dict.fromkeys(BODY, body_lr)
        else:
            schedule = {budget.unfreeze_at[0]: ["layer4"], budget.unfreeze_at[1]: ["layer3"]}
            lrs = discriminative
        unfreezer = GradualUnfreezer(model, optimizer, schedule, lrs=lrs)

        def unfreeze_on_schedule(epoch: int) -> None:
            _unfreeze(model, unfreezer(epoch))

        on_epoch_start = unfreeze_on_schedule

    return model, optimizer, scheduler, on_epoch_start


def run_arm(
    arm: str,
    seed: int,
    body_lr: float | None,
    budget: Budget = Budget(),
    head_lr: float | None = None,
    device: torch.device | str = "cpu",
) -> nn.Module:
    """Train one arm for one seed on ``budget`` and return the model as it is after the last epoch.

    The loop is the plain one of notebook 07: ``on_epoch_start(epoch)``, `train_one_epoch`, ``scheduler.step()``.
    Nothing is evaluated during training: every arm trains its full budget, and validation is used only to
    choose learning rates.
    """
    seed_everything(seed)  # the new head's initial weights
    model, optimizer, scheduler, on_epoch_start = build_arm(arm, body_lr, budget, head_lr)
    model.to(device)
    loader = train_loader_for(seed, budget)
    for epoch in range(budget.epochs):
        on_epoch_start(epoch)
        train_one_epoch(model, loader, optimizer, device=device)
        scheduler.step()
    return model


class PairedDifference(NamedTuple):
    """Mean accuracy difference A - B over seeds, with its two standard errors (see `paired_difference`)."""

    mean: float
    se_seeds: float  # std of the per-seed differences (ddof=1) / sqrt(seeds)
    se_images: float  # bootstrap over test images, resampled alike for every seed and both arms
    per_seed: list[float]

    @property
    def se(self) -> float:
        """Both sources of noise together: sqrt(se_seeds**2 + se_images**2)."""
        return float(np.hypot(self.se_seeds, self.se_images))

    @property
    def clears(self) -> bool:
        """True when the difference is more than two (combined) standard errors from zero; else it is a tie."""
        return abs(self.mean) > 2 * self.se


def paired_difference(
    correct_a: np.ndarray, correct_b: np.ndarray, clusters: np.ndarray | None = None, n_boot: int = 2000, seed: int = 0
) -> PairedDifference:
    """Paired difference of two arms' test accuracy over seeds, and a bootstrap over the test images.

    Args:
        correct_a, correct_b: ``[seeds, images]`` booleans, whether each run got each test image right; row ``s``
            of both arms is the same seed (same training images and batches).
        clusters: the group of each image (images of one digit in two scenes are not independent); the bootstrap
            resamples whole groups. ``None``: every image is its own group.
        n_boot: bootstrap resamples; seed: their random generator's seed.

    Example:
        >>> a = np.array([[1, 1, 0, 1], [1, 0, 1, 1]], dtype=bool)
        >>> b = np.array([[1, 0, 0, 1], [1, 0, 0, 1]], dtype=bool)
        >>> d = paired_difference(a, b); d.mean, d.per_seed
        (0.25, [0.25, 0.25])
    """
    a, b = np.asarray(correct_a, dtype=float), np.asarray(correct_b, dtype=float)
    if a.shape != b.shape or a.ndim != 2 or a.shape[0] < 2:
        raise ValueError(
            f"need two [seeds, images] arrays of one shape with at least 2 seeds, got {a.shape} and {b.shape}."
        )
    diff = a - b  # [seeds, images]
    per_seed = diff.mean(axis=1)
    clusters = np.arange(a.shape[1]) if clusters is None else np.asarray(clusters)
    groups = np.unique(clusters)
    by_group = np.stack([diff[:, clusters == g].sum(axis=1) for g in groups], axis=1)  # [seeds, groups]
    sizes = np.array([(clusters == g).sum() for g in groups])
    pick = np.random.default_rng(seed).integers(len(groups), size=(n_boot, len(groups)))
    boot = by_group.mean(axis=0)[pick].sum(axis=1) / sizes[pick].sum(axis=1)  # mean over seeds, resampled images
    return PairedDifference(
        float(per_seed.mean()),
        float(per_seed.std(ddof=1) / np.sqrt(len(per_seed))),
        float(boot.std(ddof=1)),
        [round(float(x), 4) for x in per_seed],
    )
