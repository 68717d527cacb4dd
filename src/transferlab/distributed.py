"""The building blocks of data-parallel training with ``torch.distributed``, as notebook 11 uses them.

Joining a process group from torchrun's environment (``init_distributed``: ``gloo`` on CPU, ``nccl`` on GPUs, a
timeout on every collective, a restart-safe store), splitting a *global* batch over the processes
(``per_rank_batch``), walking a ``DistributedSampler`` shard epoch after epoch (``sharded_batches``), summing
numbers over all processes (``all_reduce_sum``), making every rank hold rank 0's BatchNorm statistics
(``broadcast_buffers``), scoring disjoint shards of a test set (``shard_indices``, ``evaluate_sharded``), saving once,
atomically, on rank 0 (``save_on_rank0``) and accumulating micro-batch gradients with one all-reduce
(``accumulate_gradients``).

The program that puts them together, a DDP fine-tuning job to launch with ``torchrun``, is
``notebooks/ddp_finetune.py``, next to notebook 11.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, Subset

from transferlab.serialization import save_file
from transferlab.training import BatchSource, predict

__all__ = [
    "DistInfo",
    "accumulate_gradients",
    "all_reduce_sum",
    "broadcast_buffers",
    "choose_backend",
    "evaluate_sharded",
    "init_distributed",
    "per_rank_batch",
    "save_on_rank0",
    "shard_indices",
    "sharded_batches",
]


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job: ``rank`` of ``world_size``, ``local_rank`` on its machine, its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str


def choose_backend(requested: str = "auto") -> str:
    """``nccl`` when CUDA GPUs and NCCL are there, else ``gloo`` (the CPU backend); an explicit choice is kept.

    Example:
        >>> choose_backend() in ("gloo", "nccl")
        True
    """
    if requested != "auto":
        return requested
    return "nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"


def _attempt_store(timeout: timedelta) -> dist.Store:
    """torchrun's key-value store, seen through a prefix that names the attempt (``TORCHELASTIC_RESTART_COUNT``).

    After ``--max-restarts`` restarts a job, its new processes meet in the same store as the dead ones. With torch
    2.14 and gloo, a plain ``init_process_group`` then fails in the restarted processes ("Gloo connectFullMesh
    failed ... Connection refused", found while writing notebook 11; pytorch/pytorch#167288 reports the same symptom
    with nccl); with a prefix per attempt, the keys the dead processes left cannot be read, and the restart works.
    """
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    agent_serves = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"  # else rank 0 hosts it, as env:// does
    store = dist.TCPStore(
        os.environ["MASTER_ADDR"],
        int(os.environ["MASTER_PORT"]),
        world_size,
        is_master=rank == 0 and not agent_serves,
        timeout=timeout,
    )
    return dist.PrefixStore(f"transferlab/attempt_{os.environ['TORCHELASTIC_RESTART_COUNT']}", store)


def init_distributed(backend: str = "auto", timeout_s: float = 60.0) -> DistInfo:
    """Join the process group described by torchrun's environment (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ...).

    Without a launcher (plain ``python -m``) a one-process group is made in memory, so the same code runs.
    ``timeout_s`` bounds every collective: a peer that died or hangs raises an error instead of blocking forever.

    Example:
        >>> info = init_distributed("auto", timeout_s=60)  # doctest: +SKIP
        >>> info.rank, info.world_size  # doctest: +SKIP
        (0, 2)
    """
    backend = choose_backend(backend)
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if backend == "nccl":
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(
                f"local rank {local_rank} needs GPU {local_rank} but this machine has "
                f"{torch.cuda.device_count()}: use --nproc_per_node <= {torch.cuda.device_count()}, "
                "or --backend gloo to run on the CPU"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    timeout = timedelta(seconds=timeout_s)
    if "TORCHELASTIC_RESTART_COUNT" in os.environ:  # started by torchrun: meet in this attempt's own key space
        dist.init_process_group(
            backend,
            store=_attempt_store(timeout),
            rank=int(os.environ["RANK"]),
            world_size=int(os.environ["WORLD_SIZE"]),
            timeout=timeout,
        )
    elif "WORLD_SIZE" in os.environ:  # started by hand with torchrun's variables
        dist.init_process_group(backend, timeout=timeout)
    else:
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1, timeout=timeout)
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, device, backend)


def per_rank_batch(n_train: int, batch_size: int, world_size: int) -> int:
    """Images per process per step for a *global* ``batch_size``; a clear error when the data cannot be sharded.

    Example:
        >>> per_rank_batch(100, 20, 2)
        10
    """
    if batch_size % world_size or batch_size < world_size:
        raise ValueError(
            f"a global batch of {batch_size} cannot be split evenly over {world_size} processes: "
            f"use a --batch-size that is a multiple of {world_size}, or fewer processes "
            f"(--nproc_per_node)"
        )
    if n_train < batch_size:
        raise ValueError(
            f"{n_train} training images do not fill one global batch of {batch_size}: "
            f"lower --batch-size or use more labels per class (--k)"
        )
    return batch_size // world_size


def all_reduce_sum(values: Sequence[float], device: torch.device) -> list[float]:
    """Sum ``values`` over all processes (every process gets the totals).

    Example:
        >>> correct, seen = all_reduce_sum([correct, seen], info.device)  # doctest: +SKIP
    """
    totals = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(totals, op=dist.ReduceOp.SUM)
    return totals.tolist()


def shard_indices(n: int, rank: int, world_size: int) -> range:
    """Every ``world_size``-th index from ``rank``: disjoint shards that together cover ``range(n)`` exactly once.

    Example:
        >>> list(shard_indices(5, 1, 2))
        [1, 3]
    """
    return range(rank, n, world_size)


@torch.no_grad()
def broadcast_buffers(model: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (BatchNorm running statistics) to every process.

    DDP broadcasts them at the start of each forward, so after the last training step every rank has updated its
    own copy with its own batch: without this, each rank would evaluate (and rank 0 save) slightly different models.

    Example:
        >>> broadcast_buffers(ddp.module)  # doctest: +SKIP
    """
    for buffer in model.buffers():
        dist.broadcast(buffer, src)


@torch.no_grad()
def evaluate_sharded(model: nn.Module, dataset: Any, info: DistInfo, batch_size: int = 250) -> float:
    """Accuracy on ``dataset``: each process scores its shard (no padding, no duplicates), the counts are summed.

    ``model`` is the plain module (``ddp.module``): DDP's own forward would sync buffers, a collective that hangs
    when shards have different numbers of batches.

    Example:
        >>> test_acc = evaluate_sharded(ddp.module, target_dataset("test"), info)  # doctest: +SKIP
    """
    shard = shard_indices(len(dataset), info.rank, info.world_size)
    correct = seen = 0
    if len(shard):  # more processes than images leaves a shard empty
        preds, targets = predict(model, DataLoader(Subset(dataset, shard), batch_size), device=info.device)
        correct, seen = int((preds == targets).sum()), len(targets)
    correct, seen = all_reduce_sum([correct, seen], info.device)
    return correct / seen


def save_on_rank0(checkpoint: dict[str, Any], path: str, info: DistInfo) -> None:
    """Rank 0 writes ``checkpoint`` atomically (a temporary file, then a rename); the others wait for it.

    Example:
        >>> save_on_rank0({"model": ddp.module.state_dict()}, "ckpt.pt", info)  # doctest: +SKIP
    """
    if info.rank == 0:
        save_file(checkpoint, path)  # the course's atomic writer: never a half-written file
    dist.barrier()  # nobody reports success before the file exists


def accumulate_gradients(
    model: nn.Module,
    micro_batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    loss_fn: Callable[..., torch.Tensor] = nn.functional.cross_entropy,
) -> float:
    """Backward over equal-sized ``micro_batches`` as over one batch; a DDP ``model`` all-reduces once, at the end.

    Each micro-batch's mean loss is divided by their number, so ``.grad`` ends up holding the gradient of the mean
    loss over all of them. All but the last backward run under ``model.no_sync()``: DDP then only accumulates into
    ``.grad`` locally, and the last backward all-reduces the sum. Returns the mean loss. Call ``zero_grad`` before.

    Example:
        >>> loss = accumulate_gradients(ddp, [(x[:16], y[:16]), (x[16:], y[16:])])  # doctest: +SKIP
    """
    if not micro_batches or len({len(labels) for _, labels in micro_batches}) != 1:
        raise ValueError(
            "accumulate_gradients needs at least one micro-batch, all of the same size (found "
            f"{[len(labels) for _, labels in micro_batches]}): the mean of their means is only then the "
            "mean over the whole batch"
        )
    total = 0.0
    *first, last = micro_batches
    no_sync = getattr(model, "no_sync", None)  # a plain module has nothing to skip
    for images, labels in first:
        with no_sync() if no_sync is not None else torch.enable_grad():
            loss = loss_fn(model(images), labels) / len(micro_batches)
            loss.backward()  # gradients stay in this process
        total += loss.item()
    loss = loss_fn(model(last[0]), last[1]) / len(micro_batches)
    loss.backward()  # DDP all-reduces the accumulated gradients here
    return total + loss.item()


def sharded_batches(loader: DataLoader, sampler: DistributedSampler, first_epoch: int = 0) -> BatchSource:
    """A `train_steps` batch source that walks this rank's shard, epoch after epoch, from epoch ``first_epoch``.

    At the start of every epoch it calls ``sampler.set_epoch(epoch)``: all ranks reshuffle with the same seed, so
    their shards stay disjoint; without it every epoch would repeat the first one's order.

    Example:
        >>> losses = train_steps(ddp, sharded_batches(loader, sampler), 15, optimizer)  # doctest: +SKIP
    """
    epoch, batches = first_epoch - 1, iter(())

    def next_batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        nonlocal epoch, batches
        for _ in range(2):
            try:
                return next(batches)
            except StopIteration:
                epoch += 1
                sampler.set_epoch(epoch)
                batches = iter(loader)
        raise ValueError("the training loader yields no batch; lower --batch-size")

    return next_batch
