"""Parameter-efficient fine-tuning written out: LoRA wrappers for Linear and Conv2d layers, merging, and BitFit.

LoRA (Hu et al., 2021) keeps a pretrained weight ``W`` frozen and learns a low-rank update: the layer computes
``W x + (alpha / r) * B (A x)`` with ``A`` of shape ``[r, fan_in]`` and ``B`` of shape ``[fan_out, r]``. ``B`` starts
at zero, so a freshly wrapped model computes exactly what the pretrained one did. For a convolution, ``A`` is itself a
convolution with the base layer's kernel, stride and padding into ``r`` channels and ``B`` a 1x1 convolution back
to ``out_channels`` (the same factorisation as the ``peft`` library), so the update of the kernel is
``B @ A.flatten(1)`` reshaped to the kernel's shape. Because the update is linear, it can be *merged* into ``W``
(one ordinary layer again, no extra cost at inference) and *unmerged* (subtracted) afterwards.

BitFit (Ben Zaken et al., 2022) trains only the bias terms (and the new head).

Example:
    >>> model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 2))
    >>> x = torch.randn(4, 3, 8, 8)
    >>> before = model(x)
    >>> _ = apply_lora(model, ["0", "3"], r=2)
    >>> torch.equal(model(x), before)  # B = 0: the wrapped model starts identical
    True
    >>> sorted(n for n, p in model.named_parameters() if p.requires_grad)
    ['0.lora_A', '0.lora_B', '3.lora_A', '3.lora_B']
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import cast

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = [
    "LoRAConv2d",
    "LoRALinear",
    "apply_lora",
    "bitfit",
    "lora_layers",
    "lora_state_dict",
    "merge_lora",
    "remove_lora",
    "unmerge_lora",
]


class _LoRA(nn.Module):
    """What both wrappers share: the frozen ``base``, the factors ``lora_A``/``lora_B``, scaling and merging."""

    base: nn.Linear | nn.Conv2d
    lora_A: nn.Parameter
    lora_B: nn.Parameter

    def _setup(
        self, base: nn.Linear | nn.Conv2d, r: int, alpha: float, a_shape: tuple[int, ...], b_shape: tuple[int, ...]
    ) -> None:
        if r < 1:
            raise ValueError(f"LoRA rank r must be at least 1, got {r}")
        self.base, self.r, self.alpha, self.scaling, self.merged = base, r, alpha, alpha / r, False
        base.requires_grad_(False)
        w = base.weight
        self.lora_A = nn.Parameter(torch.empty(a_shape, device=w.device, dtype=w.dtype))
        self.lora_B = nn.Parameter(torch.zeros(b_shape, device=w.device, dtype=w.dtype))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as nn.Linear initialises its weight (and peft A)

    def delta_weight(self) -> Tensor:
        """The update ``(alpha / r) * B @ A``, shaped like the base weight."""
        return (self.scaling * (self.lora_B.flatten(1) @ self.lora_A.flatten(1))).view_as(self.base.weight)

    @torch.no_grad()
    def merge(self) -> None:
        """Add the update into the base weight; the forward pass then skips the low-rank branch."""
        if self.merged:
            raise RuntimeError("this LoRA layer is already merged; call unmerge() first")
        self.base.weight += self.delta_weight()
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Subtract the update from the base weight again (equal to the original up to float rounding)."""
        if not self.merged:
            raise RuntimeError("this LoRA layer is not merged; nothing to unmerge")
        self.base.weight -= self.delta_weight()
        self.merged = False

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha:g}, merged={self.merged}"


class LoRALinear(_LoRA):
    """``base(x) + (alpha / r) * x A^T B^T`` around a frozen ``nn.Linear``; ``lora_B`` starts at zero.

    Example:
        >>> layer = LoRALinear(nn.Linear(5, 3), r=2)
        >>> layer.lora_A.shape, layer.lora_B.shape
        (torch.Size([2, 5]), torch.Size([3, 2]))
    """

    def __init__(self, base: nn.Linear, r: int = 4, alpha: float = 8.0) -> None:
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"LoRALinear wraps an nn.Linear, got {type(base).__name__}; use LoRAConv2d for Conv2d")
        self._setup(base, r, alpha, (r, base.in_features), (base.out_features, r))

    def forward(self, x: Tensor) -> Tensor:
        out = self.base(x)
        if self.merged:
            return out
        return out + self.scaling * F.linear(F.linear(x, self.lora_A), self.lora_B)


class LoRAConv2d(_LoRA):
    """A frozen ``nn.Conv2d`` plus a rank-``r`` branch: a conv into ``r`` channels (A), then a 1x1 conv (B = 0).

    Only ``groups=1`` convolutions are supported (a depthwise conv has one input channel per filter: nothing to
    factorise).

    Example:
        >>> layer = LoRAConv2d(nn.Conv2d(4, 6, 3, padding=1), r=2)
        >>> layer.lora_A.shape, layer.lora_B.shape
        (torch.Size([2, 4, 3, 3]), torch.Size([6, 2, 1, 1]))
    """

    def __init__(self, base: nn.Conv2d, r: int = 4, alpha: float = 8.0) -> None:
        super().__init__()
        if not isinstance(base, nn.Conv2d):
            raise TypeError(f"LoRAConv2d wraps an nn.Conv2d, got {type(base).__name__}; use LoRALinear for Linear")
        if base.groups != 1:
            raise ValueError(
                f"LoRAConv2d needs groups=1, got a conv with groups={base.groups} (depthwise?); "
                "put LoRA on the pointwise (1x1) or full convolutions instead"
            )
        if base.padding_mode != "zeros":
            raise ValueError(f"LoRAConv2d supports padding_mode='zeros' only, got {base.padding_mode!r}")
        self._setup(base, r, alpha, (r, base.in_channels, *base.kernel_size), (base.out_channels, r, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        out = self.base(x)
        if self.merged:
            return out
        b = cast(nn.Conv2d, self.base)
        padding = cast(tuple[int, int], b.padding)  # or "same"/"valid": F.conv2d takes both, its stubs one at a time
        low = F.conv2d(x, self.lora_A, None, b.stride, padding, b.dilation)
        return out + self.scaling * F.conv2d(low, self.lora_B)


def lora_layers(model: nn.Module) -> dict[str, _LoRA]:
    """Every LoRA wrapper in ``model``, by dotted name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, _LoRA)}


def apply_lora(model: nn.Module, targets: Iterable[str], r: int = 4, alpha: float = 8.0) -> nn.Module:
    """Wrap the named Linear/Conv2d layers of ``model`` in LoRA and freeze everything but the LoRA factors.

    Args:
        model: changed in place. Unfreeze what else should train (e.g. a new head) afterwards.
        targets: dotted module names, e.g. ``["layer4.0.conv1", "layer4.0.conv2"]``.
        r: rank of the update; alpha: the update is scaled by ``alpha / r``.

    Returns:
        ``model``.
    """
    targets = list(targets)
    if not targets:
        raise ValueError("apply_lora needs at least one target layer name, e.g. ['layer4.0.conv1']")
    layers = dict(model.named_modules())
    for name in targets:
        if name not in layers:
            convs = [n for n, m in layers.items() if isinstance(m, (nn.Conv2d, nn.Linear))]
            raise ValueError(f"{type(model).__name__} has no layer {name!r}; its Conv2d/Linear layers are {convs}")
    model.requires_grad_(False)
    for name in targets:
        layer = layers[name]
        if isinstance(layer, nn.Conv2d):
            wrapped: nn.Module = LoRAConv2d(layer, r, alpha)
        elif isinstance(layer, nn.Linear):
            wrapped = LoRALinear(layer, r, alpha)
        else:
            raise TypeError(f"layer {name!r} is a {type(layer).__name__}; LoRA wraps Conv2d and Linear layers only")
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, wrapped)
    return model


def merge_lora(model: nn.Module) -> nn.Module:
    """Merge every LoRA update into its base weight (see :meth:`_LoRA.merge`); returns ``model``."""
    for layer in lora_layers(model).values():
        layer.merge()
    return model


def unmerge_lora(model: nn.Module) -> nn.Module:
    """Subtract every merged LoRA update from its base weight again; returns ``model``."""
    for layer in lora_layers(model).values():
        layer.unmerge()
    return model


def remove_lora(model: nn.Module, merge: bool = False) -> nn.Module:
    """Replace every LoRA wrapper by its base layer: the source layer back (``merge=False``, unmerging first if
    needed), or one plain layer with the update merged in (``merge=True``). Returns ``model``."""
    for name, layer in lora_layers(model).items():
        if merge and not layer.merged:
            layer.merge()
        elif not merge and layer.merged:
            layer.unmerge()
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, layer.base)
    return model


def lora_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """Only the LoRA factors (``...lora_A``, ``...lora_B``): what one task adds to the shared source model."""
    return {name: p.detach() for name, p in model.named_parameters() if name.endswith(("lora_A", "lora_B"))}


def bitfit(model: nn.Module, head: str | None = None) -> nn.Module:
    """BitFit: freeze every parameter except the biases (and the ``head`` submodule, if named). Returns ``model``.

    Example:
        >>> m = bitfit(nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 2)), head="1")
        >>> [n for n, p in m.named_parameters() if p.requires_grad]
        ['0.bias', '1.weight', '1.bias']
    """
    model.requires_grad_(False)
    biases = [p for name, p in model.named_parameters() if name.rpartition(".")[2] == "bias"]
    if not biases:
        raise ValueError(f"{type(model).__name__} has no bias parameters: BitFit would train nothing but the head")
    for p in biases:
        p.requires_grad_(True)
    if head is not None:
        model.get_submodule(head).requires_grad_(True)
    return model
