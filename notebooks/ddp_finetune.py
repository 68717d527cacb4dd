"""Fine-tune the course's pretrained TinyResNet on the digits with DistributedDataParallel (DDP): notebook 11's script.

It lives next to the notebook that teaches it (it is a program, not part of the ``transferlab`` package, whose
``transferlab.distributed`` holds the building blocks it uses). The same script runs from a laptop to a cluster;
only the launcher's command line changes (from this folder, or give its path)::

    python ddp_finetune.py                                                      # 1 process, no launcher
    OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node 2 ddp_finetune.py  # 2 processes here (gloo, CPU)
    torchrun --standalone --nproc_per_node 8 ddp_finetune.py                    # 8 GPUs: nccl, one GPU per process
    torchrun --nnodes 2 --node_rank R --nproc_per_node 8 --rdzv-backend c10d \\
             --rdzv-endpoint HOST:29500 --rdzv-id job1 ddp_finetune.py          # 2 machines (R = 0 and 1)

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

From Python, ``main(argv, before_step=f)`` runs the same job and calls ``f(rank, step)`` before every optimizer step
(``step`` counts from 1 over the whole job, resumed steps included): a place for a progress report, a profiler, or
the simulated crash with which notebook 11 and the tests show an elastic restart (a three-line wrapper script).

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
from pathlib import Path
from typing import Any, cast

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.elastic.multiprocessing.errors import record
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler, Subset

from transferlab.data import TARGET_CLASSES, target_dataset
from transferlab.distributed import (
    DistInfo,
    all_reduce_sum,
    broadcast_buffers,
    evaluate_sharded,
    init_distributed,
    per_rank_batch,
    save_on_rank0,
    sharded_batches,
)
from transferlab.env import seed_everything
from transferlab.models import TinyResNet, TinyResNet_Weights, tiny_resnet, tiny_resnet_from_file
from transferlab.training import train_steps

__all__ = ["build_model", "load_pretrained", "load_snapshot", "main", "model_factory"]

BeforeStep = Callable[[int, int], None]


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
    p = argparse.ArgumentParser(prog="ddp_finetune.py", description=(__doc__ or "").splitlines()[0])
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


def _run(args: argparse.Namespace, info: DistInfo, before_step: BeforeStep | None) -> None:
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
        if before_step is not None:
            before_step(info.rank, done + step + 1)  # the job's step number, from 1
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
def main(argv: Sequence[str] | None = None, *, before_step: BeforeStep | None = None) -> None:
    """Parse ``argv`` (the command line), join the group, fine-tune, save on rank 0, always leave the group.

    ``before_step(rank, step)``, if given, is called in every process before every optimizer step (from 1).
    """
    args = _parser().parse_args(argv)
    info = init_distributed(args.backend, args.timeout)
    try:
        _run(args, info, before_step)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
