"""Feature caching for a fixed feature extractor: run the frozen backbone once, then train only a head.

A frozen backbone in eval mode gives the same output for the same image every epoch, so computing it
every epoch is wasted work. `extract_features` runs it once; `train_head` trains a small head on the
cached vectors (with data augmentation this shortcut does not apply: each epoch sees new inputs).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, cast

import torch
from torch import nn
from torch.utils.data import TensorDataset

from transferlab.env import to_device
from transferlab.training import Batch, History, fit

__all__ = ["ShuffledBatches", "extract_features", "pooled_features_at", "train_head"]


@torch.no_grad()
def extract_features(backbone: nn.Module, loader: Iterable[Batch], device: torch.device | str = "cpu") -> TensorDataset:
    """Run ``backbone`` once over ``loader`` (a DataLoader or any iterable of ``(inputs, labels)`` batches) in eval mode
    and return ``torch.utils.data.TensorDataset(features, labels)``.

    Features are flattened to ``(N, D)`` and kept on the CPU; the backbone's train/eval mode is restored. Image
    batches reach the backbone in channels-last order (`transferlab.env.to_device`: faster on a CPU).

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
        features.append(backbone(to_device(inputs, device)).flatten(start_dim=1).cpu())
        labels.append(torch.as_tensor(targets).cpu())
    backbone.train(was_training)
    if not features:
        raise ValueError("the loader yielded no samples; nothing to extract.")
    return TensorDataset(torch.cat(features), torch.cat(labels))


@torch.no_grad()
def pooled_features_at(
    model: nn.Module, loader: Iterable[Batch], layers: Sequence[str], device: torch.device | str = "cpu"
) -> dict[str, torch.Tensor]:
    """One pass of ``model`` over ``loader`` (eval mode), returning the output of every named submodule in ``layers``
    averaged over height and width: ``{name: (N, channels)}``, on the CPU. Several depths cost one forward pass.

    A forward hook (``register_forward_hook``) on each layer copies its output as the batch goes through; the hooks
    are removed and the model's train/eval mode restored afterwards. Names are those of ``model.named_modules()``.

    Raises:
        ValueError: a name is not a submodule of ``model`` (the message lists a few that are), or the loader is empty.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 8, 3))
        >>> feats = pooled_features_at(net, [(torch.rand(2, 3, 9, 9), torch.zeros(2))], ["0", "2"])
        >>> {name: tuple(f.shape) for name, f in feats.items()}
        {'0': (2, 4), '2': (2, 8)}
    """
    modules = dict(model.named_modules())
    missing = [name for name in layers if name not in modules]
    if missing:
        raise ValueError(
            f"no submodule called {missing} in {type(model).__name__}; names look like "
            f"{[n for n in modules if n][:6]} (see model.named_modules())"
        )
    outputs: dict[str, list[torch.Tensor]] = {name: [] for name in layers}

    def keep(name: str):
        def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            pooled = output.mean(dim=(2, 3)) if output.dim() == 4 else output.flatten(start_dim=1)
            outputs[name].append(pooled.cpu())

        return hook

    handles = [modules[name].register_forward_hook(keep(name)) for name in layers]
    was_training = model.training
    model.eval()
    try:
        for inputs, _ in loader:
            model(to_device(inputs, device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    if not all(outputs.values()):
        raise ValueError("the loader yielded no samples; nothing to extract.")
    return {name: torch.cat(chunks) for name, chunks in outputs.items()}


class ShuffledBatches:
    """Minibatches of in-memory tensors in a new random order every pass.

    What ``DataLoader(TensorDataset(...), batch_size, shuffle=True)`` yields, without its per-batch overhead: no
    sampler turning indices into a Python list, no collation; the tensors are shuffled once per pass and sliced.
    ``generator`` draws the order (``None``: torch's global generator, which `seed_everything` seeds).

    Example:
        >>> data = TensorDataset(torch.arange(5.0), torch.arange(5))
        >>> [len(x) for x, y in ShuffledBatches(data, 2)]
        [2, 2, 1]
    """

    def __init__(self, data: TensorDataset, batch_size: int, generator: torch.Generator | None = None) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
        self.tensors, self.batch_size, self.generator = data.tensors, batch_size, generator

    def __len__(self) -> int:
        return math.ceil(len(self.tensors[0]) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        order = torch.randperm(len(self.tensors[0]), generator=self.generator)
        shuffled = [t[order] for t in self.tensors]  # one gather per pass; the batches are slices of it
        yield from zip(*(t.split(self.batch_size) for t in shuffled), strict=True)


def _in_order(data: TensorDataset, batch_size: int = 1024) -> list[tuple[torch.Tensor, ...]]:
    return list(zip(*(t.split(batch_size) for t in data.tensors), strict=True))


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
        val_features: picks the best epoch; ``None`` picks it on ``train_features`` (evaluated in one pass of
            large batches, like a validation set).
        generator: draws the order of the training batches (seed it for repeatable runs).
        fit_kwargs: passed on to `fit` (``scheduler``, ``progress``, ``device``, ...).

    Example:
        >>> head = nn.Linear(128, 10)  # doctest: +SKIP
        >>> opt = torch.optim.SGD(head.parameters(), lr=0.1)  # doctest: +SKIP
        >>> history = train_head(head, train_feats, test_feats, opt, epochs=20, progress=False)  # doctest: +SKIP
    """
    # Once the backbone is out of the loop, a DataLoader's per-batch work (sampling indices into a list, collating)
    # and a second shuffled pass for the evaluation cost as much as the head itself: index whole batches instead.
    train_batches = cast("Iterable[Batch]", ShuffledBatches(train_features, batch_size, generator))  # (x, y) pairs
    val_batches = cast("list[Batch]", _in_order(val_features if val_features is not None else train_features))
    return fit(head, train_batches, val_batches, optimizer, epochs, **fit_kwargs)
