"""TinyResNet: the course's own small ResNet and its pretrained weights, published like torchvision's.

The network is built from torchvision's public ``BasicBlock`` with its own short ``forward``: one block per stage,
widths 32-64-128-256 and a stem made for 32x32 inputs (3x3 stride-1 conv, then a 2x2 max-pool), so layer4 still
sees a 2x2 map. Module names are torchvision's (``conv1, bn1, relu, maxpool, layer1..layer4, avgpool,
fc``): every freezing, head-replacement and partial-loading helper works on it and on ``resnet18`` alike.

``TinyResNet_Weights.LETTERS_V1`` (= ``DEFAULT``) was pretrained by ``python -m transferlab.pretrain`` on the
source task of :mod:`transferlab.data` (52 printed letters in 32x32 scenes). The checkpoint ships inside the
package (``transferlab/weights/``), so loading needs no network.

Example:
    >>> weights = TinyResNet_Weights.DEFAULT
    >>> model = tiny_resnet(weights=weights).eval()
    >>> preprocess = weights.transforms()
    >>> len(weights.meta["categories"])
    52
"""

from __future__ import annotations

import json
import os
from functools import partial
from typing import Any

import torch
from torch import nn
from torchvision.models import Weights, WeightsEnum
from torchvision.models.resnet import BasicBlock, conv1x1
from torchvision.transforms import Normalize

from transferlab.loading import clean_state_dict, load_matching
from transferlab.serialization import (
    IncompleteLoadError,
    WeightsNotFoundError,
    check_sha256,
    load_state_dict_file,
    verify_weights,
)

__all__ = [
    "NORM_MEAN",
    "NORM_STD",
    "WEIGHTS_DIR",
    "TinyResNet",
    "TinyResNet_Weights",
    "tiny_resnet",
    "tiny_resnet_from_file",
]

WEIGHTS_DIR = os.path.join(os.path.dirname(__file__), "weights")
_CHECKPOINT = os.path.join(WEIGHTS_DIR, "tiny_resnet_letters_v1.pt")
_META = os.path.join(WEIGHTS_DIR, "tiny_resnet_letters_v1.json")
# Per-channel mean and std of source scenes at full difficulty (measured on 20,800 images: 0.50 and 0.25 to two digits).
NORM_MEAN = (0.50, 0.50, 0.50)
NORM_STD = (0.25, 0.25, 0.25)
REBUILD_COMMAND = "python -m transferlab.pretrain"


def _stage(inplanes: int, planes: int, stride: int) -> nn.Sequential:
    """One stage of a single ``BasicBlock``, with the 1x1 projection shortcut where the shape changes.

    The shortcut is built before the block, as torchvision's ``ResNet._make_layer`` does, so a seeded random
    initialisation draws the same numbers in the same order.
    """
    downsample = None
    if stride != 1 or inplanes != planes:
        downsample = nn.Sequential(conv1x1(inplanes, planes, stride), nn.BatchNorm2d(planes))
    return nn.Sequential(BasicBlock(inplanes, planes, stride, downsample))


class TinyResNet(nn.Module):
    """A ResNet with one torchvision ``BasicBlock`` per stage, for 32x32 inputs.

    The module names and state-dict keys are those of ``torchvision.models.resnet18`` (``conv1, bn1, relu,
    maxpool, layer1..layer4, avgpool, fc``), so the same freezing, head-replacement and loading code works on both.

    Args:
        num_classes: size of the ``fc`` output.
        widths: channels of layer1..layer4.
    """

    def __init__(self, num_classes: int = 52, widths: tuple[int, int, int, int] = (32, 64, 128, 256)) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], kernel_size=3, stride=1, padding=1, bias=False)  # resnet18: 7x7, stride 2
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=2, stride=2)  # 32x32 -> 16x16
        self.layer1 = _stage(widths[0], widths[0], stride=1)
        self.layer2 = _stage(widths[0], widths[1], stride=2)
        self.layer3 = _stage(widths[1], widths[2], stride=2)
        self.layer4 = _stage(widths[2], widths[3], stride=2)  # 2x2
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(widths[3], num_classes)
        for m in self.modules():  # torchvision's ResNet initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _read_meta() -> dict[str, Any]:
    """Metadata written next to the checkpoint by the build that produced it."""
    if not os.path.exists(_META):
        return {"categories": [], "_metrics": {}, "recipe": f"not built yet: run `{REBUILD_COMMAND}`"}
    with open(_META, encoding="utf-8") as f:
        return json.load(f)


class TinyResNet_Weights(WeightsEnum):
    """Pretrained weights for :func:`tiny_resnet`; ``.get_state_dict()`` reads the file shipped in the package."""

    LETTERS_V1 = Weights(
        url=_CHECKPOINT, transforms=partial(Normalize, mean=NORM_MEAN, std=NORM_STD), meta=_read_meta()
    )
    DEFAULT = LETTERS_V1

    def get_state_dict(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """The shipped checkpoint, its SHA-256 checked before it is unpickled, read with ``weights_only=True``."""
        if not os.path.exists(self.url):
            raise WeightsNotFoundError(
                f"pretrained weights not found at {self.url}; rebuild them with "
                f"`{REBUILD_COMMAND}` (about 75 s on a 2-core CPU)"
            )
        if "sha256" in self.meta:  # written by the build, next to the checkpoint
            check_sha256(
                self.url,
                self.meta["sha256"],
                fix=f"reinstall transferlab (pip install --force-reinstall "
                f"transferlab), or rebuild the weights with `{REBUILD_COMMAND}`.",
            )
        return load_state_dict_file(self.url)


def tiny_resnet(weights: TinyResNet_Weights | str | None = None, num_classes: int | None = None) -> TinyResNet:
    """Build a TinyResNet, optionally with pretrained weights (like ``torchvision.models.resnet18``).

    Args:
        weights: ``None`` (random init) or ``TinyResNet_Weights.DEFAULT`` / ``"DEFAULT"`` / ``"LETTERS_V1"``.
        num_classes: output size. With weights it must be ``None`` or match the weights' categories: to train on a
            new task, load the weights first, then replace the head (``model.fc = nn.Linear(256, n)``).

    Returns:
        The model (in training mode, as torchvision returns it).

    Example:
        >>> model = tiny_resnet(weights=None, num_classes=10)
        >>> model(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """
    weights = verify_weights(TinyResNet_Weights, weights, "tiny_resnet")
    if weights is None:
        return TinyResNet(num_classes=52 if num_classes is None else num_classes)
    n_categories = len(weights.meta["categories"])
    if num_classes is not None and num_classes != n_categories:
        raise ValueError(
            f"num_classes={num_classes} does not match the {n_categories} categories of {weights}; build the model "
            f"with num_classes=None, then replace its head for your task: "
            f"model.fc = nn.Linear(model.fc.in_features, {num_classes})"
        )
    model = TinyResNet(num_classes=n_categories)
    model.load_state_dict(weights.get_state_dict())
    return model


def tiny_resnet_from_file(path: str | os.PathLike, num_classes: int | None = None) -> TinyResNet:
    """A TinyResNet with the weights of a state_dict or checkpoint file, then (optionally) a fresh head.

    The one path from a file of TinyResNet weights (yours, e.g. from ``python -m transferlab.pretrain --out``) to a
    model: read with ``weights_only=True`` (``{"model": ...}`` unwrapped, ``module.`` prefixes removed), the model
    built with as many classes as the file's head has, loaded all or nothing; then, if ``num_classes`` is given,
    ``fc`` is replaced by a new ``nn.Linear(256, num_classes)``. For the shipped weights use
    ``tiny_resnet(weights=TinyResNet_Weights.DEFAULT)`` (SHA-256 checked).

    Raises:
        WeightsNotFoundError, WeightsFileError: no file, or not a plain weights file.
        IncompleteLoadError: the file is not TinyResNet's (no ``fc.weight``) or does not fit it; nothing is loaded.

    Example:
        >>> tiny_resnet_from_file(TinyResNet_Weights.DEFAULT.url, num_classes=10).fc
        Linear(in_features=256, out_features=10, bias=True)
    """
    state = clean_state_dict(load_state_dict_file(path))
    if "fc.weight" not in state:
        raise IncompleteLoadError(
            f"{path} is not a TinyResNet state_dict (no 'fc.weight'; found {list(state)[:3]}...): pass a file saved "
            "from tiny_resnet() (model.state_dict()), or use tiny_resnet(weights=TinyResNet_Weights.DEFAULT)."
        )
    model = TinyResNet(num_classes=state["fc.weight"].shape[0])
    try:
        load_matching(model, state, strict=True, clean=False)  # all or nothing, with a report of what did not fit
    except IncompleteLoadError as err:
        misfit = IncompleteLoadError(f"{path} does not fit TinyResNet, so nothing was loaded:\n{err.report!r}")
        misfit.report = err.report
        raise misfit from err
    if num_classes is not None:
        model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model
