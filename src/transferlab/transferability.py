"""How transferable are features? A small-scale version of Yosinski et al. (2014) on the course's letters.

The 52 source letters are split into two halves A and B by a seeded random permutation (:func:`split_classes`).
Base networks ``baseA`` and ``baseB`` are trained from scratch on their half with the course's pretraining recipe
(:func:`train_on_task`). For a depth ``n`` (a number of TinyResNet *stages*: ``stem``, ``layer1`` .. ``layer4``)
:func:`transfer_model` builds the paper's four transfer networks for task B:

* ``BnB``  -- the first ``n`` stages copied from baseB and frozen, the rest re-initialised and trained on B;
* ``BnB+`` -- the same, but every layer is fine-tuned;
* ``AnB``  -- the first ``n`` stages copied from baseA and frozen;
* ``AnB+`` -- copied from baseA, everything fine-tuned.

"Frozen" means frozen completely: ``requires_grad=False`` *and* the BatchNorm running statistics of the copied
stages kept (:func:`transferlab.freeze.freeze_bn`), so a frozen stage computes exactly what it computed in the donor.

Example:
    >>> task_a, task_b = split_classes(seed=0)
    >>> len(task_a), len(task_b), set(task_a).isdisjoint(task_b)
    (26, 26, True)
    >>> stage_modules(2)
    ('conv1', 'bn1', 'layer1')
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from transferlab.data import SOURCE_CLASSES, source_batch, source_dataset, source_glyphs
from transferlab.freeze import freeze, freeze_bn
from transferlab.models import NORM_MEAN, NORM_STD, TinyResNet
from transferlab.pretrain import PretrainConfig
from transferlab.training import train_steps

__all__ = [
    "STAGES",
    "STAGE_MODULES",
    "split_classes",
    "check_split",
    "stage_modules",
    "variant_name",
    "scratch_model",
    "transfer_model",
    "task_stream",
    "train_on_task",
    "task_accuracy",
]

STAGES: tuple[str, ...] = ("stem", "layer1", "layer2", "layer3", "layer4")
# TinyResNet's modules that make up each stage (the stem's ReLU and max-pool have no parameters).
STAGE_MODULES: dict[str, tuple[str, ...]] = {
    "stem": ("conv1", "bn1"),
    "layer1": ("layer1",),
    "layer2": ("layer2",),
    "layer3": ("layer3",),
    "layer4": ("layer4",),
}


def split_classes(classes: Sequence[str] = SOURCE_CLASSES, seed: int = 0) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Split ``classes`` into two halves A and B by a seeded random permutation (as the paper split ImageNet).

    Each half keeps the original order of ``classes`` (labels are indices into the half).

    Example:
        >>> a, b = split_classes("ABCD", seed=1)
        >>> sorted(a + b)
        ['A', 'B', 'C', 'D']
    """
    classes = tuple(classes)
    if len(classes) < 2 or len(set(classes)) != len(classes):
        raise ValueError(f"need at least two distinct classes to split, got {classes!r}")
    order = np.random.default_rng(seed).permutation(len(classes))
    half_a, half_b = set(order[: len(classes) // 2].tolist()), set(order[len(classes) // 2 :].tolist())
    task_a = tuple(c for i, c in enumerate(classes) if i in half_a)
    return task_a, tuple(c for i, c in enumerate(classes) if i in half_b)


def check_split(task_a: Sequence[str], task_b: Sequence[str], classes: Sequence[str] = SOURCE_CLASSES) -> None:
    """Raise ``ValueError`` unless ``task_a`` and ``task_b`` are non-empty, disjoint sets of known classes.

    Example:
        >>> check_split(("A", "B"), ("C", "D"))  # fine: returns None
    """
    for name, task in (("task A", task_a), ("task B", task_b)):
        if len(task) == 0:
            raise ValueError(f"{name} is empty; split the classes with split_classes() first")
        if len(set(task)) != len(task):
            raise ValueError(f"{name} lists a class twice: {sorted(c for c in set(task) if list(task).count(c) > 1)}")
        unknown = sorted(set(task) - set(classes))
        if unknown:
            raise ValueError(f"{name} has classes {unknown} that are not among the {len(classes)} source classes")
    shared = sorted(set(task_a) & set(task_b))
    if shared:
        raise ValueError(f"tasks A and B share the classes {shared}; the halves must be disjoint (split_classes)")


def stage_modules(n: int) -> tuple[str, ...]:
    """Names of the TinyResNet modules in the first ``n`` stages, ``1 <= n <= len(STAGES)``.

    Example:
        >>> stage_modules(1)
        ('conv1', 'bn1')
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= len(STAGES):
        raise ValueError(
            f"n must be an integer number of stages from 1 to {len(STAGES)} ({', '.join(STAGES)}), "
            f"got {n!r}; n = 0 (nothing transferred) is the base network itself"
        )
    return tuple(name for stage in STAGES[:n] for name in STAGE_MODULES[stage])


def variant_name(donor: str, n: int, fine_tune: bool, target: str = "B") -> str:
    """The paper's name of a transfer network, e.g. ``variant_name("A", 3, True) == "A3B+"``."""
    stage_modules(n)
    return f"{donor}{n}{target}{'+' if fine_tune else ''}"


def scratch_model(num_classes: int, seed: int) -> TinyResNet:
    """A freshly initialised TinyResNet, its weights drawn from ``seed`` (the global RNG is left untouched).

    Example:
        >>> torch.equal(scratch_model(5, 0).fc.weight, scratch_model(5, 0).fc.weight)
        True
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return TinyResNet(num_classes=num_classes)


def transfer_model(donor: nn.Module, n: int, num_classes: int, fine_tune: bool, seed: int) -> TinyResNet:
    """Copy the first ``n`` stages of ``donor`` into a fresh TinyResNet; freeze them unless ``fine_tune``.

    Args:
        donor: a trained TinyResNet (baseA for AnB, baseB for BnB); it is not modified.
        n: number of stages to copy, 1 (stem) .. 5 (stem + layer1..layer4: only the head is new).
        num_classes: classes of the target task (the head ``fc`` is always new).
        fine_tune: ``False`` for BnB/AnB (copied stages frozen, BatchNorm statistics included), ``True`` for
            BnB+/AnB+ (every parameter trains).
        seed: draws the initial weights of the stages that are *not* copied.

    Example:
        >>> model = transfer_model(scratch_model(26, 0), 2, num_classes=26, fine_tune=False, seed=1)
        >>> model.conv1.weight.requires_grad, model.layer2[0].conv1.weight.requires_grad
        (False, True)
    """
    names = stage_modules(n)
    missing = [name for name in names if not hasattr(donor, name)]
    if missing or not isinstance(donor, TinyResNet):
        raise TypeError(
            f"donor must be a TinyResNet (a base network), got {type(donor).__name__}"
            + (f" without {missing}" if missing else "")
        )
    model = scratch_model(num_classes, seed)
    for name in names:
        try:
            model.get_submodule(name).load_state_dict(donor.get_submodule(name).state_dict())
        except RuntimeError as error:
            raise ValueError(
                f"stage module {name!r} of the donor does not fit a default TinyResNet (different widths?): {error}"
            ) from None
    if not fine_tune:
        freeze(model, list(names))
        freeze_bn(model, list(names))
    return model


def _normalise(images: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(NORM_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(NORM_STD, device=images.device).view(1, 3, 1, 1)
    return (images - mean) / std


def task_stream(classes: Sequence[str], cfg: PretrainConfig) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The batches :func:`train_on_task` draws for ``cfg``, rendered once (to share them between runs).

    Step ``i`` is a batch of ``cfg.batch_size`` fresh scenes at difficulty ``min(1, i / (cfg.ramp * cfg.steps))``
    (the curriculum), seeded by ``cfg.seed`` and ``i`` exactly as :func:`transferlab.pretrain.pretrain` draws them.

    Example:
        >>> images, labels = task_stream(("A", "B"), PretrainConfig(steps=3, batch_size=4))[0]
        >>> images.shape, labels.shape
        (torch.Size([4, 3, 32, 32]), torch.Size([4]))
    """
    if cfg.steps < 1:
        raise ValueError(f"cfg.steps must be at least 1, got {cfg.steps}")
    glyphs = source_glyphs("train", cfg.glyphs_per_class)
    return [
        source_batch(
            cfg.batch_size, min(1.0, step / max(1, cfg.ramp * cfg.steps)), 1_000_003 * cfg.seed + step, classes, glyphs
        )
        for step in range(cfg.steps)
    ]


def train_on_task(
    model: nn.Module,
    classes: Sequence[str],
    cfg: PretrainConfig,
    device: str | torch.device = "cpu",
    stream: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> nn.Module:
    """Train ``model`` on the letters ``classes`` with the course's pretraining recipe; returns it in eval mode.

    The recipe of :func:`transferlab.pretrain.pretrain` (a fresh batch of scenes every step from ``cfg.seed``,
    difficulty ramped 0 -> 1 over ``cfg.ramp`` of the steps, AdamW, OneCycle, label smoothing) applied to a given
    model through :func:`transferlab.training.train_steps`. Only parameters with ``requires_grad`` are optimised,
    so frozen stages stay as they are. On a :func:`scratch_model` with the same seed it gives exactly
    ``pretrain(cfg, classes)``.

    Args:
        stream: the batches, if already rendered by :func:`task_stream` (same result, faster when runs share it).

    Example:
        >>> cfg = PretrainConfig(steps=2, batch_size=8)
        >>> _ = train_on_task(scratch_model(2, 0), ("A", "B"), cfg)
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters (everything is frozen); unfreeze the head at least")
    stream = task_stream(classes, cfg) if stream is None else stream
    if len(stream) != cfg.steps:
        raise ValueError(
            f"the stream has {len(stream)} batches but cfg.steps is {cfg.steps}; render it with "
            "task_stream(classes, cfg) for the same cfg"
        )
    model.to(device)
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=cfg.steps)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    train_steps(
        model,
        stream.__getitem__,
        cfg.steps,
        optimizer,
        transform=_normalise,
        scheduler=schedule,
        loss_fn=loss_fn,
        device=device,
    )
    return model.eval()


@torch.no_grad()
def task_accuracy(
    model: nn.Module, classes: Sequence[str], device: str | torch.device = "cpu", batch_size: int = 520
) -> float:
    """Top-1 accuracy of ``model`` (eval mode) on the fixed source test scenes of ``classes`` (30 per letter).

    Example:
        >>> 0.0 <= task_accuracy(scratch_model(2, 0), ("A", "B")) <= 1.0
        True
    """
    test = source_dataset("test", classes=classes)
    was_training = model.training
    model.eval()
    correct = 0
    for start in range(0, len(test), batch_size):
        images = _normalise(test.images[start : start + batch_size].to(device))
        correct += int((model(images).argmax(1).cpu() == test.labels[start : start + batch_size]).sum())
    model.train(was_training)
    return correct / len(test)
