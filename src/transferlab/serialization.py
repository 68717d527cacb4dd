"""The weights file: atomic writes, safe reads with clear errors, and the one error hierarchy of the package.

Every module that writes or reads weights goes through here: :func:`save_file` never leaves a corrupt file behind,
:func:`load_file` never runs pickled code (``torch.load(..., weights_only=True)``) and says what is wrong with a bad
file and how to fix it. The errors:

- :class:`WeightsError` (a ``RuntimeError``): the base; ``except WeightsError`` catches every weights problem.
- :class:`WeightsFileError`: the file exists but is unsafe, corrupt or not what was expected.
- :class:`WeightsNotFoundError` (also a ``FileNotFoundError``): no such file, or weights unavailable offline.
- :class:`IncompleteLoadError`: a load that would fill a model only in part; nothing was loaded.

Example:
    >>> path = save_file({"w": torch.ones(2)}, "weights.pt")  # doctest: +SKIP
    >>> load_state_dict_file(path)  # doctest: +SKIP
    OrderedDict({'w': tensor([1., 1.])})
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import sys
import tempfile
import warnings
import zipfile
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import IO, Any, TypeVar

import torch
from torch import nn
from torchvision.models import WeightsEnum

__all__ = [
    "NESTED_KEYS",
    "IncompleteLoadError",
    "WeightsDeviceError",
    "WeightsError",
    "WeightsFileError",
    "WeightsNotFoundError",
    "atomic_open",
    "check_map_location",
    "check_sha256",
    "file_sha256",
    "load_file",
    "load_state_dict_file",
    "save_file",
    "unsafe_globals",
    "unwrap_checkpoint",
    "verify_weights",
]

# Keys under which training scripts commonly nest the model's state_dict inside a checkpoint dict.
NESTED_KEYS = ("state_dict", "model_state_dict", "model")


class WeightsError(RuntimeError):
    """Base of every weights problem in transferlab; the message says what is wrong and what to do."""


class WeightsFileError(WeightsError):
    """The file exists but is unsafe to unpickle, corrupt, or not what was expected (e.g. not a state_dict)."""


class WeightsNotFoundError(WeightsError, FileNotFoundError):
    """No weights file at the path, or the weights are not in the cache and cannot be downloaded now."""


class WeightsDeviceError(WeightsError):
    """``map_location`` names a device this machine does not have (e.g. ``"cuda"`` on a CPU-only laptop)."""


class IncompleteLoadError(WeightsError):
    """A load would have filled the model only in part, so nothing was loaded; ``.report`` says what did not fit."""

    report: Any = None  # the LoadReport of transferlab.loading, when the error comes from load_matching


@contextmanager
def atomic_open(path: str | os.PathLike) -> Iterator[IO[bytes]]:
    """Write ``path`` all or nothing: yield a temporary file next to it, then fsync and ``os.replace`` it onto ``path``.

    If the block raises (or the process dies), ``path`` keeps its previous content and the temporary file is removed.

    Example:
        >>> with atomic_open("notes.txt") as f:  # doctest: +SKIP
        ...     f.write(b"all or nothing")
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the rename makes them visible
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes owner-only files; give the usual permissions
        os.replace(tmp, path)  # atomic on POSIX and Windows: readers see the old file or the new one
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_file(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj, path)``, atomically; the same object always gives the same bytes, whatever the path.

    The archive is built in memory first, so it does not embed the (temporary) file's name, and a failure while
    pickling leaves ``path`` as it was. Missing parent folders are created.

    Example:
        >>> save_file(model.state_dict(), "weights.pt")  # doctest: +SKIP
        PosixPath('weights.pt')
    """
    path = Path(path)
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path) as f:
        f.write(buffer.getvalue())
    return path


def _resolve(name: str) -> Any:
    """The object ``name`` ("module.Class") names in an already imported module, else None; nothing is imported."""
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        obj: Any = sys.modules.get(".".join(parts[:cut]))
        for attr in parts[cut:]:
            obj = getattr(obj, attr, None)
        if obj is not None:
            return obj
    return None


def _is_module_class(obj: Any) -> bool:
    return isinstance(obj, type) and issubclass(obj, nn.Module)


def unsafe_globals(path: str | os.PathLike) -> list[str] | None:
    """The globals (``"module.name"``) that unpickling ``path`` would import and ``weights_only=True`` refuses.

    Asks torch (``torch.serialization.get_unsafe_globals_in_checkpoint``, which reads the pickle without running
    it), sorted so that classes of a whole pickled model come first: those outside ``torch.nn`` (the model's own),
    then torch's containers and layers, then the rest. ``None`` where torch cannot say: a raw pickle or a file in
    the legacy (pre-1.6) ``torch.save`` format, which is not a zip archive.

    Example:
        >>> unsafe_globals("model_saved_with_torch_save_model.pt")  # doctest: +SKIP
        ['torchvision.models.resnet.BasicBlock', 'torchvision.models.resnet.ResNet', ...]
    """
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except (ValueError, RuntimeError, OSError):  # not a torch.save zip archive, or one torch cannot open
        return None

    def rank(name: str) -> tuple[int, str]:
        if _is_module_class(_resolve(name)):
            if not name.startswith("torch.nn."):
                return (0, name)
            return (1 if name.startswith("torch.nn.modules.container.") else 2, name)
        return (3, name)

    return sorted(names, key=rank)


def _check_path(path: Path) -> None:
    if path.is_dir():
        inside = sorted(p.name for p in path.iterdir() if p.suffix in (".pt", ".pth", ".bin", ".ckpt"))[:5]
        hint = f"It holds {inside}: pass one of them, e.g. {path / inside[0]}" if inside else "Pass a file inside it"
        raise WeightsFileError(f"{str(path)!r} is a directory, not a weights file. {hint}.")
    if not path.is_file():
        raise WeightsNotFoundError(
            f"weights file {str(path)!r} does not exist (working directory: {os.getcwd()}). "
            "Check the path, or save the weights first with torch.save(model.state_dict(), path)."
        )


def _refusal(path: Path) -> WeightsFileError:
    """The error for a file that ``weights_only=True`` refused, naming what it would have imported."""
    names = unsafe_globals(path)
    if names is None:
        return WeightsFileError(
            f"{path.name} is not a torch.save zip archive (a raw pickle, or the legacy format of PyTorch before 1.6) "
            "and weights_only=True refused what it would import; nothing in it was run. Ask for the weights as a "
            "state_dict saved with a current torch.save(model.state_dict(), path); never load it with "
            "weights_only=False unless you trust whoever made it."
        )
    shown = ", ".join(repr(n) for n in names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    models = [n for n in names if _is_module_class(_resolve(n)) or (_resolve(n) is None and "." in n)]
    if models:  # a class of a module not imported here is most likely the user's own model
        own = [m for m in models if not m.startswith("torch.nn.")] or models[:1]
        return WeightsFileError(
            f"{path.name} holds a whole pickled model ({', '.join(own)}), not a state_dict; weights_only=True "
            f"refuses it because unpickling it would import {shown}. Fix: where the file is made, save "
            "torch.save(model.state_dict(), path) and load it into a freshly built model. Only if you trust "
            "the file's source: torch.load(path, weights_only=False), then .state_dict()."
        )
    if names:
        return WeightsFileError(
            f"{path.name} is not a plain weights file: unpickling it would import and call {shown}. It was refused "
            "and nothing in it was run. Ask for the weights as a state_dict saved with "
            "torch.save(model.state_dict(), path); never load it with weights_only=False unless you trust whoever "
            "made it."
        )
    return _corrupt(path, "it uses pickle instructions that a torch.save file of tensors never holds")


def _corrupt(path: Path, reason: str) -> WeightsFileError:
    return WeightsFileError(
        f"{path.name} ({path.stat().st_size} bytes) is corrupt, truncated or not a PyTorch checkpoint ({reason}); "
        "nothing in it was run. Download or save it again; torch.save writes a zip archive."
    )


def _damage(path: Path) -> str | None:
    """Why a file cannot be a whole torch.save archive, found without unpickling anything; None if it may be one.

    A zip archive keeps its table of contents at the end (lost when a download or copy is cut short) and a CRC-32
    of every entry (torch.save writes them), so a byte changed after saving is found before torch reads it.
    """
    with path.open("rb") as f:
        head = f.read(4)
    if not head:
        return "the file is empty"
    if not zipfile.is_zipfile(path):
        return "a zip archive cut short: its table of contents at the end is missing" if head == b"PK\x03\x04" else None
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            if info.CRC == 0 and info.file_size > 0:
                continue  # saved with torch.serialization.set_crc32_options(False): nothing to compare
            try:
                with zf.open(info) as entry:
                    while entry.read(1 << 24):  # the CRC-32 is compared when the entry has been read to its end
                        pass
            except (zipfile.BadZipFile, EOFError, OSError):
                return f"its entry {info.filename} does not match the checksum written with it: changed after saving"
    return None


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes, read in 1 MiB chunks (``hashlib.file_digest`` needs Python 3.11).

    Example:
        >>> file_sha256(os.devnull)[:16]
        'e3b0c44298fc1c14'
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(partial(f.read, 1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_sha256(path: str | os.PathLike, expected: str, fix: str) -> None:
    """Refuse a file whose SHA-256 is not ``expected``, before anything reads (or unpickles) it.

    Raises:
        WeightsFileError: the digest differs; the message names the file, both digests and ``fix``.
    """
    path = Path(path)
    found = file_sha256(path)
    if found != expected:
        raise WeightsFileError(
            f"{path} is not the released file: its SHA-256 is {found[:16]}..., expected {expected[:16]}... "
            f"({path.stat().st_size} bytes). It was changed, truncated or damaged, and was not read. Fix: {fix}"
        )


def check_map_location(map_location: Any) -> None:
    """Refuse a ``map_location`` naming a device this machine lacks, with a device error (not "corrupt file").

    Example:
        >>> check_map_location("cpu")
    """
    if not isinstance(map_location, (str, torch.device)):
        return  # a dict or a function: torch applies it, and says itself what does not fit
    device = torch.device(map_location)
    missing = (device.type == "cuda" and not torch.cuda.is_available()) or (
        device.type == "mps" and not torch.backends.mps.is_available()
    )
    if missing:
        raise WeightsDeviceError(
            f"map_location={str(map_location)!r} asks for a {device.type.upper()} device, which this machine does "
            "not have; nothing was read. Fix: load onto the CPU (map_location='cpu') or onto whatever is there: "
            "map_location=transferlab.env.get_device()."
        )


E = TypeVar("E", bound=WeightsEnum)


def verify_weights(enum: type[E], weights: E | str | None, builder: str) -> E | None:
    """``enum.verify(weights)`` with one error shape for every builder: the name, the choices, an example.

    Example:
        >>> from transferlab.models import TinyResNet_Weights
        >>> verify_weights(TinyResNet_Weights, "DEFAULT", "tiny_resnet")
        TinyResNet_Weights.LETTERS_V1
    """
    if isinstance(weights, str) and weights != "DEFAULT" and weights not in enum.__members__:
        choices = ", ".join(["None", *(repr(name) for name in enum.__members__)])
        raise ValueError(
            f"unknown weights {weights!r} for {builder}; use one of {choices} or a {enum.__name__} member, "
            f"e.g. {builder}(weights={enum.__name__}.DEFAULT)"
        )
    if weights is not None and not isinstance(weights, (str, enum)):
        raise ValueError(
            f"{weights!r} are not weights for {builder}; use a {enum.__name__} member, e.g. "
            f"{builder}(weights={enum.__name__}.DEFAULT), or None for random initialisation"
        )
    return enum.verify(weights)


def load_file(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with errors that say what is wrong with the file and how to fix it.

    Never unpickles arbitrary objects: a file whose unpickling would import or call code is refused before
    anything runs, and the message names what it would have imported. A truncated archive, or one changed
    after it was saved (its CRC-32 checksums no longer match), is refused before torch reads it. torch's
    warning about an old pickle protocol is not passed on: the refusal (or the result) says all there is.

    Raises:
        WeightsNotFoundError: no such file.
        WeightsFileError: a directory; a corrupt, truncated or tampered file; a whole pickled model; a pickle
            that would import code.
        WeightsDeviceError: ``map_location`` names a device this machine does not have.

    Example:
        >>> load_file("weights.pt")  # doctest: +SKIP
    """
    path = Path(path)
    _check_path(path)
    check_map_location(map_location)
    damage = _damage(path)
    if damage:
        raise _corrupt(path, damage)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise _refusal(path) from err
    except Exception as err:  # the unpickler and the zip reader fail in many ways on a damaged file
        raise _corrupt(path, f"{type(err).__name__}: {str(err).splitlines()[0][:120] if str(err) else ''}") from err


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def unwrap_checkpoint(checkpoint: Any) -> Mapping[str, torch.Tensor]:
    """The state_dict inside ``checkpoint``: itself, or nested under ``state_dict``/``model_state_dict``/``model``.

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
        "expected a state_dict (a mapping of names to tensors) or a checkpoint dict holding one, "
        f"got {type(obj).__name__}."
    )


def load_state_dict_file(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> OrderedDict[str, torch.Tensor]:
    """Read a state_dict from ``path`` safely (:func:`load_file`), unwrapping a checkpoint dict that nests one.

    Raises:
        WeightsNotFoundError: no such file.
        WeightsFileError: the file is unsafe or damaged (see :func:`load_file`), or holds no flat mapping of
            names to tensors.

    Example:
        >>> sd = load_state_dict_file("checkpoint.pt")  # {"epoch": 3, "state_dict": {...}} gives the inner dict
        ... # doctest: +SKIP
    """
    path = Path(path)
    try:
        state_dict = unwrap_checkpoint(load_file(path, map_location))
    except ValueError as err:
        raise WeightsFileError(f"{path.name} does not hold a state_dict: {err}") from err
    bad = [str(k) for k, v in state_dict.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise WeightsFileError(f"{path.name} is not a flat state_dict of named tensors: entries {bad[:3]} are not.")
    return OrderedDict(state_dict)
