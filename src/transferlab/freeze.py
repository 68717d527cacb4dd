"""Freezing and unfreezing parameters, a BatchNorm freeze that survives ``.train()``, parameter counts."""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm  # base class of BatchNorm1d/2d/3d and SyncBatchNorm

__all__ = ["ParamCount", "count_parameters", "freeze", "freeze_bn", "is_bn_frozen", "unfreeze", "unfreeze_bn"]


def _targets(module: nn.Module, submodules: str | Iterable[str] | None) -> list[nn.Module]:
    """``module`` itself, or the named submodules (dotted names such as ``"layer4.1"``)."""
    if submodules is None:
        return [module]
    names = [submodules] if isinstance(submodules, str) else list(submodules)
    found = []
    for name in names:
        try:
            found.append(module.get_submodule(name))
        except AttributeError:
            children = [n for n, _ in module.named_children()]
            raise ValueError(
                f"{type(module).__name__} has no submodule {name!r}; its children are {children}. "
                "Use dotted names from model.named_modules(), e.g. 'layer4' or 'layer4.1.conv2'."
            ) from None
    return found


def _set_requires_grad(module: nn.Module, submodules: str | Iterable[str] | None, flag: bool) -> nn.Module:
    for target in _targets(module, submodules):
        for p in target.parameters():
            p.requires_grad_(flag)
    return module


def freeze(module: nn.Module, submodules: str | Iterable[str] | None = None) -> nn.Module:
    """Set ``requires_grad=False`` on every parameter of ``module`` (or only of the named submodules).

    Freezing stops gradient updates only: BatchNorm running statistics still change in train mode
    (see :func:`freeze_bn`).

    Args:
        module: the model.
        submodules: ``None`` for the whole model, or a name / list of dotted names (``["conv1", "layer1"]``).
    Returns:
        ``module`` (changed in place), so calls can be chained.

    Example:
        >>> m = freeze(nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1)), ["0"])
        >>> [p.requires_grad for p in m.parameters()]
        [False, False, True, True]
    """
    return _set_requires_grad(module, submodules, False)


def unfreeze(module: nn.Module, submodules: str | Iterable[str] | None = None) -> nn.Module:
    """Set ``requires_grad=True`` on every parameter of ``module`` (or only of the named submodules).

    Example:
        >>> m = unfreeze(freeze(nn.Linear(2, 2)))
        >>> all(p.requires_grad for p in m.parameters())
        True
    """
    return _set_requires_grad(module, submodules, True)


# The handle of freeze_bn's hook is kept on the BatchNorm itself (a plain attribute: not in the state_dict, copied by
# copy.deepcopy together with the hook it removes), so the freeze can be undone and asked about without a registry.
_HOOK_HANDLE = "transferlab_freeze_bn_hook"


def _keep_in_eval(bn: nn.Module, args: tuple) -> None:
    """Forward pre-hook: whatever ``.train()`` did, this BatchNorm runs in eval mode."""
    bn.train(False)


def is_bn_frozen(module: nn.Module) -> bool:
    """Whether ``module`` is a BatchNorm layer frozen by :func:`freeze_bn` (kept in eval mode whatever ``train()``).

    Example:
        >>> bn = nn.BatchNorm1d(3)
        >>> is_bn_frozen(bn), is_bn_frozen(freeze_bn(bn))
        (False, True)
    """
    return isinstance(module, _BatchNorm) and getattr(module, _HOOK_HANDLE, None) is not None


def freeze_bn(module: nn.Module, submodules: str | Iterable[str] | None = None) -> nn.Module:
    """Freeze every BatchNorm layer: its affine parameters AND its running statistics.

    ``requires_grad=False`` alone does not stop a BatchNorm in train mode from updating
    ``running_mean``/``running_var`` and normalising with the batch's own statistics. Here each
    BatchNorm gets a forward pre-hook that puts it back into eval mode right before it runs, so the
    freeze survives ``model.train()`` (which a training loop calls every epoch). Undo with :func:`unfreeze_bn`;
    ask with :func:`is_bn_frozen`.

    Args:
        module: the model (a single BatchNorm layer works too).
        submodules: ``None`` for every BatchNorm in the model, or names of submodules to search.
    Returns:
        ``module`` (changed in place).

    Example:
        >>> import torch
        >>> bn = freeze_bn(nn.Sequential(nn.BatchNorm1d(3))).train()
        >>> _ = bn(torch.randn(8, 3)); bn[0].running_mean.abs().sum().item()
        0.0
    """
    for target in _targets(module, submodules):
        for m in target.modules():
            if isinstance(m, _BatchNorm):
                for p in m.parameters():
                    p.requires_grad_(False)
                m.eval()
                if not is_bn_frozen(m):  # not twice
                    setattr(m, _HOOK_HANDLE, m.register_forward_pre_hook(_keep_in_eval))
    return module


def unfreeze_bn(module: nn.Module, submodules: str | Iterable[str] | None = None) -> nn.Module:
    """Undo :func:`freeze_bn`: BatchNorm layers follow ``train()``/``eval()`` again and their parameters train.

    The mode is not changed here; call ``model.train()`` afterwards if you want batch statistics.
    """
    for target in _targets(module, submodules):
        for m in target.modules():
            if isinstance(m, _BatchNorm):
                if is_bn_frozen(m):
                    getattr(m, _HOOK_HANDLE).remove()
                    delattr(m, _HOOK_HANDLE)
                for p in m.parameters():
                    p.requires_grad_(True)
    return module


class ParamCount(NamedTuple):
    """Numbers of trainable and frozen parameter elements (as torchinfo counts them)."""

    trainable: int
    frozen: int

    @property
    def total(self) -> int:
        return self.trainable + self.frozen


def count_parameters(model: nn.Module) -> ParamCount:
    """Count parameter elements that will train (``requires_grad``) and that are frozen.

    Example:
        >>> count_parameters(freeze(nn.Linear(3, 2)))
        ParamCount(trainable=0, frozen=8)
    """
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    return ParamCount(trainable, frozen)
