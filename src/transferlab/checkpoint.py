"""Training checkpoints: save and load model, optimizer, scheduler, epoch and RNG states.

Writes are atomic (:func:`transferlab.serialization.save_file`: a temporary file in the same folder, flushed to
disk, then ``os.replace``), so a save that is interrupted leaves the previous checkpoint intact. Loading always
goes through :func:`transferlab.serialization.load_file` (``weights_only=True``): every RNG state is stored as
tensors, ints and lists, so no pickled code is ever needed (or run). ``load_checkpoint`` takes the model first,
like every function that loads into a model.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from transferlab.serialization import WeightsFileError, load_file, save_file

__all__ = ["get_rng_state", "load_checkpoint", "save_checkpoint", "set_rng_state"]

REQUIRED_KEYS = ("model", "epoch", "rng")


def get_rng_state(generator: torch.Generator | None = None) -> dict[str, Any]:
    """The state of Python's, NumPy's and PyTorch's random generators, in ``weights_only``-loadable types.

    ``generator`` (e.g. a DataLoader's shuffling generator) is captured too when given.
    """
    version, mt, gauss = random.getstate()
    _, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": version, "state": list(mt), "gauss": gauss},
        "numpy": {
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    if generator is not None:
        state["generator"] = generator.get_state()
    return state


def set_rng_state(state: dict[str, Any], generator: torch.Generator | None = None) -> None:
    """Restore the generators captured by `get_rng_state` (and ``generator``, if it was captured)."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    npy = state["numpy"]
    keys = npy["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, npy["pos"], npy["has_gauss"], npy["cached_gaussian"]))
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    if generator is not None:
        if "generator" not in state:
            raise WeightsFileError(
                "a generator was passed but the checkpoint holds no generator state; "
                "save it with save_checkpoint(..., generator=your_generator)."
            )
        generator.set_state(state["generator"].cpu())


def save_checkpoint(
    model: nn.Module,
    path: str | os.PathLike,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    *,
    epoch: int = 0,
    generator: torch.Generator | None = None,
    **extra: Any,
) -> Path:
    """Atomically write ``{model, optimizer, scheduler, epoch, rng, **extra}`` to ``path``.

    The object comes first, as in ``torch.save(obj, f)``; the arguments mirror :func:`load_checkpoint`.

    Args:
        epoch: the number of epochs completed (resume with ``start_epoch=epoch``).
        generator: a DataLoader's shuffling generator, if it has one, so shuffling resumes exactly.
        extra: more weights_only-loadable values (numbers, strings, tensors, lists, dicts), e.g. ``best_acc=0.9``.

    Returns:
        the path written.

    Example:
        >>> save_checkpoint(model, "ckpt.pt", optimizer, scheduler, epoch=5, best_acc=0.8)  # doctest: +SKIP
    """
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"save_checkpoint(model, path, ...) takes the model first (as torch.save(obj, f)), got a "
            f"{type(model).__name__}; write save_checkpoint(model, {str(model)!r}, ...)."
        )
    checkpoint = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "epoch": int(epoch),
        "rng": get_rng_state(generator),
        **extra,
    }
    return save_file(checkpoint, path)


def _read(path: Path, map_location: Any) -> dict[str, Any]:
    checkpoint = load_file(path, map_location)  # weights_only=True, with clear errors for bad files
    if not isinstance(checkpoint, dict) or not all(k in checkpoint for k in REQUIRED_KEYS):
        found = sorted(checkpoint)[:5] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise WeightsFileError(
            f"{path} is not a checkpoint dict with keys {REQUIRED_KEYS} (found {found}). "
            "If it is a bare state_dict, load it with transferlab.loading.load_matching(model, path, strict=True) "
            "or model.load_state_dict(transferlab.serialization.load_state_dict_file(path))."
        )
    return checkpoint


def load_checkpoint(
    model: nn.Module,
    path: str | os.PathLike,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    *,
    map_location: Any = "cpu",
    generator: torch.Generator | None = None,
    restore_rng: bool = True,
) -> dict[str, Any]:
    """Load a checkpoint written by `save_checkpoint` into ``model`` (strictly) and the optional objects.

    Args:
        map_location: where tensors go (``"cpu"`` reads a GPU checkpoint on a CPU-only machine).
        generator: a DataLoader's shuffling generator whose state was saved with the checkpoint.
        restore_rng: also restore the Python/NumPy/PyTorch random generators (exact resume).

    Returns:
        the whole checkpoint dict (``checkpoint["epoch"]`` is where to continue; extras are there too).

    Raises:
        WeightsNotFoundError: no file at ``path`` (a ``FileNotFoundError``).
        WeightsFileError: the file is corrupt, holds pickled objects, or is not a checkpoint dict.

    Example:
        >>> ckpt = load_checkpoint(model, "ckpt.pt", optimizer, scheduler)  # doctest: +SKIP
        >>> start_epoch = ckpt["epoch"]  # doctest: +SKIP
    """
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"load_checkpoint takes the model first: load_checkpoint(model, path, optimizer, scheduler); got a "
            f"{type(model).__name__} first."
        )
    checkpoint = _read(Path(path), map_location)
    model.load_state_dict(checkpoint["model"])
    for name, target in (("optimizer", optimizer), ("scheduler", scheduler)):
        if target is not None:
            if checkpoint.get(name) is None:
                raise WeightsFileError(f"{path} has no {name} state; pass {name}=None or save it with the checkpoint.")
            target.load_state_dict(checkpoint[name])
    if restore_rng:
        set_rng_state(checkpoint["rng"], generator)
    return checkpoint
