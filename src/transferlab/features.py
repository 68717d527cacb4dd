"""Feature caching for a fixed feature extractor: run the frozen backbone once, then train only a head.

A frozen backbone in eval mode gives the same output for the same image every epoch, so computing it
every epoch is wasted work. `extract_features` runs it once; `train_head` trains a small head on the
cached vectors (with data augmentation this shortcut does not apply: each epoch sees new inputs).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, TensorDataset

from transferlab.training import History, fit

__all__ = ["extract_features", "train_head"]


@torch.no_grad()
def extract_features(backbone: nn.Module, loader: DataLoader, device: torch.device | str = "cpu") -> TensorDataset:
    """Run ``backbone`` once over ``loader`` in eval mode and return ``TensorDataset(features, labels)``.

    Features are flattened to ``(N, D)`` and kept on the CPU; the backbone's train/eval mode is restored.

    Example:
        >>> backbone = tiny_resnet(weights=TinyResNet_Weights.DEFAULT); backbone.fc = nn.Identity()  # doctest: +SKIP
        >>> train_feats = extract_features(backbone, train_loader)  # doctest: +SKIP
        >>> train_feats.tensors[0].shape  # doctest: +SKIP
        torch.Size([100, 128])
    """
    device = torch.device(device)
    was_training = backbone.training
    backbone.eval()  # BatchNorm uses its running statistics, dropout is off: the output is a fixed function
    features, labels = [], []
    for inputs, targets in loader:
        features.append(backbone(inputs.to(device)).flatten(start_dim=1).cpu())
        labels.append(torch.as_tensor(targets).cpu())
    backbone.train(was_training)
    if not features:
        raise ValueError("the loader yielded no samples; nothing to extract.")
    return TensorDataset(torch.cat(features), torch.cat(labels))


def train_head(
    head: nn.Module,
    train_features: TensorDataset,
    val_features: TensorDataset | None,
    optimizer: torch.optim.Optimizer,
    epochs: int,
    batch_size: int = 64,
    generator: torch.Generator | None = None,
    **fit_kwargs: Any,
) -> History:
    """Train ``head`` on cached features with `fit` (shuffled batches; keeps the best weights).

    Args:
        generator: the shuffling generator of the training loader (seed it for repeatable runs).
        fit_kwargs: passed on to `fit` (``scheduler``, ``progress``, ``device``, ...).

    Example:
        >>> head = nn.Linear(128, 10)  # doctest: +SKIP
        >>> opt = torch.optim.SGD(head.parameters(), lr=0.1)  # doctest: +SKIP
        >>> history = train_head(head, train_feats, test_feats, opt, epochs=20, progress=False)  # doctest: +SKIP
    """
    # Index the cached tensors with a whole batch of indices at once instead of collating sample by sample:
    # the same shuffled batches, about twice as fast, which matters once the backbone is out of the loop.
    batches = BatchSampler(RandomSampler(train_features, generator=generator), batch_size, drop_last=False)
    train_loader = DataLoader(train_features, sampler=batches, batch_size=None)
    val_loader = DataLoader(val_features, batch_size=1024) if val_features is not None else None
    return fit(head, train_loader, val_loader, optimizer, epochs, **fit_kwargs)
