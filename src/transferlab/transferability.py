"""How transferable are features? A small-scale version of Yosinski et al. (2014) on the course's letters.

The 52 source letters are split into two halves A and B by a seeded random permutation (:func:`split_classes`).
Base networks ``baseA`` and ``baseB`` are trained from scratch on their half with the grid's recipe
(:class:`FitConfig`, :func:`fit`). For a depth ``n`` (a number of TinyResNet *stages*: ``stem``, ``layer1`` ..
``layer4``) :func:`transfer_model` builds the paper's four transfer networks for task B:

* ``BnB``  -- the first ``n`` stages copied from baseB and frozen, the rest re-initialised and trained on B;
* ``BnB+`` -- the same, but every layer is fine-tuned;
* ``AnB``  -- the first ``n`` stages copied from baseA and frozen;
* ``AnB+`` -- copied from baseA, everything fine-tuned.

"Frozen" means frozen completely: ``requires_grad=False`` *and* the BatchNorm running statistics of the copied
stages kept (:func:`transferlab.freeze.freeze_bn`), so a frozen stage computes exactly what it computed in the donor.

Notebook 09's grid (``benchmarks/transferability.py``) is built from the functions below:
fixed finite data per half (:func:`task_data`: 16x16 scenes, ``TRAIN_PER_CLASS`` / ``TEST_PER_CLASS`` per
letter), one recipe and budget for donors and every run (:class:`FitConfig`, :func:`fit`, which computes a frozen
prefix once instead of every step), a narrow network (``WIDTHS``), per-image correctness (:func:`correct`,
:func:`pack_correct`) and paired statistics over seeds and test images (:func:`paired_difference`). The streaming
recipe that builds the course's weights (a fresh batch of scenes every step) is :mod:`transferlab.pretrain`'s alone.

Example:
    >>> task_a, task_b = split_classes(seed=0)
    >>> len(task_a), len(task_b), set(task_a).isdisjoint(task_b)
    (26, 26, True)
    >>> stage_modules(2)
    ('conv1', 'bn1', 'layer1')
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from transferlab.data import SOURCE_CLASSES, render_scenes, source_glyphs
from transferlab.freeze import freeze, freeze_bn
from transferlab.models import NORM_MEAN, NORM_STD, TinyResNet
from transferlab.training import OneCycleRecipe, predict, train_one_cycle

__all__ = [
    "STAGES",
    "STAGE_MODULES",
    "WIDTHS",
    "FitConfig",
    "case_split",
    "check_split",
    "correct",
    "features",
    "fit",
    "head_from",
    "model_widths",
    "pack_correct",
    "paired_difference",
    "scratch_model",
    "split_classes",
    "stage_modules",
    "task_data",
    "transfer_model",
    "unpack_correct",
    "variant_name",
]

STAGES: tuple[str, ...] = ("stem", "layer1", "layer2", "layer3", "layer4")
# The grid's network and data (notebook 09, benchmarks/transferability.py): a TinyResNet 4x narrower than the
# course's (79 k parameters instead of 1.2 M) on 16x16 scenes (the 32x32 scenes average-pooled 2x2; the letters are
# 8x8 ink maps, so little is lost), fixed finite data: 100 training and 100 test scenes per letter.
WIDTHS: tuple[int, int, int, int] = (8, 16, 32, 64)
DIFFICULTY = 0.5  # nuisance level of every train and test scene of the grid
TRAIN_PER_CLASS = 100
TEST_PER_CLASS = 100
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


def case_split(classes: Sequence[str] = SOURCE_CLASSES) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """A deliberately dissimilar split: every letter stays with its other case, a..m (and A..M) in A, n..z in B.

    The random split puts about half of the letters in the other half from their other case (``o`` in A, ``O`` in
    B), so the halves share shapes; this one does not (notebook 09, exercise 2, measures how much less they share).

    Example:
        >>> a, b = case_split()
        >>> "".join(a)[:4], "".join(b)[:4]
        ('ABCD', 'NOPQ')
    """
    task_a = tuple(c for c in classes if c.lower() <= "m")
    return task_a, tuple(c for c in classes if c.lower() > "m")


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


def scratch_model(num_classes: int, seed: int, widths: tuple[int, int, int, int] = WIDTHS) -> TinyResNet:
    """A freshly initialised TinyResNet (``widths``: the grid's narrow one by default), its weights drawn from
    ``seed`` (the global RNG is left untouched); the same as ``torch.manual_seed(seed); TinyResNet(...)``.

    Example:
        >>> torch.equal(scratch_model(5, 0).fc.weight, scratch_model(5, 0).fc.weight)
        True
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return TinyResNet(num_classes=num_classes, widths=widths)


def model_widths(model: TinyResNet) -> tuple[int, int, int, int]:
    """The channel widths of ``model``'s layer1..layer4 (what ``TinyResNet(widths=...)`` was given)."""
    return tuple(getattr(model, f"layer{i}")[0].conv1.out_channels for i in range(1, 5))  # type: ignore[return-value]


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
    model = scratch_model(num_classes, seed, model_widths(donor))
    for name in names:
        try:
            model.get_submodule(name).load_state_dict(donor.get_submodule(name).state_dict())
        except RuntimeError as error:
            raise ValueError(
                f"stage module {name!r} of the donor does not fit a TinyResNet of its widths: {error}"
            ) from None
    if not fine_tune:
        freeze(model, list(names))
        freeze_bn(model, list(names))
    return model


def _normalise(images: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(NORM_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(NORM_STD, device=images.device).view(1, 3, 1, 1)
    return (images - mean) / std


# ------------------------------------------------------------------------------------ the grid's fixed finite data
@lru_cache(maxsize=128)
def _class_scenes(char: str, split: str, per_class: int) -> torch.Tensor:
    """``per_class`` scenes of one letter, [per_class, 3, 16, 16], normalised; seeded by the letter and split only,
    so every split of the classes into halves sees the same images of a letter."""
    glyphs, labels = source_glyphs(split, 60 if split == "train" else per_class)
    k = SOURCE_CLASSES.index(char)
    rows = torch.nonzero(labels == k).flatten()
    seed = 7919 * k + (0 if split == "train" else 1_000_003)
    pick = rows[torch.randint(len(rows), (per_class,), generator=torch.Generator().manual_seed(seed))]
    if split == "test":
        pick = rows  # each held-out rendering once
    images = F.avg_pool2d(render_scenes(glyphs[pick], DIFFICULTY, "any", seed), 2)
    return _normalise(images)


def task_data(
    classes: Sequence[str], split: str = "train", per_class: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The grid's fixed data of a half: ``(images [N, 3, 16, 16] normalised, labels [N])``, labels index ``classes``.

    ``"train"``: ``TRAIN_PER_CLASS`` scenes per letter drawn from the train renderings; ``"test"``: one scene for
    each of ``TEST_PER_CLASS`` held-out renderings per letter. Deterministic; cached in memory per letter.

    Example:
        >>> images, labels = task_data(("A", "b"), "test", per_class=3)
        >>> images.shape, labels.tolist()
        (torch.Size([6, 3, 16, 16]), [0, 0, 0, 1, 1, 1])
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    unknown = sorted(set(classes) - set(SOURCE_CLASSES))
    if unknown or not classes:
        raise ValueError(f"classes must be a non-empty subset of SOURCE_CLASSES, unknown: {unknown}")
    per = per_class or (TRAIN_PER_CLASS if split == "train" else TEST_PER_CLASS)
    images = torch.cat([_class_scenes(c, split, per) for c in classes])
    return images, torch.arange(len(classes)).repeat_interleave(per)


# ------------------------------------------------------------------------- training with cached frozen prefixes
def features(model: TinyResNet, x: torch.Tensor, n: int) -> torch.Tensor:
    """The output of ``model``'s first ``n`` stages (0: ``x`` itself), in whatever mode the model is in."""
    if n:
        stage_modules(n)
    x = model.maxpool(model.relu(model.bn1(model.conv1(x)))) if n >= 1 else x
    for i in range(1, n):
        x = getattr(model, f"layer{i}")(x)
    return x


def head_from(model: TinyResNet, h: torch.Tensor, n: int) -> torch.Tensor:
    """The rest of the forward pass: stages ``n + 1`` .. 5 and the head, from ``h = features(model, x, n)``."""
    x = features(model, h, 1) if n == 0 else h
    for i in range(max(n, 1), len(STAGES)):
        x = getattr(model, f"layer{i}")(x)
    return model.fc(torch.flatten(model.avgpool(x), 1))


@dataclass(frozen=True)
class FitConfig(OneCycleRecipe):
    """The grid's recipe: the course's OneCycle recipe (AdamW, OneCycle to ``lr``, label smoothing; the fields of
    :class:`transferlab.training.OneCycleRecipe`) for ``epochs`` passes over fixed data, in an order seeded by
    ``seed``."""

    epochs: int = 20
    seed: int = 0  # the order of the batches (the weights' seed is the model's)


class _Tail(nn.Module):
    """The stages of ``model`` after the first ``frozen`` ones: what trains on a cached frozen prefix."""

    def __init__(self, model: TinyResNet, frozen: int) -> None:
        super().__init__()
        self.model, self.frozen = model, frozen

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return head_from(self.model, h, self.frozen)


def fit(model: TinyResNet, images: torch.Tensor, labels: torch.Tensor, cfg: FitConfig, frozen: int = 0) -> TinyResNet:
    """Train ``model`` on fixed ``images``/``labels`` with ``cfg``; returns it in eval mode.

    ``frozen``: the number of leading stages that :func:`transfer_model` froze (0 for baseB and the ``+``
    variants). Their output never changes (no gradient, BatchNorm statistics kept), so it is computed once for the
    whole training set and only the later stages run each step: the same training, several times cheaper. The
    steps are :func:`transferlab.training.train_one_cycle`'s, on a reshuffled pass over the data each epoch.

    Example:
        >>> x, y = task_data(("A", "B"), per_class=4)
        >>> _ = fit(scratch_model(2, 0), x, y, FitConfig(epochs=1))
    """
    if frozen:
        trainable = [
            n for n, p in model.named_parameters() if p.requires_grad and n.split(".")[0] in stage_modules(frozen)
        ]
        if trainable:
            raise ValueError(f"frozen={frozen} but these parameters of the first stages train: {trainable[:3]}")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters (everything is frozen); unfreeze the head at least")
    if len(images) != len(labels) or len(labels) == 0:
        raise ValueError(f"need as many labels as images, got {len(images)} images and {len(labels)} labels")
    model.eval()
    with torch.no_grad():
        cached = torch.cat([features(model, images[i : i + 1024], frozen) for i in range(0, len(images), 1024)])
    steps_per_epoch = -(-len(labels) // cfg.batch_size)
    order = torch.Generator().manual_seed(cfg.seed)
    perm = torch.empty(0, dtype=torch.long)

    def batches(step: int) -> tuple[torch.Tensor, torch.Tensor]:  # epoch after epoch, each a new permutation
        nonlocal perm
        i = step % steps_per_epoch
        if i == 0:
            perm = torch.randperm(len(labels), generator=order)
        idx = perm[i * cfg.batch_size : (i + 1) * cfg.batch_size]
        return cached[idx], labels[idx]

    train_one_cycle(
        _Tail(model, frozen), batches, cfg.epochs * steps_per_epoch, cfg, params=params, device=images.device
    )
    return model.eval()


def correct(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Per-image correctness (bool [N]) of ``model`` in eval mode (:func:`transferlab.training.predict`); its mean
    is the accuracy."""
    preds, _ = predict(
        model, zip(images.split(batch_size), labels.split(batch_size), strict=True), device=images.device
    )
    return preds.to(labels.device) == labels


def pack_correct(hits: torch.Tensor) -> str:
    """Per-image correctness as a short string (bits packed, base64) for a results file."""
    bits = np.packbits(hits.cpu().numpy().astype(np.uint8))
    return base64.b64encode(bits.tobytes()).decode("ascii")


def unpack_correct(text: str, n: int) -> np.ndarray:
    """The inverse of :func:`pack_correct`: a bool array of length ``n``."""
    return np.unpackbits(np.frombuffer(base64.b64decode(text), dtype=np.uint8))[:n].astype(bool)


def paired_difference(a: np.ndarray, b: np.ndarray, n_boot: int = 1000, seed: int = 0) -> dict[str, float]:
    """Accuracy difference ``a - b`` of two cells that share seeds and test images, with its noise.

    Args:
        a, b: per-image correctness, [seeds, images], row ``i`` of both from the same seed.

    Returns:
        ``diff`` (mean over seeds), ``se_seeds`` (standard error of the paired per-seed differences, ddof=1),
        ``se_images`` (bootstrap over test images, the same resample for both cells), ``se`` (both combined,
        root of the sum of squares) and ``z = diff / se``.

    Example:
        >>> a = np.array([[1, 1, 0, 1], [1, 0, 1, 1]], bool); b = np.array([[1, 0, 0, 1], [0, 0, 1, 1]], bool)
        >>> paired_difference(a, b)["diff"]
        0.25
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 2 or a.shape[0] < 2:
        raise ValueError(f"need two [seeds >= 2, images] arrays of the same shape, got {a.shape} and {b.shape}")
    per_seed = a.mean(1) - b.mean(1)
    se_seeds = float(per_seed.std(ddof=1) / np.sqrt(len(per_seed)))
    per_image = (a - b).mean(0)
    rng = np.random.default_rng(seed)
    boots = per_image[rng.integers(len(per_image), size=(n_boot, len(per_image)))].mean(1)
    se_images = float(boots.std(ddof=1))
    se = float(np.hypot(se_seeds, se_images))
    diff = float(per_seed.mean())
    return {"diff": diff, "se_seeds": se_seeds, "se_images": se_images, "se": se, "z": diff / se if se else 0.0}
