"""Loading pretrained weights safely and partially: key cleaning, name-and-shape matching, input-conv adaptation."""

from __future__ import annotations

import math
import os
from collections import Counter, OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from torch import nn

from transferlab.serialization import IncompleteLoadError, load_file, unwrap_checkpoint

__all__ = [
    "LoadReport",
    "adapt_input_conv",
    "clean_state_dict",
    "load_matching",
]

# Wrapper prefixes: nn.DataParallel / DistributedDataParallel add `module.`, torch.compile adds `_orig_mod.`.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
# The BatchNorm buffer added in PyTorch 0.4.1; BatchNorm fills it in when an older checkpoint lacks it.
FILLED_IN_BUFFER = "num_batches_tracked"


def clean_state_dict(state_dict: Mapping[str, Any]) -> OrderedDict[str, Any]:
    """Strip wrapper prefixes from state_dict keys: leading ``module.`` (DataParallel/DDP), any ``_orig_mod.``.

    Prefixes are removed repeatedly, so ``module._orig_mod.conv1.weight`` becomes ``conv1.weight``.
    ``_orig_mod.`` is removed wherever it appears (a compiled submodule puts it mid-key); ``module.`` only
    at the start, because a model may have a real submodule called ``module``.

    Example:
        >>> list(clean_state_dict({"module._orig_mod.fc.bias": 0}))
        ['fc.bias']
    """
    cleaned: OrderedDict[str, Any] = OrderedDict()
    for key, value in state_dict.items():
        new = key.replace("._orig_mod.", ".")
        while new.startswith(WRAPPER_PREFIXES):
            new = new.split(".", 1)[1]
        if new in cleaned:
            raise ValueError(f"keys {key!r} and another both become {new!r} after removing wrapper prefixes")
        cleaned[new] = value
    return cleaned


def _shape(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def _summary(title: str, keys: Sequence[str], shown: int = 3) -> list[str]:
    """One line per category: count, count per top-level module, the first few keys."""
    if not keys:
        return []
    groups = Counter(k.split(".", 1)[0] for k in keys)
    names = ", ".join(keys[:shown]) + (", ..." if len(keys) > shown else "")
    return [f"  {title} {len(keys)} [{', '.join(f'{g}: {n}' for g, n in groups.items())}]: {names}"]


@dataclass
class LoadReport:
    """What :func:`load_matching` did, key by key.

    Attributes:
        loaded: model keys whose tensors were copied from the source.
        shape_mismatched: key -> (source shape, model shape); not copied.
        missing: model keys absent from the source; they keep their current values.
        unexpected: source keys the model does not have; ignored.
        excluded: model keys skipped on purpose (``exclude=``); they keep their current values.
        filled_in: BatchNorm ``num_batches_tracked`` buffers absent from the source; the model keeps its own
            counter, as PyTorch does. They do not make the load incomplete.

    Why ``filled_in`` is its own list: BatchNorm gained the ``num_batches_tracked`` buffer in PyTorch 0.4.1, and
    checkpoints saved before then (many published ImageNet/CIFAR models) lack it. ``BatchNorm._load_from_state_dict``
    fills it in when the state_dict carries no version metadata saying it should be there, so
    ``load_state_dict(strict=True)`` accepts such a file and ``strict=False`` never lists the buffer among its
    ``missing_keys``. That is why, in notebook 04, PyTorch lists 5 missing keys for the new ``layer3`` (a conv and a
    BatchNorm the source does not have: ``layer3.0.weight`` and the BatchNorm's ``weight``, ``bias``,
    ``running_mean``, ``running_var``) where a key-by-key comparison counts 6: the sixth,
    ``layer3.1.num_batches_tracked``, is filled in, so this report lists it under ``filled_in``, not ``missing``.
    (PyTorch skips the fill-in only for a state_dict whose ``_metadata`` says it was saved by 0.4.1 or later;
    this report always fills in, because unwrapping and cleaning a checkpoint drops that metadata, and so does
    every dict comprehension over a state_dict.)

    Example:
        >>> report = load_matching(nn.BatchNorm2d(4), {"weight": torch.ones(4), "bias": torch.zeros(4),
        ...                                            "running_mean": torch.zeros(4), "running_var": torch.ones(4)})
        >>> report.complete, report.filled_in
        (True, ['num_batches_tracked'])
    """

    loaded: list[str] = field(default_factory=list)
    shape_mismatched: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)
    filled_in: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """True if every tensor that was not excluded on purpose (or filled in, as PyTorch does) was loaded and
        nothing was left over."""
        return not (self.shape_mismatched or self.missing or self.unexpected)

    def __repr__(self) -> str:
        head = (
            f"LoadReport: {len(self.loaded)} loaded, {len(self.shape_mismatched)} shape-mismatched, "
            f"{len(self.missing)} missing, {len(self.unexpected)} unexpected, {len(self.excluded)} excluded"
        )
        mism = [
            f"  shape mismatch (not loaded): {k} source {list(s)} vs model {list(m)}"
            for k, (s, m) in self.shape_mismatched.items()
        ]
        if len(mism) > 8:
            mism = [*mism[:8], f"  shape mismatch (not loaded): ... and {len(mism) - 8} more"]
        return "\n".join(
            [
                head,
                *mism,
                *_summary("missing (model keeps its values)", self.missing),
                *_summary("unexpected (ignored)", self.unexpected),
                *_summary("excluded (model keeps its values)", self.excluded),
                *_summary("filled in (absent from old checkpoints; model keeps its counters)", self.filled_in),
            ]
        )


def _excluded(key: str, exclude: Sequence[str]) -> bool:
    """Whether ``key`` lies in one of the modules named by ``exclude``, at a module boundary: ``"layer1"`` and
    ``"layer1."`` both name ``layer1.0.conv1.weight`` but not ``layer10.0.conv1.weight``."""
    return any(key == p.rstrip(".") or key.startswith(p if p.endswith(".") else p + ".") for p in exclude)


def _match(
    model_sd: Mapping[str, torch.Tensor], source: Mapping[str, torch.Tensor], exclude: Sequence[str]
) -> LoadReport:
    report = LoadReport()
    exclude = (exclude,) if isinstance(exclude, str) else tuple(exclude)  # "fc." is one name, not three letters
    for key, target in model_sd.items():
        if _excluded(key, exclude):
            report.excluded.append(key)
        elif key not in source and key.rsplit(".", 1)[-1] == FILLED_IN_BUFFER:
            report.filled_in.append(key)
        elif key not in source:
            report.missing.append(key)
        elif _shape(source[key]) != _shape(target):
            report.shape_mismatched[key] = (_shape(source[key]), _shape(target))
        else:
            report.loaded.append(key)
    report.unexpected = [k for k in source if k not in model_sd and not _excluded(k, exclude)]
    return report


def load_matching(
    model: nn.Module,
    source: Mapping[str, Any] | str | os.PathLike | nn.Module,
    *,
    strict: bool = False,
    exclude: Sequence[str] = (),
    clean: bool = True,
) -> LoadReport:
    """Copy into ``model`` every source tensor whose name AND shape match; report the rest.

    Policy: nothing is skipped silently. The returned :class:`LoadReport` lists every tensor that was not
    copied (assert on it: ``assert report.complete`` or ``assert not report.shape_mismatched``). With
    ``strict=True`` any skipped tensor outside ``exclude`` raises :class:`IncompleteLoadError` and nothing is
    loaded. A load that matches nothing at all always raises (it is almost always a key-prefix mistake).
    BatchNorm's ``num_batches_tracked`` counters absent from an old checkpoint are filled in as PyTorch does
    (``report.filled_in``), so a pre-0.4.1 checkpoint loads with ``strict=True``.

    Args:
        model: the model to load into (changed in place).
        source: a state_dict, a checkpoint dict nesting one (``state_dict``/``model_state_dict``/``model``),
            a path to a checkpoint file (read with ``weights_only=True``), or another model.
        strict: raise instead of loading in part.
        exclude: modules not to load on purpose, by name, e.g. ``("fc",)`` (or ``"fc"``) for a head you replaced;
            a name covers that module and everything inside it (``"layer1"`` is not ``layer10``).
        clean: strip ``module.``/``_orig_mod.`` prefixes from the source keys first.
    Returns:
        a :class:`LoadReport`.
    Raises:
        IncompleteLoadError: nothing matched, or ``strict=True`` and something did not; ``.report`` says what.

    Example:
        >>> from torchvision.models import resnet18
        >>> report = load_matching(resnet18(num_classes=10), resnet18().state_dict())
        >>> report.shape_mismatched
        {'fc.weight': ((1000, 512), (10, 512)), 'fc.bias': ((1000,), (10,))}
    """
    if isinstance(source, (str, os.PathLike)):
        source = load_file(source)
    state_dict = unwrap_checkpoint(source)
    if clean:
        state_dict = clean_state_dict(state_dict)
    report = _match(model.state_dict(), state_dict, exclude)
    if not report.loaded:
        raise _incomplete(
            "no tensor matched by name and shape, nothing was loaded. "
            f"Model keys start {list(model.state_dict())[:3]}, source keys start {list(state_dict)[:3]}. "
            "If the source keys carry an extra prefix (e.g. 'backbone.'), "
            "strip it first: {k.removeprefix('backbone.'): v for k, v in sd.items()}.",
            report,
        )
    if strict and not report.complete:
        raise _incomplete(
            f"strict=True and not every tensor matched, so nothing was loaded.\n{report!r}\n"
            "Fix: pass exclude=(prefix, ...) for layers you replaced on purpose (e.g. exclude=('fc.',)), "
            "or strict=False and assert on the returned report.",
            report,
        )
    result = model.load_state_dict({k: state_dict[k] for k in report.loaded}, strict=False)
    assert not result.unexpected_keys, result.unexpected_keys  # we only passed keys of the model itself
    return report


def _incomplete(message: str, report: LoadReport) -> IncompleteLoadError:
    error = IncompleteLoadError(message)
    error.report = report
    return error


def adapt_input_conv(in_chans: int, conv: nn.Conv2d | torch.Tensor) -> nn.Conv2d | torch.Tensor:
    """Adapt a conv pretrained on RGB input to ``in_chans`` input channels, keeping its pretrained filters.

    1 channel: the three colour filters are summed, so a grey image gives the same response as that grey
    image copied into R, G and B. More channels: the RGB filters are repeated cyclically and scaled by
    ``3 / in_chans`` to keep the output's scale (the same rule as timm's ``adapt_input_conv``, and the same
    argument order: ``in_chans`` first).

    Args:
        in_chans: number of input channels wanted.
        conv: an ``nn.Conv2d`` with 3 input channels, or its weight ``(out, 3, kh, kw)``.
    Returns:
        a new ``nn.Conv2d`` (same settings, bias copied) or a new weight tensor, like the input.

    Example:
        >>> adapt_input_conv(1, nn.Conv2d(3, 8, 3)).weight.shape
        torch.Size([8, 1, 3, 3])
    """
    if isinstance(in_chans, (nn.Module, torch.Tensor)):
        raise TypeError(
            "adapt_input_conv takes the channel count first, like timm: adapt_input_conv(in_chans, conv), "
            f"e.g. adapt_input_conv(1, model.conv1); got a {type(in_chans).__name__} first."
        )
    weight = conv.weight if isinstance(conv, nn.Conv2d) else conv
    if not isinstance(weight, torch.Tensor) or weight.dim() != 4 or weight.shape[1] != 3:
        shape = list(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__
        raise ValueError(
            f"adapt_input_conv needs a conv pretrained on 3 (RGB) input channels, i.e. a weight of shape "
            f"(out, 3, kh, kw); got {shape}. Pass the model's first conv (e.g. model.conv1), not a later layer."
        )
    if isinstance(conv, nn.Conv2d) and conv.groups != 1:
        raise ValueError(f"adapt_input_conv supports ordinary convs only (groups=1), got groups={conv.groups}")
    if in_chans < 1:
        raise ValueError(f"in_chans must be at least 1, got {in_chans}")
    w = weight.detach().float()
    if in_chans == 1:
        new = w.sum(dim=1, keepdim=True)
    else:
        repeat = math.ceil(in_chans / 3)
        new = w.repeat(1, repeat, 1, 1)[:, :in_chans] * (3 / in_chans)
    new = new.to(weight.dtype)
    if not isinstance(conv, nn.Conv2d):
        return new
    out = nn.Conv2d(
        in_chans,
        conv.out_channels,
        cast(tuple[int, int], conv.kernel_size),
        cast(tuple[int, int], conv.stride),
        cast("str | tuple[int, int]", conv.padding),
        cast(tuple[int, int], conv.dilation),
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
    ).to(device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        out.weight.copy_(new)
        if conv.bias is not None and out.bias is not None:
            out.bias.copy_(conv.bias)
    out.weight.requires_grad_(conv.weight.requires_grad)
    if conv.bias is not None and out.bias is not None:
        out.bias.requires_grad_(conv.bias.requires_grad)
    return out
