"""Figures for training runs: curves, learning rates, a prediction grid and a confusion matrix.

Every function returns the matplotlib ``Figure`` (show it with ``plt.show()`` in a notebook).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from transferlab.training import History

__all__ = ["plot_confusion_matrix", "plot_history", "plot_lrs", "show_predictions"]


def plot_history(history: History, title: str | None = None) -> Figure:
    """Loss and accuracy per epoch, training vs validation, side by side; the best epoch is marked.

    Example:
        >>> fig = plot_history(history); plt.show()  # doctest: +SKIP
    """
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.2))
    for ax, metric in ((ax_loss, "loss"), (ax_acc, "acc")):
        ax.plot(history.epoch, getattr(history, f"train_{metric}"), marker=".", label="train")
        ax.plot(history.epoch, getattr(history, f"val_{metric}"), marker=".", label="validation")
        if history.best_epoch >= 0:
            ax.axvline(history.best_epoch, color="grey", linestyle=":", label="best epoch")
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss" if metric == "loss" else "accuracy")
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_lrs(history: History, names: Sequence[str] | None = None, log: bool = True) -> Figure:
    """Learning rate of each optimizer parameter group per epoch (a group added later starts later).

    Example:
        >>> fig = plot_lrs(history, names=["fc", "layer4"]); plt.show()  # doctest: +SKIP
    """
    n_groups = max(len(row) for row in history.lr)
    names = list(names) if names is not None else [f"group {i}" for i in range(n_groups)]
    if len(names) != n_groups:
        raise ValueError(f"{len(names)} names for {n_groups} parameter groups; give one name per group.")
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for i, name in enumerate(names):
        lrs = [row[i] if i < len(row) else math.nan for row in history.lr]
        ax.step(history.epoch, lrs, where="post", marker=".", label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("learning rate")
    if log:
        ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    return fig


def show_predictions(
    images: torch.Tensor,
    targets: Sequence[int] | torch.Tensor,
    preds: Sequence[int] | torch.Tensor,
    classes: Sequence[str],
    *,
    ncols: int = 8,
) -> Figure:
    """A grid of images titled ``predicted / true``; wrong predictions get a red title.

    ``(targets, preds)`` in that order, as in :func:`plot_confusion_matrix` and scikit-learn's metrics.

    Args:
        images: ``(N, C, H, W)`` floats in [0, 1] (un-normalised), C = 1 or 3.

    Example:
        >>> fig = show_predictions(images, labels, preds, TARGET_CLASSES); plt.show()  # doctest: +SKIP
    """
    if not (len(images) == len(preds) == len(targets)):
        raise ValueError(
            f"got {len(images)} images, {len(targets)} targets and {len(preds)} predictions; "
            "pass the same number of each."
        )
    nrows = math.ceil(len(images) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.3 * ncols, 1.5 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, pred, true in zip(axes.flat, images, preds, targets, strict=False):
        pixels = image.detach().cpu().clamp(0, 1).permute(1, 2, 0).numpy()
        grey = pixels.shape[-1] == 1
        ax.imshow(pixels.squeeze(-1) if grey else pixels, cmap="gray" if grey else None)
        wrong = int(pred) != int(true)
        ax.set_title(f"{classes[int(pred)]}\n({classes[int(true)]})", fontsize=8, color="red" if wrong else "black")
    fig.suptitle("predicted (true); red = wrong", fontsize=9)
    fig.tight_layout()
    return fig


def plot_confusion_matrix(
    targets: Sequence[int] | torch.Tensor,
    preds: Sequence[int] | torch.Tensor,
    classes: Sequence[str],
    normalize: str | None = None,
) -> Figure:
    """Confusion matrix (rows: true class, columns: predicted) drawn by scikit-learn.

    Args:
        normalize: ``None`` (counts), ``"true"`` (each row sums to 1), ``"pred"`` or ``"all"``.

    Example:
        >>> fig = plot_confusion_matrix(labels, preds, TARGET_CLASSES); plt.show()  # doctest: +SKIP
    """
    from sklearn.metrics import ConfusionMatrixDisplay  # here, not at the top: scikit-learn takes ~1 s to import

    fig, ax = plt.subplots(figsize=(0.5 * len(classes) + 2.5, 0.5 * len(classes) + 2))
    ConfusionMatrixDisplay.from_predictions(
        np.asarray(targets),
        np.asarray(preds),
        labels=list(range(len(classes))),
        display_labels=list(classes),
        normalize=normalize,
        ax=ax,
        colorbar=False,
        xticks_rotation=45,  # pyright: ignore[reportArgumentType]  (sklearn documents a float; its annotation says str)
        values_format=".2f" if normalize else "d",
    )
    fig.tight_layout()
    return fig
