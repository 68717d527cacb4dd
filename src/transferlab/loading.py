"""Loading pretrained weights safely and partially: key cleaning, name-and-shape matching, input-conv adaptation."""

from __future__ import annotations

import math
import os
import pickle
import re
import zipfile
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "CheckpointError",
    "IncompleteLoadError",
    "LoadReport",
    "adapt_input_conv",
    "clean_state_dict",
    "load_checkpoint_file",
    "load_matching",
    "unwrap_checkpoint",
]

# Keys under which training scripts commonly nest the model's state_dict inside a checkpoint dict.
NESTED_KEYS = ("state_dict", "model_state_dict", "model")
# Wrapper prefixes: nn.DataParallel / DistributedDataParallel add `module.`, torch.compile adds `_orig_mod.`.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


class CheckpointError(RuntimeError):
    """A checkpoint file could not be loaded safely; the message says why and what to do."""


class IncompleteLoadError(RuntimeError):
    """``load_matching(..., strict=True)`` would have loaded only part of the weights; nothing was loaded."""


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


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def unwrap_checkpoint(checkpoint: Any) -> Mapping[str, torch.Tensor]:
    """Return the state_dict inside ``checkpoint``: itself, or nested under ``state_dict``/``model_state_dict``/``model``.

    Example:
        >>> sd = nn.Linear(1, 1).state_dict()
        >>> unwrap_checkpoint({"epoch": 3, "model": {"state_dict": sd}}) is sd
        True
    """
    obj = checkpoint
    for _ in range(5):  # a few levels of nesting at most
        if isinstance(obj, nn.Module):
            return obj.state_dict()
        if _is_state_dict(obj):
            return obj
        if not isinstance(obj, Mapping):
            break
        inner = next((obj[k] for k in NESTED_KEYS if k in obj), None)
        if inner is None:
            raise ValueError(
                f"no state_dict found in this checkpoint: its keys are {sorted(map(str, obj))[:20]} and none of them "
                f"is one of {list(NESTED_KEYS)}. Pass the entry that holds the weights, e.g. checkpoint['<key>']."
            )
        obj = inner
    raise ValueError(
        f"expected a state_dict (a mapping of names to tensors) or a checkpoint dict holding one, got {type(obj).__name__}."
    )


def _pickled_module_name(path: Path) -> str | None:
    """Class name of a pickled nn.Module in a torch.save zip file, found by reading opcodes (nothing is run)."""
    try:
        with zipfile.ZipFile(path) as zf:
            name = next(n for n in zf.namelist() if n.endswith("data.pkl"))
            data = zf.read(name)
    except (zipfile.BadZipFile, StopIteration, OSError):
        return None
    if b"_modules" not in data or b"_parameters" not in data:  # the instance dict of every nn.Module has both
        return None
    match = re.search(rb"c([\w.]+)\n(\w+)\n", data)  # the first GLOBAL opcode: the pickled object's class
    return f"{match[1].decode()}.{match[2].decode()}" if match else "an nn.Module"


def load_checkpoint_file(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load`` with ``weights_only=True`` and errors that say what is wrong with the file and how to fix it.

    Never unpickles arbitrary objects: a file whose unpickling would import or call code is refused before
    anything runs.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: the file is corrupt/truncated, holds a whole pickled model, or asks to run code.

    Example:
        >>> load_checkpoint_file("weights.pt")  # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint file {str(path)!r} does not exist (working directory: {os.getcwd()}). "
            "Check the path, or save the weights first with torch.save(model.state_dict(), path)."
        )
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        module = _pickled_module_name(path)
        if module is not None:
            raise CheckpointError(
                f"{path.name} holds a whole pickled model ({module}), not a state_dict; weights_only=True refuses it "
                "because unpickling a model runs code from its class. Fix: where the file is made, save "
                "torch.save(model.state_dict(), path) and load it into a freshly built model. Only if you trust "
                "the file's source: torch.load(path, weights_only=False), then .state_dict()."
            ) from err
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        what = f"import and call {found[1]!r}" if found else "run pickle instructions that plain tensors never need"
        raise CheckpointError(
            f"{path.name} is not a plain weights file: unpickling it would {what}. It was refused and nothing in it "
            "was run. Ask for the weights as a state_dict saved with torch.save(model.state_dict(), path); never load "
            "it with weights_only=False unless you trust whoever made it."
        ) from err
    except Exception as err:  # the unpickler and the zip reader fail in many ways on a damaged file
        raise CheckpointError(
            f"{path.name} ({path.stat().st_size} bytes) is corrupt, truncated or not a PyTorch checkpoint "
            f"({type(err).__name__}: {str(err)[:120]}). Download or save it again; torch.save writes a zip archive."
        ) from err


def _shape(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def _lines(title: str, items: Sequence[str], limit: int = 8) -> list[str]:
    shown = [f"  {title}: {item}" for item in items[:limit]]
    return shown + ([f"  {title}: ... and {len(items) - limit} more"] if len(items) > limit else [])


@dataclass
class LoadReport:
    """What :func:`load_matching` did, key by key.

    Attributes:
        loaded: model keys whose tensors were copied from the source.
        shape_mismatched: key -> (source shape, model shape); not copied.
        missing: model keys absent from the source; they keep their current values.
        unexpected: source keys the model does not have; ignored.
        excluded: model keys skipped on purpose (``exclude=``); they keep their current values.
    """

    loaded: list[str] = field(default_factory=list)
    shape_mismatched: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """True if every tensor that was not excluded on purpose was loaded and nothing was left over."""
        return not (self.shape_mismatched or self.missing or self.unexpected)

    def __repr__(self) -> str:
        head = (
            f"LoadReport: {len(self.loaded)} loaded, {len(self.shape_mismatched)} shape-mismatched, "
            f"{len(self.missing)} missing, {len(self.unexpected)} unexpected, {len(self.excluded)} excluded"
        )
        mism = [f"{k} source {list(s)} vs model {list(m)}" for k, (s, m) in self.shape_mismatched.items()]
        return "\n".join(
            [head]
            + _lines("shape mismatch (kept model's)", mism)
            + _lines("missing (kept model's)", self.missing)
            + _lines("unexpected (ignored)", self.unexpected)
            + _lines("excluded (kept model's)", self.excluded)
        )


def _match(model_sd: Mapping[str, torch.Tensor], source: Mapping[str, torch.Tensor], exclude: Sequence[str]) -> LoadReport:
    report = LoadReport()
    for key, target in model_sd.items():
        if key.startswith(tuple(exclude)):
            report.excluded.append(key)
        elif key not in source:
            report.missing.append(key)
        elif _shape(source[key]) != _shape(target):
            report.shape_mismatched[key] = (_shape(source[key]), _shape(target))
        else:
            report.loaded.append(key)
    report.unexpected = [k for k in source if k not in model_sd and not k.startswith(tuple(exclude))]
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

    Args:
        model: the model to load into (changed in place).
        source: a state_dict, a checkpoint dict nesting one (``state_dict``/``model_state_dict``/``model``),
            a path to a checkpoint file (read with ``weights_only=True``), or another model.
        strict: raise instead of loading in part.
        exclude: key prefixes not to load on purpose, e.g. ``("fc.",)`` for a head you replaced.
        clean: strip ``module.``/``_orig_mod.`` prefixes from the source keys first.
    Returns:
        a :class:`LoadReport`.

    Example:
        >>> from torchvision.models import resnet18
        >>> report = load_matching(resnet18(num_classes=10), resnet18().state_dict())
        >>> report.shape_mismatched
        {'fc.weight': ((1000, 512), (10, 512)), 'fc.bias': ((1000,), (10,))}
    """
    if isinstance(source, (str, os.PathLike)):
        source = load_checkpoint_file(source)
    state_dict = unwrap_checkpoint(source)
    if clean:
        state_dict = clean_state_dict(state_dict)
    report = _match(model.state_dict(), state_dict, exclude)
    if not report.loaded:
        raise IncompleteLoadError(
            f"no tensor matched by name and shape, nothing was loaded. Model keys start {list(model.state_dict())[:3]}, "
            f"source keys start {list(state_dict)[:3]}. If the source keys carry an extra prefix (e.g. 'backbone.'), "
            "strip it first: {k.removeprefix('backbone.'): v for k, v in sd.items()}."
        )
    if strict and not report.complete:
        raise IncompleteLoadError(
            f"strict=True and not every tensor matched, so nothing was loaded.\n{report!r}\n"
            "Fix: pass exclude=(prefix, ...) for layers you replaced on purpose (e.g. exclude=('fc.',)), "
            "or strict=False and assert on the returned report."
        )
    result = model.load_state_dict({k: state_dict[k] for k in report.loaded}, strict=False)
    assert not result.unexpected_keys, result.unexpected_keys  # we only passed keys of the model itself
    return report


def adapt_input_conv(conv: nn.Conv2d | torch.Tensor, in_chans: int) -> nn.Conv2d | torch.Tensor:
    """Adapt a conv pretrained on RGB input to ``in_chans`` input channels, keeping its pretrained filters.

    1 channel: the three colour filters are summed, so a grey image gives the same response as that grey
    image copied into R, G and B. More channels: the RGB filters are repeated cyclically and scaled by
    ``3 / in_chans`` to keep the output's scale (the same rule as timm's ``adapt_input_conv``).

    Args:
        conv: an ``nn.Conv2d`` with 3 input channels, or its weight ``(out, 3, kh, kw)``.
        in_chans: number of input channels wanted.
    Returns:
        a new ``nn.Conv2d`` (same settings, bias copied) or a new weight tensor, like the input.

    Example:
        >>> adapt_input_conv(nn.Conv2d(3, 8, 3), 1).weight.shape
        torch.Size([8, 1, 3, 3])
    """
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
        in_chans, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
        bias=conv.bias is not None, padding_mode=conv.padding_mode,
    ).to(device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        out.weight.copy_(new)
        if conv.bias is not None:
            out.bias.copy_(conv.bias)
    out.weight.requires_grad_(conv.weight.requires_grad)
    if conv.bias is not None:
        out.bias.requires_grad_(conv.bias.requires_grad)
    return out
