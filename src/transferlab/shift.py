"""Domain shift on the target task, and AdaBN: BatchNorm statistics re-estimated on unlabelled target images.

The target task stays the same (10 handwritten digits in 32x32 scenes); only how the scenes look changes:

* ``"paper"``     the course's target domain: dark ink on light, tinted paper (no shift);
* ``"any"``       the source letters' palette: arbitrary ink and background colours;
* ``"mono"``      white ink on black, no colour;
* ``"inverted"``  paper scenes with every pixel inverted (light ink on dark);
* ``"blur+dim"``  paper scenes blurred (Gaussian, sigma 1) and dimmed to half their brightness.

Every shift changes P(X), the distribution of the images, and none changes P(Y|X): a digit is the same digit in
any colour. :func:`adapt_bn` is AdaBN (Li et al., 2016): reset every BatchNorm layer's running statistics and
re-estimate them on target images, without labels and without changing a single weight.

Example:
    >>> test = shifted_target("test", "inverted")
    >>> len(test), float(test.images.mean()) < 0.5  # paper scenes are bright; inverted ones are dark
    (1000, True)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import cast

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torchvision.transforms.functional import gaussian_blur

from transferlab.data import target_dataset
from transferlab.freeze import is_bn_frozen

__all__ = ["SHIFTS", "adapt_bn", "apply_shift", "batchnorm_layers", "shifted_target"]

SHIFTS: tuple[str, ...] = ("paper", "any", "mono", "inverted", "blur+dim")
_PALETTE = {"paper": "paper", "any": "any", "mono": "mono", "inverted": "paper", "blur+dim": "paper"}
BLUR_SIGMA, DIM = 1.0, 0.5


def _check_shift(shift: str) -> None:
    if shift not in SHIFTS:
        raise ValueError(f"unknown shift {shift!r}; use one of {SHIFTS}")


def apply_shift(images: Tensor, shift: str) -> Tensor:
    """The pixel-level part of ``shift`` on a batch [N, 3, H, W] in [0, 1] (palettes change the rendering instead).

    Example:
        >>> x = torch.rand(2, 3, 32, 32)
        >>> torch.equal(apply_shift(x, "inverted"), 1 - x), torch.equal(apply_shift(x, "mono"), x)
        (True, True)
    """
    _check_shift(shift)
    if shift == "inverted":
        return 1 - images
    if shift == "blur+dim":
        return DIM * gaussian_blur(images, kernel_size=[5, 5], sigma=[BLUR_SIGMA, BLUR_SIGMA])
    return images


def shifted_target(split: str, shift: str, k: int | None = None, seed: int = 0, transform: Callable | None = None):
    """The target dataset (:func:`transferlab.data.target_dataset`) rendered in the domain ``shift``.

    Same digit images, labels and splits as ``target_dataset(split, k, seed)``: the fixed test set stays the
    fixed test set, and a training set (``split="train"``) never contains a test digit.

    Example:
        >>> shifted_target("train", "any", k=2, seed=0).images.shape
        torch.Size([20, 3, 32, 32])
    """
    _check_shift(shift)
    dataset = target_dataset(split, k=k, seed=seed, transform=transform, palette=_PALETTE[shift])
    dataset.images = apply_shift(dataset.images, shift)
    return dataset


def batchnorm_layers(model: nn.Module) -> list[tuple[str, _BatchNorm]]:
    """``(name, layer)`` of every BatchNorm layer in ``model`` (1d, 2d, 3d, SyncBatchNorm)."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, _BatchNorm)]


def _check_adaptable(model: nn.Module) -> list[_BatchNorm]:
    layers = batchnorm_layers(model)
    if not layers:
        raise ValueError(
            f"{type(model).__name__} has no BatchNorm layers; AdaBN re-estimates BatchNorm "
            "statistics, so there is nothing to adapt (for other normalisations, fine-tune instead)"
        )
    untracked = [name for name, m in layers if not m.track_running_stats]
    if untracked:
        raise ValueError(
            f"BatchNorm layers {untracked} have track_running_stats=False (no running statistics to "
            "re-estimate: they always normalise with the batch's own statistics)"
        )
    frozen = [name for name, m in layers if is_bn_frozen(m)]
    if frozen:
        raise ValueError(
            f"BatchNorm layers {frozen[:3]}{'...' if len(frozen) > 3 else ''} are frozen by "
            "freeze_bn (kept in eval mode), so AdaBN could not update them; call "
            "transferlab.freeze.unfreeze_bn(model) first"
        )
    return [m for _, m in layers]


def _running_stats(m: _BatchNorm) -> tuple[Tensor, Tensor, Tensor]:
    """``running_mean``, ``running_var``, ``num_batches_tracked`` of a tracking BatchNorm (checked to exist)."""
    stats = (m.running_mean, m.running_var, m.num_batches_tracked)
    if any(t is None for t in stats):
        raise ValueError(f"{m} does not track running statistics")
    return cast(tuple[Tensor, Tensor, Tensor], stats)


@torch.no_grad()
def adapt_bn(model: nn.Module, loader: Iterable) -> nn.Module:
    """AdaBN: re-estimate every BatchNorm layer's running statistics on ``loader``'s images; weights unchanged.

    Each BatchNorm's statistics are reset and, with ``momentum=None``, accumulated as a plain average over the
    batches (use equal batch sizes for the exact average); only the BatchNorm layers run in train mode, every
    other module in eval mode (dropout off), without gradients. Labels are never read: ``loader`` yields
    ``(images, labels)`` pairs or images alone. The model is changed in place, its mode and momentum restored.

    Raises:
        ValueError: the model has no BatchNorm (or only frozen / untracked ones), or ``loader`` yields nothing.

    Example:
        >>> adapted = adapt_bn(copy.deepcopy(model), DataLoader(unlabelled_target, batch_size=256))  # doctest: +SKIP
    """
    layers = _check_adaptable(model)
    saved = [(m.momentum, *(t.clone() for t in _running_stats(m))) for m in layers]
    was_training = model.training
    device = next(iter(model.buffers())).device
    model.eval()
    for m in layers:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    seen = 0
    try:
        for batch in loader:
            images = batch[0] if isinstance(batch, (tuple, list)) else batch
            model(images.to(device))
            seen += len(images)
        if seen == 0:
            raise ValueError(
                "the loader yielded no images, so no statistics could be estimated (the model is "
                "unchanged); pass a non-empty loader of unlabelled target images"
            )
    except BaseException:  # nothing half-adapted: put the old statistics back
        for m, (_, *old) in zip(layers, saved, strict=True):
            for now, before in zip(_running_stats(m), old, strict=True):
                now.copy_(before)
        raise
    finally:
        for m, (momentum, *_) in zip(layers, saved, strict=True):
            m.momentum = momentum
        model.train(was_training)
    return model
