"""Fine-tune the course's pretrained TinyResNet on the digits target with DistributedDataParallel (DDP).

The same script runs from a laptop to a cluster; only the launcher's command line changes::

    python -m transferlab.distributed                                        # 1 process, no launcher
    torchrun --standalone --nproc_per_node 2 -m transferlab.distributed      # 2 processes here (gloo, CPU)
    torchrun --standalone --nproc_per_node 8 -m transferlab.distributed      # 8 GPUs: nccl, one GPU per process
    torchrun --nnodes 2 --node_rank R --nproc_per_node 8 --rdzv-backend c10d \\
             --rdzv-endpoint HOST:29500 --rdzv-id job1 -m transferlab.distributed   # 2 machines (R = 0 and 1)

What every process does: join the process group (``gloo`` on CPU, ``nccl`` on GPUs, chosen automatically) with a
timeout, so a lost peer ends the job instead of hanging it; load the pretrained weights and put a new 10-class head on
them; wrap the model in ``DistributedDataParallel`` (which averages the gradients of all processes with an
all-reduce during ``backward``); read its own shard of every epoch through a ``DistributedSampler`` (``set_epoch``
reshuffles each epoch); all-reduce the loss and accuracy, so every process reports the same numbers. Rank 0 alone
saves the checkpoint, atomically, from ``model.module`` (no ``module.`` prefix). The process group is destroyed on
the way out, also when a rank fails; torchrun then ends the other processes and reports the failing rank.

``--snapshot PATH`` makes the job *elastic*: after every epoch rank 0 writes a snapshot (weights, optimizer state,
step, losses so far); a job that starts and finds the file resumes from it. Launched with
``torchrun --max-restarts 1 ...``, a job whose process dies is restarted once, and the restarted processes go on from
the last snapshot instead of step 1. The snapshot is removed when the job finishes.

``--model module:function`` trains another network: ``function(num_classes=10)`` must return an ``nn.Module`` (its
weights are its own business, e.g. ``--model torchvision.models:resnet50`` is a randomly initialised ResNet-50; a
factory in your own ``my_models.py`` next to where you launch can load ImageNet weights and replace ``fc``). The data
stay the 32-pixel digit scenes, normalised for TinyResNet.

Teaching aid, not an option: the environment variable ``TRANSFERLAB_FAIL_AT=RANK:STEP`` (or ``RANK:STEP:hang``)
makes that rank raise (or stop answering) when it is about to take optimizer step ``STEP`` (from 1), on the job's
first attempt only (torchrun's ``TORCHELASTIC_RESTART_COUNT`` is 0), so that a restarted job runs through. It is read
in one place, `injected_failure`; the tests and notebook 11 use it to show a failing rank and an elastic restart.

``--batch-size`` is the *global* batch: with N processes each one takes ``batch_size / N`` images per step, so 1, 2
or 8 processes make the same optimizer steps on the same batches.

Set ``OMP_NUM_THREADS`` yourself (e.g. ``OMP_NUM_THREADS=1`` for 2 processes on 2 cores): every process would
otherwise start one thread per core and they would fight over the cores, and torchrun prints a warning about it.
"""

from __future__ import annotations

import argparse
import importlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.elastic.multiprocessing.errors import record
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler, Subset

from transferlab.data import TARGET_CLASSES, target_dataset
from transferlab.env import seed_everything
from transferlab.models import TinyResNet, TinyResNet_Weights, tiny_resnet, tiny_resnet_from_file
from transferlab.serialization import save_file
from transferlab.training import BatchSource, predict, train_steps

__all__ = [
    "DistInfo",
    "accumulate_gradients",
    "all_reduce_sum",
    "broadcast_buffers",
    "build_model",
    "choose_backend",
    "evaluate_sharded",
    "init_distributed",
    "injected_failure",
    "load_pretrained",
    "load_snapshot",
    "main",
    "model_factory",
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


def load_pretrained(weights: str, num_classes: int = len(TARGET_CLASSES)) -> TinyResNet:
    """A TinyResNet with ``weights`` (``"DEFAULT"`` or a state_dict / checkpoint file) and a fresh ``num_classes`` head.

    ``"DEFAULT"`` is ``tiny_resnet(weights=TinyResNet_Weights.DEFAULT)``; a file goes through
    :func:`transferlab.models.tiny_resnet_from_file` (``weights_only=True``, all or nothing), the course's one path
    from a weights file to a model with a new head.

    Example:
        >>> load_pretrained("DEFAULT").fc
        Linear(in_features=256, out_features=10, bias=True)
    """
    if weights == "DEFAULT":
        model = tiny_resnet(weights=TinyResNet_Weights.DEFAULT)  # the shipped file, SHA-256 checked
        model.fc = nn.Linear(model.fc.in_features, num_classes)
        return model
    return tiny_resnet_from_file(weights, num_classes)


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


def model_factory(spec: str) -> Callable[..., nn.Module]:
    """The function that ``spec`` (``"package.module:function"``) names, imported; a clear error when it is not one.

    Example:
        >>> model_factory("torchvision.models:resnet50")(num_classes=10).fc
        Linear(in_features=2048, out_features=10, bias=True)
    """
    module_name, sep, name = spec.partition(":")
    if not (sep and module_name and name):
        raise ValueError(
            f"--model {spec!r}: expected module:function, e.g. torchvision.models:resnet50 or "
            "my_models:resnet50_digits (a my_models.py in the folder you launch from)"
        )
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        raise ValueError(
            f"--model {spec!r}: cannot import {module_name!r} ({err}); check the name, and that the "
            "file is in the folder you launch from or on PYTHONPATH"
        ) from err
    factory = getattr(module, name, None)
    if not callable(factory):
        raise ValueError(f"--model {spec!r}: {module_name} has no function {name!r}")
    return cast(Callable[..., nn.Module], factory)


def build_model(model: str | None, weights: str = "DEFAULT", num_classes: int = len(TARGET_CLASSES)) -> nn.Module:
    """The network to train: the pretrained TinyResNet (`load_pretrained`), or ``factory(num_classes=...)``.

    Example:
        >>> build_model("torchvision.models:resnet18").fc.out_features
        10
    """
    if model is None:
        return load_pretrained(weights, num_classes)
    if weights != "DEFAULT":
        raise ValueError("--weights is for the default TinyResNet; a --model factory loads its own weights: drop one")
    built = model_factory(model)(num_classes=num_classes)
    if not isinstance(built, nn.Module):
        raise TypeError(f"--model {model}: the factory returned a {type(built).__name__}, not an nn.Module")
    return built


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


def injected_failure(rank: int, step: int) -> None:
    """Teaching aid: raise (or hang) here if ``TRANSFERLAB_FAIL_AT=RANK:STEP[:hang]`` names this rank and step.

    Only on the job's first attempt (``TORCHELASTIC_RESTART_COUNT`` unset or 0): a job restarted by
    ``torchrun --max-restarts`` then runs through, as after a real crash.

    Example:
        >>> injected_failure(0, 1)  # TRANSFERLAB_FAIL_AT unset: nothing happens
    """
    spec = os.environ.get("TRANSFERLAB_FAIL_AT")
    if not spec or os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") != "0":
        return
    fail_rank, fail_step, *mode = spec.split(":")
    if (int(fail_rank), int(fail_step)) != (rank, step):
        return
    if mode == ["hang"]:
        time.sleep(3600)  # the peers' collectives time out first (--timeout)
    raise RuntimeError(f"rank {rank}: injected failure at step {step} (TRANSFERLAB_FAIL_AT={spec}, a teaching aid)")


# What must match for a snapshot to be resumed: the job's recipe (not the paths, the timeout or the world size).
_RECIPE = ("weights", "model", "k", "data_seed", "steps", "batch_size", "lr", "momentum", "seed", "test_size")


def load_snapshot(
    path: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer, args: argparse.Namespace
) -> dict[str, Any]:
    """Load the snapshot at ``path`` into ``model`` and ``optimizer``; returns it (``step``, ``train_loss``).

    A snapshot written by a job with another recipe (steps, batch size, seeds, ...) is refused: resuming it would
    silently mix two runs.

    Example:
        >>> snapshot = load_snapshot("snapshot.pt", ddp.module, optimizer, args)  # doctest: +SKIP
        >>> snapshot["step"]  # doctest: +SKIP
        5
    """
    snapshot = torch.load(path, map_location="cpu", weights_only=True)
    mine = {key: vars(args)[key] for key in _RECIPE}
    theirs = {key: snapshot["args"].get(key) for key in _RECIPE}
    if mine != theirs:
        differ = [f"{key}: {theirs[key]} there, {mine[key]} here" for key in _RECIPE if mine[key] != theirs[key]]
        raise ValueError(
            f"snapshot {path} was written by another job ({'; '.join(differ)}): delete it, or pass another --snapshot"
        )
    model.load_state_dict(snapshot["model"])
    optimizer.load_state_dict(snapshot["optimizer"])
    return snapshot


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m transferlab.distributed", description=(__doc__ or "").splitlines()[0])
    p.add_argument("--weights", default="DEFAULT", help="DEFAULT (the course's pretrained TinyResNet) or a file")
    p.add_argument(
        "--model",
        default=None,
        metavar="MODULE:FUNCTION",
        help="train FUNCTION(num_classes=10) instead of the TinyResNet, e.g. torchvision.models:resnet50",
    )
    p.add_argument("--k", type=int, default=10, help="labelled training images per digit class")
    p.add_argument("--data-seed", type=int, default=0, help="picks the k images per class")
    p.add_argument("--steps", type=int, default=15, help="optimizer steps (with the defaults, 5 per epoch)")
    p.add_argument("--batch-size", type=int, default=20, help="GLOBAL batch, split evenly over the processes")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--seed", type=int, default=0, help="the new head's init and the DistributedSampler's shuffling")
    p.add_argument("--test-size", type=int, default=None, help="evaluate on the first N test images (default all)")
    p.add_argument("--out", default="tiny_resnet_digits_ddp.pt", help="checkpoint written by rank 0")
    p.add_argument("--snapshot", default=None, help="snapshot file: written every epoch, resumed from if it exists")
    p.add_argument("--backend", default="auto", choices=["auto", "gloo", "nccl"])
    p.add_argument("--timeout", type=float, default=60.0, help="seconds a collective may wait for its peers")
    return p


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


def _data(args: argparse.Namespace, info: DistInfo) -> tuple[Any, Any, DistributedSampler, DataLoader]:
    normalise = TinyResNet_Weights.DEFAULT.transforms()
    train = target_dataset("train", k=args.k, seed=args.data_seed, transform=normalise)
    test = target_dataset("test", transform=normalise)
    if args.test_size is not None:
        test = Subset(test, range(min(args.test_size, len(test))))
    batch = per_rank_batch(len(train), args.batch_size, info.world_size)
    sampler = DistributedSampler(train, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=args.seed)
    loader = DataLoader(train, batch_size=batch, sampler=sampler, drop_last=True, num_workers=0)
    return train, test, sampler, loader


def _run(args: argparse.Namespace, info: DistInfo) -> None:
    log = print if info.rank == 0 else (lambda *a, **k: None)
    train, test, sampler, loader = _data(args, info)
    seed_everything(args.seed)  # every rank builds the same head; DDP also broadcasts rank 0's weights
    model = build_model(args.model, args.weights).to(info.device)
    ddp = DDP(model, device_ids=[info.device.index] if info.device.type == "cuda" else None)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=args.lr, momentum=args.momentum)
    per_epoch = len(loader)
    log(
        f"world size {info.world_size} (backend {info.backend}, device {info.device.type}), {len(train)} training "
        f"images, global batch {args.batch_size} = {info.world_size} x {loader.batch_size}, "
        f"{per_epoch} steps per epoch, {args.steps} steps",
        flush=True,
    )
    done, earlier = 0, []  # steps already taken, and their (all-reduced) losses
    if args.snapshot is not None and Path(args.snapshot).exists():
        snapshot = load_snapshot(args.snapshot, ddp.module, optimizer, args)  # every rank reads the same file
        done, earlier = snapshot["step"], snapshot["train_loss"]
        log(
            f"resumed from {args.snapshot} at step {done} (restart {os.environ.get('TORCHELASTIC_RESTART_COUNT', 0)})",
            flush=True,
        )
    source = sharded_batches(loader, sampler, first_epoch=done // per_epoch)  # snapshots are taken between epochs
    local: list[float] = []

    def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        injected_failure(info.rank, done + step + 1)  # a teaching aid; does nothing unless TRANSFERLAB_FAIL_AT is set
        return source(step)

    def snapshot_every_epoch(step: int, loss: float) -> None:
        local.append(loss)
        taken = done + step + 1
        if args.snapshot is not None and taken % per_epoch == 0 and taken < args.steps:
            losses = earlier + [total / info.world_size for total in all_reduce_sum(local, info.device)]
            save_on_rank0(
                {
                    "model": ddp.module.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "step": taken,
                    "train_loss": losses,
                    "args": vars(args),
                },
                args.snapshot,
                info,
            )

    start = time.perf_counter()
    new = train_steps(
        ddp,
        batch,
        args.steps - done,
        optimizer,
        device=info.device,  # DDP averages gradients
        on_step=snapshot_every_epoch,
    )
    train_seconds = time.perf_counter() - start
    losses = earlier + [total / info.world_size for total in all_reduce_sum(new, info.device)]  # the global batch's
    processes = f"{info.world_size} process" + ("es" if info.world_size > 1 else "")
    for first in range(0, args.steps, per_epoch):
        chunk = losses[first : first + per_epoch]
        log(
            f"epoch {first // per_epoch + 1}: train loss {sum(chunk) / len(chunk):.4f} (steps {first + 1}-"
            f"{first + len(chunk)}, all-reduced over {processes})",
            flush=True,
        )
    broadcast_buffers(ddp.module)  # every rank now holds exactly the model rank 0 saves
    test_acc = evaluate_sharded(ddp.module, test, info)
    log(
        f"test accuracy {test_acc:.4f} on {len(test)} images; steps {done + 1}-{args.steps} took {train_seconds:.2f} s",
        flush=True,
    )
    checkpoint = {
        "model": ddp.module.state_dict(),
        "optimizer": optimizer.state_dict(),
        "args": vars(args),
        "world_size": info.world_size,
        "steps": args.steps,
        "train_loss": losses,
        "test_acc": test_acc,
        "train_seconds": train_seconds,
        "resumed_at": done,
    }
    save_on_rank0(checkpoint, args.out, info)
    log(f"rank 0 saved {args.out} ({len(checkpoint['model'])} tensors, keys without 'module.')", flush=True)
    if args.snapshot is not None and info.rank == 0 and Path(args.snapshot).exists():
        os.remove(args.snapshot)  # the job is done: a new job with the same --snapshot starts from step 1
        log(f"removed the snapshot {args.snapshot}", flush=True)


@record  # torchrun then reports the failing rank's traceback as the job's root cause
def main(argv: Sequence[str] | None = None) -> None:
    """Command line entry point: parse, join the group, fine-tune, save on rank 0, always leave the group."""
    args = _parser().parse_args(argv)
    info = init_distributed(args.backend, args.timeout)
    try:
        _run(args, info)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
