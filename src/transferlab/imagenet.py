"""The ImageNet track: torchvision's pretrained weights from the local cache or, when online, the network.

torchvision keeps downloaded weights in ``$TORCH_HOME/hub/checkpoints/`` under the file name at the end of
``weights.url``. These helpers look there first, check that the download host answers before they try the
network, and otherwise fail within seconds with a message that says how to get the file. Files are always
read through :mod:`transferlab.serialization` (``weights_only=True``), so no pickled code runs, and loaded
with :func:`transferlab.loading.load_matching` (``strict=True``), so nothing is loaded in part.

Example:
    >>> model = imagenet_model("resnet18")                        # doctest: +SKIP
    >>> model = imagenet_or_random("vgg16", track="offline")       # random weights, no file needed
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn
from torchvision.models import WeightsEnum, get_model, get_model_weights

from transferlab.env import network_available
from transferlab.loading import load_matching
from transferlab.serialization import (
    IncompleteLoadError,
    WeightsFileError,
    WeightsNotFoundError,
    load_state_dict_file,
)

__all__ = [
    "TRACKS",
    "cached_weights_path",
    "get_track",
    "imagenet_model",
    "imagenet_or_random",
    "imagenet_state_dict",
    "resolve_weights",
]

TRACKS = ("offline", "imagenet")
TRACK_ENV = "TRANSFERLAB_TRACK"


def get_track(default: str = "offline") -> str:
    """Return the track chosen by the environment variable ``TRANSFERLAB_TRACK`` (else ``default``).

    Example:
        >>> get_track()  # with TRANSFERLAB_TRACK unset
        'offline'
    """
    track = os.environ.get(TRACK_ENV, default).strip().lower()
    if track not in TRACKS:
        raise ValueError(f"{TRACK_ENV}={track!r} is not a track; use one of {TRACKS}.")
    return track


def resolve_weights(name: str, weights: str | WeightsEnum = "DEFAULT") -> WeightsEnum:
    """Turn ``"DEFAULT"``, a member name like ``"IMAGENET1K_V2"`` or an enum member into ``name``'s weights.

    Example:
        >>> resolve_weights("resnet18")
        ResNet18_Weights.IMAGENET1K_V1
    """
    try:
        enum = get_model_weights(name)
    except ValueError as error:
        raise ValueError(f"unknown model {name!r}; see torchvision.models.list_models() for the names.") from error
    if isinstance(weights, WeightsEnum):
        if not isinstance(weights, enum):
            raise ValueError(f"{weights} are not weights of {name!r}; use one of {[str(w) for w in enum]}.")
        return weights
    if weights == "DEFAULT":
        return enum["DEFAULT"]
    try:
        return enum[weights]
    except KeyError:
        raise ValueError(f"{name!r} has no weights {weights!r}; use one of {[w.name for w in enum]}.") from None


def cached_weights_path(weights: WeightsEnum) -> Path:
    """Where torchvision caches ``weights``: ``$TORCH_HOME/hub/checkpoints/<file name of weights.url>``.

    Example:
        >>> from torchvision.models import ResNet18_Weights
        >>> cached_weights_path(ResNet18_Weights.DEFAULT).name
        'resnet18-f37072fd.pth'
    """
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)


def _unavailable_message(weights: WeightsEnum, path: Path, reason: str) -> str:
    return (
        f"{weights} are not in the cache: expected the file {path}, and {reason}. "
        f"To get it there: run this once while online (it downloads {weights.url}), "
        f"or copy the file {path.name} from a machine that has it into {path.parent}/. "
        f"Or stay on the offline track (TRANSFERLAB_TRACK=offline)."
    )


def _download(weights: WeightsEnum, path: Path, progress: bool) -> None:
    """Download ``weights.url`` to ``path`` (torch.hub writes a temporary file and moves it: all or nothing), checking
    the first digits of its SHA-256 that torchvision puts in the file name."""
    found = torch.hub.HASH_REGEX.search(path.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.hub.download_url_to_file(
        weights.url, str(path), hash_prefix=found.group(1) if found else None, progress=progress
    )


def imagenet_state_dict(
    weights: WeightsEnum, *, allow_download: bool = True, timeout: float = 2.0, progress: bool = True
) -> OrderedDict[str, torch.Tensor]:
    """Load the state_dict of torchvision ``weights`` from the cache, downloading it only when reachable.

    Args:
        weights: a torchvision weights enum member, e.g. ``ResNet18_Weights.IMAGENET1K_V1``.
        allow_download: if False, never use the network (behaves as if offline).
        timeout: seconds to wait for the download host before giving up.
        progress: show a progress bar while downloading.
    Returns:
        The state_dict (tensors on the CPU), read by :func:`transferlab.serialization.load_state_dict_file`.
    Raises:
        WeightsNotFoundError: the file is absent and cannot be downloaded (raised within ``timeout`` s).
        WeightsFileError: the cached file is unsafe, corrupt or not a state_dict.
    """
    path = cached_weights_path(weights)
    if not path.is_file():
        if not allow_download:
            raise WeightsNotFoundError(_unavailable_message(weights, path, "downloading is switched off"))
        if not network_available(timeout=timeout):
            raise WeightsNotFoundError(_unavailable_message(weights, path, "the network is not reachable"))
        try:
            _download(weights, path, progress)
        except Exception as error:
            raise WeightsNotFoundError(_unavailable_message(weights, path, f"the download failed ({error})")) from error
    try:
        return load_state_dict_file(path)
    except WeightsFileError as error:
        raise WeightsFileError(
            f"cannot read {path} as {weights}: {error} Delete the file, then download it again or copy a good copy "
            f"of {path.name} there."
        ) from error


def imagenet_model(name: str, weights: str | WeightsEnum = "DEFAULT", **load_kwargs) -> nn.Module:
    """Build torchvision model ``name`` with its ImageNet ``weights`` (cache first, network if reachable).

    Every tensor must fit: nothing is loaded in part (``load_matching(..., strict=True)``; BatchNorm counters
    that old torchvision files lack are filled in, as PyTorch does).

    Args:
        name: a torchvision model name, e.g. ``"resnet18"``, ``"resnet50"``, ``"vgg16"``.
        weights: ``"DEFAULT"``, a member name such as ``"IMAGENET1K_V2"``, or an enum member.
        **load_kwargs: passed to :func:`imagenet_state_dict` (``allow_download``, ``timeout``, ``progress``).
    Returns:
        The model (in train mode, as torchvision returns it). Get its preprocessing from
        ``resolve_weights(name, weights).transforms()``.
    Raises:
        WeightsNotFoundError: not in the cache and not downloadable now.
        WeightsFileError: the file is unsafe or corrupt.
        IncompleteLoadError: the file does not fit the model (``.report`` says what), as from every builder.
    """
    weights = resolve_weights(name, weights)
    state_dict = imagenet_state_dict(weights, **load_kwargs)
    model = get_model(name, weights=None, num_classes=len(weights.meta["categories"]))
    try:
        load_matching(model, state_dict, strict=True, clean=False)
    except IncompleteLoadError as error:
        misfit = IncompleteLoadError(
            f"{cached_weights_path(weights)} does not fit {name!r}, so nothing was loaded:\n{error.report!r}\n"
            "Delete the file, then download it again or copy the right file there."
        )
        misfit.report = error.report
        raise misfit from error
    return model


def imagenet_or_random(name: str, *, track: str | None = None, **load_kwargs) -> nn.Module:
    """The model a notebook uses on ``track``: torchvision's random init offline, ImageNet weights on ``"imagenet"``.

    The offline track gives torchvision's random initialisation (no file needed): for architecture-only lessons.

    Args:
        name: a torchvision model name.
        track: ``"offline"`` or ``"imagenet"``; default :func:`get_track` (the ``TRANSFERLAB_TRACK`` variable).
        **load_kwargs: passed to :func:`imagenet_model` on the imagenet track.

    Example:
        >>> imagenet_or_random("resnet18", track="offline").fc
        Linear(in_features=512, out_features=1000, bias=True)
    """
    track = get_track() if track is None else track
    if track not in TRACKS:
        raise ValueError(f"track {track!r} is not one of {TRACKS}.")
    if track == "imagenet":
        return imagenet_model(name, **load_kwargs)
    return get_model(name, weights=None)
