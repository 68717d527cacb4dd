"""Training loops: one epoch, evaluation, predictions, a `fit` that keeps the best weights, and `train_steps`.

The loops are the plain PyTorch ones a learner writes by hand in notebook 05, wrapped so later
notebooks can call them in one line. `train_steps` trains for a fixed number of optimisation steps instead
of epochs (the budget used by pretraining and by the benchmarks, where every method gets the same steps).

Two recipes are built on `train_steps`, each with its settings in one place:

* `train_recipe`: the comparison recipe of notebook 05 and ``benchmarks/transfer_gain.py`` (AdamW, cosine to 0);
* `train_one_cycle` with a `OneCycleRecipe`: AdamW, a OneCycle schedule and label smoothing, the recipe that
  built the shipped TinyResNet (:mod:`transferlab.pretrain`) and trains every network of notebook 09's grid
  (:func:`transferlab.transferability.fit`).

`evaluate` (loss and accuracy) and `predict` (the predicted classes) are the evaluation loops; every accuracy
in the package is computed by one of them (some benchmarks still score with their own one-line argmax).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from transferlab.env import to_device
from transferlab.progress import tqdm

__all__ = [
    "BatchSource",
    "History",
    "OneCycleRecipe",
    "evaluate",
    "fit",
    "predict",
    "train_one_cycle",
    "train_one_epoch",
    "train_recipe",
    "train_steps",
]

Batch = tuple[torch.Tensor, torch.Tensor]
# A batch source for `train_steps`: called with the step number, returns that step's (inputs, targets).
BatchSource = Callable[[int], Batch]


@dataclass
class History:
    """Per-epoch record of a `fit` run.

    ``lr[e]`` lists the learning rate of every optimizer parameter group used during epoch ``e``
    (groups added later, e.g. by gradual unfreezing, make later rows longer).
    ``best_state`` is a deep copy of the model's ``state_dict`` at ``best_epoch``.
    """

    epoch: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_acc: list[float] = field(default_factory=list)
    lr: list[list[float]] = field(default_factory=list)
    best_epoch: int = -1
    best_val_acc: float = float("-inf")
    best_state: dict[str, torch.Tensor] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.epoch)


def _step_batch(
    model: nn.Module, batch: Batch, loss_fn: nn.Module, device: torch.device, channels_last: bool = False
) -> tuple[torch.Tensor, int, int]:
    inputs = to_device(batch[0], device) if channels_last else batch[0].to(device)
    targets = batch[1].to(device)
    logits = model(inputs)
    loss = loss_fn(logits, targets)
    correct = int((logits.argmax(dim=1) == targets).sum())
    return loss, correct, targets.numel()


def train_one_epoch(
    model: nn.Module,
    loader: Iterable[Batch],
    optimizer: torch.optim.Optimizer,
    loss_fn: nn.Module | None = None,
    device: torch.device | str = "cpu",
) -> tuple[float, float]:
    """Train ``model`` for one pass over ``loader`` (train mode, one optimizer step per batch).

    Returns:
        ``(mean loss, accuracy)`` over all samples seen, the loss weighted by batch size.

    Example:
        >>> loss, acc = train_one_epoch(model, train_loader, optimizer)  # doctest: +SKIP
    """
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    device = torch.device(device)
    model.train()
    total_loss, correct, seen = 0.0, 0, 0
    for batch in loader:
        optimizer.zero_grad(set_to_none=True)
        loss, batch_correct, n = _step_batch(model, batch, loss_fn, device)
        loss.backward()
        optimizer.step()
        total_loss += loss.item() * n
        correct += batch_correct
        seen += n
    if seen == 0:
        raise ValueError("the training loader yielded no samples; check the dataset and batch_size/drop_last.")
    return total_loss / seen, correct / seen


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable[Batch],
    loss_fn: nn.Module | None = None,
    device: torch.device | str = "cpu",
) -> tuple[float, float]:
    """Mean loss and accuracy of ``model`` on ``loader``, in eval mode and without gradients.

    The model's previous train/eval mode is restored afterwards. Image batches reach the model in channels-last
    order (`transferlab.env.to_device`: the same values, evaluated faster on a CPU).

    Example:
        >>> val_loss, val_acc = evaluate(model, test_loader)  # doctest: +SKIP
    """
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    device = torch.device(device)
    was_training = model.training
    model.eval()
    total_loss, correct, seen = 0.0, 0, 0
    for batch in loader:
        loss, batch_correct, n = _step_batch(model, batch, loss_fn, device, channels_last=True)
        total_loss += loss.item() * n
        correct += batch_correct
        seen += n
    model.train(was_training)
    if seen == 0:
        raise ValueError("the evaluation loader yielded no samples; check the dataset.")
    return total_loss / seen, correct / seen


@torch.no_grad()
def predict(
    model: nn.Module, loader: Iterable[Batch], device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted class and true label of every sample in ``loader`` (eval mode, no gradients; image batches in
    channels-last order, as in `evaluate`).

    Returns:
        ``(predictions, targets)``, two 1-D int64 tensors on the CPU.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    preds, targets = [], []
    for inputs, labels in loader:
        preds.append(model(to_device(inputs, device)).argmax(dim=1).cpu())
        targets.append(torch.as_tensor(labels).cpu())
    model.train(was_training)
    if not preds:
        raise ValueError("the prediction loader yielded no samples; check the dataset.")
    return torch.cat(preds), torch.cat(targets)


def _record(
    history: History, epoch: int, train: tuple[float, float], val: tuple[float, float], lrs: list[float]
) -> None:
    history.epoch.append(epoch)
    history.train_loss.append(train[0])
    history.train_acc.append(train[1])
    history.val_loss.append(val[0])
    history.val_acc.append(val[1])
    history.lr.append(lrs)


def fit(
    model: nn.Module,
    train_loader: Iterable[Batch],
    val_loader: Iterable[Batch] | None,
    optimizer: torch.optim.Optimizer,
    epochs: int,
    scheduler: Any | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
    loss_fn: nn.Module | None = None,
    restore_best: bool = True,
    start_epoch: int = 0,
    on_epoch_start: Callable[[int], None] | None = None,
) -> History:
    """Train for ``epochs`` epochs, evaluating after each, and keep the weights of the best epoch.

    Args:
        val_loader: selects the best epoch by validation accuracy (the first best wins ties);
            ``None`` evaluates on ``train_loader`` instead.
        scheduler: an epoch-level LR scheduler (e.g. ``StepLR``); ``scheduler.step()`` runs after each epoch.
        progress: show a tqdm bar over epochs (``tqdm.auto``: a widget in Jupyter, text in a terminal).
        restore_best: load the best weights back into ``model`` at the end (they are also in
            ``history.best_state``).
        start_epoch: number of the first epoch, to continue a resumed run.
        on_epoch_start: called with the epoch number before each epoch (e.g. a `GradualUnfreezer`).

    Returns:
        the `History`: losses, accuracies and per-group learning rates of every epoch.

    Example:
        >>> history = fit(model, train_loader, test_loader, optimizer, epochs=5, progress=False)  # doctest: +SKIP
    """
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}.")
    history = History()
    bar = tqdm(range(start_epoch, start_epoch + epochs), desc="epochs", disable=not progress, leave=True)
    for epoch in bar:
        if on_epoch_start is not None:
            on_epoch_start(epoch)
        lrs = [group["lr"] for group in optimizer.param_groups]
        train = train_one_epoch(model, train_loader, optimizer, loss_fn, device)
        val = evaluate(model, val_loader if val_loader is not None else train_loader, loss_fn, device)
        if scheduler is not None:
            scheduler.step()
        _record(history, epoch, train, val, lrs)
        if val[1] > history.best_val_acc:
            history.best_epoch, history.best_val_acc = epoch, val[1]
            history.best_state = copy.deepcopy(model.state_dict())
        bar.set_postfix(train_loss=f"{train[0]:.3f}", val_acc=f"{val[1]:.3f}", best=f"{history.best_val_acc:.3f}")
    if restore_best and history.best_state is not None:
        model.load_state_dict(history.best_state)
    return history


def _draw(data: Batch, batch_size: int, generator: torch.Generator | None) -> BatchSource:
    """Batches of ``batch_size`` samples drawn with replacement from in-memory ``(inputs, targets)``."""
    inputs, targets = data
    if len(inputs) != len(targets) or len(targets) == 0:
        raise ValueError(
            f"train_steps needs as many inputs as targets, at least one: got {len(inputs)} inputs "
            f"and {len(targets)} targets."
        )

    def batch(step: int) -> Batch:
        pick = torch.randint(len(targets), (batch_size,), generator=generator)
        return inputs[pick], targets[pick]

    return batch


def train_steps(
    model: nn.Module,
    data: Batch | BatchSource,
    steps: int,
    optimizer: torch.optim.Optimizer,
    *,
    batch_size: int = 64,
    generator: torch.Generator | None = None,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    scheduler: Any | None = None,
    loss_fn: nn.Module | None = None,
    device: torch.device | str = "cpu",
    on_step: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Train ``model`` (train mode) for exactly ``steps`` optimizer steps, one minibatch each.

    Args:
        data: ``(inputs, targets)`` tensors, from which every step draws ``batch_size`` samples with replacement
            using ``generator`` (seed it for repeatable runs); or a `BatchSource`, a function ``step -> (inputs,
            targets)`` (e.g. freshly generated data every step).
        transform: applied to each batch of inputs before the model (e.g. normalisation or augmentation).
        scheduler: a per-step LR scheduler (``OneCycleLR``, ``CosineAnnealingLR(optimizer, steps)``);
            ``scheduler.step()`` runs after every optimizer step.
        on_step: called as ``on_step(step, loss)`` after each step (e.g. to log); asking for the loss waits for it.

    Returns:
        the training loss of every step (detached, on the CPU).

    Example:
        >>> g = torch.Generator().manual_seed(0)  # doctest: +SKIP
        >>> losses = train_steps(model, (images, labels), 150, optimizer, batch_size=64, generator=g)  # doctest: +SKIP
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}.")
    batches = data if callable(data) else _draw(data, batch_size, generator)
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    device = torch.device(device)
    model.train()
    losses = []
    for step in range(steps):
        inputs, targets = batches(step)
        inputs = inputs if transform is None else transform(inputs)
        loss = loss_fn(model(inputs.to(device)), targets.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        losses.append(loss.detach())
        if on_step is not None:
            on_step(step, loss.item())
    return torch.stack(losses).cpu().tolist()


def train_recipe(
    model: nn.Module,
    params: Iterable[nn.Parameter],
    data: Batch,
    steps: int,
    lr: float,
    *,
    seed: int,
    batch_size: int = 32,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> list[float]:
    """The course's comparison recipe (notebook 05 and ``benchmarks/transfer_gain.py``), one call of `train_steps`.

    ``steps`` AdamW steps on ``params`` (PyTorch's default weight decay, 0.01) at learning rate ``lr`` with a
    cosine schedule down to 0, each on ``batch_size`` samples of ``data`` drawn with replacement by a generator
    seeded with ``seed`` (or by ``generator``, e.g. one that a random ``transform`` shares). The weights after the
    last step are the result (no best-epoch selection).

    Returns:
        the training loss of every step.

    Example:
        >>> model = nn.Linear(4, 3)
        >>> x, y = torch.randn(20, 4), torch.arange(20) % 3
        >>> len(train_recipe(model, model.parameters(), (x, y), 5, 1e-2, seed=0, batch_size=8))
        5
    """
    optimizer = torch.optim.AdamW(params, lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    return train_steps(
        model,
        data,
        steps,
        optimizer,
        batch_size=batch_size,
        generator=generator or torch.Generator().manual_seed(seed),
        transform=transform,
        scheduler=schedule,
        device=device,
    )


@dataclass(frozen=True)
class OneCycleRecipe:
    """AdamW with a OneCycle schedule up to ``lr`` and label smoothing: the settings of `train_one_cycle`.

    The defaults built the shipped TinyResNet (:class:`transferlab.pretrain.PretrainConfig` repeats them as
    command-line flags) and train every network of notebook 09's grid (:class:`transferlab.transferability.FitConfig`
    extends this class with the epochs and the batch order's seed).
    """

    lr: float = 4e-3  # the OneCycle peak
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    batch_size: int = 128  # used when `train_one_cycle` draws the batches itself


def train_one_cycle(
    model: nn.Module,
    data: Batch | BatchSource,
    steps: int,
    recipe: OneCycleRecipe = OneCycleRecipe(),
    *,
    params: Iterable[nn.Parameter] | None = None,
    generator: torch.Generator | None = None,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    device: torch.device | str = "cpu",
    on_step: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Train ``model`` for ``steps`` steps with ``recipe`` (AdamW, OneCycle, label smoothing), one `train_steps` call.

    ``params`` defaults to every parameter of ``model``; ``data``, ``generator``, ``transform``, ``device`` and
    ``on_step`` are passed to `train_steps` (``recipe.batch_size`` is the batch size when ``data`` is a pair of
    tensors).

    Returns:
        the training loss of every step.

    Example:
        >>> model = nn.Linear(4, 3)
        >>> x, y = torch.randn(20, 4), torch.arange(20) % 3
        >>> losses = train_one_cycle(model, (x, y), 6, OneCycleRecipe(lr=1e-2, batch_size=8),
        ...                          generator=torch.Generator().manual_seed(0))
        >>> len(losses)
        6
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}.")
    optimizer = torch.optim.AdamW(
        model.parameters() if params is None else params, lr=recipe.lr, weight_decay=recipe.weight_decay
    )
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=recipe.lr, total_steps=steps)
    return train_steps(
        model,
        data,
        steps,
        optimizer,
        batch_size=recipe.batch_size,
        generator=generator,
        transform=transform,
        scheduler=schedule,
        loss_fn=nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing),
        device=device,
        on_step=on_step,
    )
