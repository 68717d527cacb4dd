"""Discriminative learning rates (one LR per block), gradual unfreezing, and choosing a learning rate.

`param_groups` turns ``{"layer4": 1e-3, "fc": 1e-2}`` into optimizer parameter groups;
`GradualUnfreezer` unfreezes named blocks at chosen epochs and gives their parameters to the optimizer;
`tune_lr` searches a grid of learning rates with the course's edge rule (a choice on an edge of the grid gets
the next half-decade beyond it, until the choice has a worse rate on each side).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = ["HALF_DECADES", "GradualUnfreezer", "LRSearch", "param_groups", "tune_lr"]

# Learning rates in half-decade steps, the ladder that `tune_lr` climbs.
HALF_DECADES: tuple[float, ...] = (1e-6, 3e-6, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0)


def _owner(name: str, prefixes: Iterable[str]) -> str | None:
    """The longest prefix that ``name`` lies under, at a module boundary (``layer1`` does not own ``layer10``)."""
    matches = [p for p in prefixes if name == p or name.startswith(p + ".")]
    return max(matches, key=len) if matches else None


def _check_prefixes(model: nn.Module, prefixes: Iterable[str]) -> None:
    names = [n for n, _ in model.named_parameters()]
    unknown = [p for p in prefixes if not any(n == p or n.startswith(p + ".") for n in names)]
    if unknown:
        children = [n for n, _ in model.named_children()]
        raise ValueError(f"no parameters under {unknown}; use module names of this model, e.g. {children}.")


def param_groups(
    model: nn.Module,
    lrs: Mapping[str, float],
    default_lr: float | None = None,
    include_frozen: bool = False,
) -> list[dict[str, Any]]:
    """Optimizer parameter groups with one learning rate per module prefix.

    Every parameter goes to the group of the longest prefix it lies under; parameters under no prefix
    go to a ``"default"`` group at ``default_lr`` (an error if ``default_lr`` is None). Frozen parameters
    (``requires_grad=False``) are left out unless ``include_frozen``. Each group carries a ``"name"``.

    Example:
        >>> groups = param_groups(model, {"layer4": 1e-3, "fc": 1e-2}, default_lr=1e-4)  # doctest: +SKIP
        >>> optimizer = torch.optim.SGD(groups, momentum=0.9)  # doctest: +SKIP
    """
    _check_prefixes(model, lrs)
    members: dict[str, list[nn.Parameter]] = {p: [] for p in lrs}
    default: list[nn.Parameter] = []
    for name, param in model.named_parameters():
        if not (param.requires_grad or include_frozen):
            continue
        owner = _owner(name, lrs)
        (members[owner] if owner is not None else default).append(param)
    if default and default_lr is None:
        raise ValueError(
            f"{len(default)} trainable parameter tensor(s) are under none of {list(lrs)}; "
            "pass default_lr=... for them, or freeze them first."
        )
    groups = [{"name": p, "params": ps, "lr": lrs[p]} for p, ps in members.items() if ps]
    if default:
        groups.append({"name": "default", "params": default, "lr": default_lr})
    if not groups:
        raise ValueError("the model has no trainable parameters; unfreeze something, or pass include_frozen=True.")
    return groups


class GradualUnfreezer:
    """Unfreeze blocks at given epochs and make sure the optimizer updates them.

    Args:
        model: the model, with the blocks in ``schedule`` frozen to begin with.
        optimizer: the optimizer training the already-trainable parameters.
        schedule: ``{epoch: [module names]}``: at the start of ``epoch`` those modules are unfrozen.
        lrs: learning rate of each scheduled module's new parameter group (``default_lr`` otherwise).

    A module whose parameters are already in the optimizer (built with ``include_frozen=True``) is only
    switched back on; otherwise its parameters join the optimizer as a new group named after it.
    Call it at the start of every epoch, e.g. ``fit(..., on_epoch_start=unfreezer)``.

    Example:
        >>> schedule = {2: ["layer4"], 4: ["layer3"]}  # epoch -> blocks to unfreeze then
        >>> lrs = {"layer4": 1e-3, "layer3": 5e-4}
        >>> unfreezer = GradualUnfreezer(model, optimizer, schedule, lrs=lrs)  # doctest: +SKIP
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        schedule: Mapping[int, list[str]],
        lrs: Mapping[str, float] | None = None,
        default_lr: float | None = None,
    ) -> None:
        names = [n for ns in schedule.values() for n in ns]
        modules = dict(model.named_modules())
        unknown = [n for n in names if n not in modules or n == ""]
        if unknown:
            raise ValueError(
                f"unknown module name(s) {unknown}; use names from model.named_modules(), "
                f"e.g. {[n for n, _ in model.named_children()]}."
            )
        lrs = dict(lrs or {})
        missing_lr = [n for n in names if n not in lrs and default_lr is None]
        if missing_lr:
            raise ValueError(f"no learning rate for {missing_lr}; pass lrs={{name: lr}} or default_lr=...")
        self.model, self.optimizer, self.modules = model, optimizer, modules
        self.schedule = {int(e): list(ns) for e, ns in schedule.items()}
        self.lrs = {n: lrs.get(n, default_lr) for n in names}
        self.unfrozen: list[str] = []

    def __call__(self, epoch: int) -> list[str]:
        """Unfreeze what the schedule lists for ``epoch``; return those module names."""
        names = self.schedule.get(epoch, [])
        in_optimizer = {id(p) for group in self.optimizer.param_groups for p in group["params"]}
        for name in names:
            params = list(self.modules[name].parameters())
            for p in params:
                p.requires_grad_(True)
            new = [p for p in params if id(p) not in in_optimizer]
            if new:
                self.optimizer.add_param_group({"name": name, "params": new, "lr": self.lrs[name]})
            self.unfrozen.append(name)
        return names


@dataclass(frozen=True)
class LRSearch:
    """What `tune_lr` found: the chosen rate, the score of every rate tried (ascending), and whether the choice
    still sits on an edge (only when the ladder ran out)."""

    best: float
    scores: dict[float, float]
    at_edge: bool


def tune_lr(
    score: Callable[[float], float], start: Sequence[float], ladder: Sequence[float] = HALF_DECADES
) -> LRSearch:
    """Choose the learning rate with the highest ``score`` (a validation accuracy), widening the grid at its edges.

    Every rate of ``start`` (consecutive rungs of ``ladder``) is scored once; while the best one is the lowest or
    the highest rate tried, the next rung beyond it is scored too. The search ends when the choice has a worse
    (or equal) rate on each side, or the ladder ends (then ``at_edge`` is true). Ties go to the rate scored first:
    within ``start`` the smaller one; a rung added beyond an edge must be strictly better to be chosen.

    Example:
        >>> found = tune_lr(lambda lr: -abs(lr - 0.03), start=(1e-3, 3e-3, 1e-2))
        >>> found.best, sorted(found.scores)
        (0.03, [0.001, 0.003, 0.01, 0.03, 0.1])
    """
    ladder = sorted(ladder)
    unknown = [lr for lr in start if lr not in ladder]
    if not start or unknown:
        raise ValueError(
            f"tune_lr starts from rates of the ladder {ladder}; got {list(start)} (not on it: {unknown}). "
            "Start from rungs such as (1e-3, 3e-3, 1e-2)."
        )
    scores: dict[float, float] = {}
    low, high = ladder.index(min(start)), ladder.index(max(start))
    while True:
        tried = ladder[low : high + 1]
        for lr in tried:
            if lr not in scores:
                scores[lr] = float(score(lr))
        # Ties go to the rate scored first: the smaller one within ``start``, and a rung added beyond an edge wins
        # only if it is strictly better (so a plateau does not walk the search down the ladder).
        best = max(tried, key=lambda lr: (scores[lr], -list(scores).index(lr)))
        if best == tried[0] and low > 0:
            low -= 1
        elif best == tried[-1] and high < len(ladder) - 1:
            high += 1
        else:
            return LRSearch(best, dict(sorted(scores.items())), at_edge=best in (tried[0], tried[-1]))
