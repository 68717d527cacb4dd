"""Reproducibility, device choice and an environment report for the course."""

from __future__ import annotations

import os
import platform
import random
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version

import numpy as np
import torch

__all__ = [
    "EnvReport",
    "environment_report",
    "get_device",
    "network_available",
    "num_threads",
    "seed_everything",
    "to_device",
]

# A host that serves torchvision's pretrained weights: reaching it means the ImageNet track can download.
WEIGHTS_HOST = ("download.pytorch.org", 443)


def seed_everything(seed: int = 0, deterministic: bool = True) -> None:
    """Seed Python, NumPy and PyTorch (all devices); optionally ask for deterministic kernels.

    Example:
        >>> seed_everything(0); a = torch.rand(2); seed_everything(0); torch.equal(a, torch.rand(2))
        True
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    if deterministic:
        # cuBLAS needs this workspace setting to be deterministic on CUDA >= 10.2.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def get_device(prefer: str | None = None) -> torch.device:
    """Return the best available device: ``cuda``, then ``mps``, then ``cpu``.

    ``prefer`` (or the environment variable ``TRANSFERLAB_DEVICE``) forces one, e.g. ``"cpu"``.
    """
    choice = prefer or os.environ.get("TRANSFERLAB_DEVICE")
    if choice:
        device = torch.device(choice)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device {choice!r} was asked for but CUDA is not available; use 'cpu'.")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise RuntimeError(f"device {choice!r} was asked for but MPS is not available; use 'cpu'.")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def to_device(inputs: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """``inputs`` on ``device``; a 4-D batch of images also in the channels-last memory format.

    Only the order of the values in memory changes (height, width, then channel), not their shape or value, and a
    convolution's output keeps that order. On a CPU the course's networks evaluate in it in about a third less
    time (``benchmarks/channels_last.py``), and their outputs agree with the default order's to float rounding
    (within 4e-6), not bit for bit. The evaluation loops (`transferlab.training.evaluate`, `predict`,
    `transferlab.features.extract_features`, `pooled_features_at`) move every batch with it; the training loops
    do not, so they stay step for step the loop that notebook 05 writes by hand.

    Example:
        >>> x = to_device(torch.zeros(2, 3, 8, 8), "cpu")
        >>> x.shape, x.is_contiguous(memory_format=torch.channels_last)
        (torch.Size([2, 3, 8, 8]), True)
    """
    if inputs.dim() == 4:
        return inputs.to(device, memory_format=torch.channels_last)
    return inputs.to(device)


@contextmanager
def num_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` intra-op CPU threads, then restore the previous count.

    Results that a lesson compares exactly depend on the thread count (a matrix product summed in another
    order rounds differently), so such cells fix it, and the rest of the notebook keeps the machine's default.

    Example:
        >>> before = torch.get_num_threads()
        >>> with num_threads(1):
        ...     torch.get_num_threads()
        1
        >>> torch.get_num_threads() == before
        True
    """
    if n < 1:
        raise ValueError(f"num_threads needs a positive thread count, got {n}")
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def network_available(host: tuple[str, int] = WEIGHTS_HOST, timeout: float = 2.0) -> bool:
    """True if a TCP connection to ``host`` opens within ``timeout`` seconds.

    The check runs in a daemon thread, so a DNS lookup that hangs offline cannot block the caller
    for longer than ``timeout``. With ``TRANSFERLAB_OFFLINE=1`` set (the test suite sets it) it
    answers False without touching the network.
    """
    if os.environ.get("TRANSFERLAB_OFFLINE", "") not in ("", "0"):
        return False
    result: list[bool] = []

    def attempt() -> None:
        try:
            with socket.create_connection(host, timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(timeout)
    return bool(result and result[0])


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def _version_of_module(name: str) -> str:
    try:
        return __import__(name).__version__
    except ImportError:
        return "not installed"


@dataclass(frozen=True)
class EnvReport:
    """What the course needs to know about the machine it runs on."""

    python: str
    torch: str
    torchvision: str
    torchinfo: str
    device: str
    cpu_threads: int
    hub_cache: str
    online: bool

    def __str__(self) -> str:
        width = max(len(k) for k in asdict(self))
        return "\n".join(f"{k:<{width}} : {v}" for k, v in asdict(self).items())


def environment_report(check_network: bool = True, timeout: float = 2.0) -> EnvReport:
    """Collect versions, device, CPU threads, the torch hub cache and whether the network is reachable."""
    return EnvReport(
        python=platform.python_version(),
        torch=torch.__version__,
        torchvision=_version_of_module("torchvision"),
        torchinfo=_version("torchinfo"),
        device=str(get_device()),
        cpu_threads=torch.get_num_threads(),
        hub_cache=torch.hub.get_dir(),
        online=network_available(timeout=timeout) if check_network else False,
    )
