"""Probes and baselines for few labels: the nearest class mean on L2-normalised features, and a grey-value histogram.

With one to five labelled examples per class a classifier with a knob to tune (a logistic regression's ``C``) has
nothing left to tune it on, and a scaler fitted on six samples divides by noise. The nearest class mean (each class
is the average of its labelled vectors; a test vector gets the class of the closest average) has no knob at all;
on L2-normalised vectors it compares directions, not lengths (the "L2N + nearest centroid" of SimpleShot, Wang et al.
2019; the prototypes of Snell et al. 2017).

Example:
    >>> train = torch.tensor([[1.0, 0.0], [2.0, 0.1], [0.0, 3.0]])
    >>> nearest_class_mean(train, torch.tensor([0, 0, 1]), torch.tensor([[5.0, 1.0], [0.1, 1.0]])).tolist()
    [0, 1]
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["grey_histogram", "l2_normalise", "nearest_class_mean"]


def l2_normalise(features: Tensor) -> Tensor:
    """Each row divided by its Euclidean length (rows of zeros stay zero).

    Example:
        >>> l2_normalise(torch.tensor([[3.0, 4.0]])).tolist()
        [[0.6000000238418579, 0.800000011920929]]
    """
    if features.dim() != 2:
        raise ValueError(f"expected features of shape (N, D), got {tuple(features.shape)}; flatten them first")
    return features / features.norm(dim=1, keepdim=True).clamp_min(1e-12)


def nearest_class_mean(train_feats: Tensor, train_labels: Tensor, test_feats: Tensor, normalise: bool = True) -> Tensor:
    """Class of the nearest class mean (Euclidean) for every row of ``test_feats``; ``normalise``: L2 rows first.

    Example:
        >>> nearest_class_mean(torch.eye(2), torch.tensor([0, 1]), torch.tensor([[0.2, 0.9]])).tolist()
        [1]
    """
    if len(train_feats) != len(train_labels):
        raise ValueError(f"{len(train_feats)} training vectors but {len(train_labels)} labels; give one label per row")
    if normalise:
        train_feats, test_feats = l2_normalise(train_feats.float()), l2_normalise(test_feats.float())
    classes = train_labels.unique()  # sorted
    means = torch.stack([train_feats[train_labels == c].mean(dim=0) for c in classes])
    return classes[torch.cdist(test_feats.float(), means).argmin(dim=1)]


def grey_histogram(images: Tensor, bins: int = 32) -> Tensor:
    """The fraction of pixels in each of ``bins`` equal grey-value bins over [0, 1], per image: ``(N, bins)``.

    Reads the first channel of ``(N, C, H, W)`` images (grey copied to R, G, B) or ``(N, H, W)``. It ignores where a
    value sits, so moving a texture around does not change it: a shift-invariant baseline that learns nothing.

    Example:
        >>> grey_histogram(torch.tensor([[[0.0, 0.2], [0.9, 1.0]]]), bins=2).tolist()
        [[0.5, 0.5]]
    """
    grey = images[:, 0] if images.dim() == 4 else images
    if grey.dim() != 3:
        raise ValueError(f"expected images of shape (N, C, H, W) or (N, H, W), got {tuple(images.shape)}")
    index = (grey.flatten(1).clamp(0, 1) * bins).long().clamp_max(bins - 1)  # 1.0 falls in the last bin
    counts = torch.zeros(len(grey), bins).scatter_add_(1, index, torch.ones_like(index, dtype=torch.float32))
    return counts / index.shape[1]
