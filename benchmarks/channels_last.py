"""Benchmark: the course's networks on a CPU, inputs in the default (NCHW) vs the channels-last memory order.

`transferlab.env.to_device` moves every batch of the evaluation loops in channels-last order, and
`transferlab.finetune.new_lite0` builds the Lite0 that notebook 12 fine-tunes in it. This measures what that
buys, one thread: an eval-mode forward pass over a test set, and a training step (forward, backward, AdamW),
best of R repeats, the same inputs both ways. It also records the largest difference between the two orders'
outputs: the same values, summed in another order, so equal up to float rounding, not bit for bit.

    PYTHONPATH=src python benchmarks/channels_last.py            # make bench-layout

Writes src/transferlab/results/channels_last.json with the run's provenance.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from transferlab.finetune import new_lite0
from transferlab.models import TinyResNet_Weights, tiny_resnet

from provenance import run_info, run_started, write_json

CL = torch.channels_last


def networks() -> dict[str, tuple[Callable[[], nn.Module], int, int, int]]:
    """name -> (a function building the network, input side, evaluation batch, training batch), as the notebooks
    use them: TinyResNet on 32 px scenes (a 500-image test set; batches of 32), Lite0 at notebook 12's 48 px
    (a 90-image split; batches of 16)."""
    return {
        "tinyresnet_32px": (lambda: tiny_resnet(weights=TinyResNet_Weights.DEFAULT), 32, 500, 32),
        "lite0_48px": (lambda: new_lite0(3, seed=0).to(memory_format=torch.contiguous_format), 48, 90, 16),
    }


def best_of(repeats: int, work: Callable[[], object]) -> float:
    """Best wall time of ``repeats`` calls of ``work`` (one untimed call first: allocations, kernel choice)."""
    work()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - start)
    return best


def train_step_time(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, repeats: int) -> float:
    """Seconds per training step (cross-entropy, backward, AdamW), best of ``repeats`` runs of ``steps`` steps."""
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def run() -> None:
        for _ in range(steps):
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    return best_of(repeats, run) / steps


def measure(
    build: Callable[[], nn.Module], side: int, eval_batch: int, train_batch: int, repeats: int, steps: int
) -> dict:
    """One network both ways: eval-pass and training-step seconds, and the largest output difference. The
    channels-last arms time the conversion of the inputs too, as `transferlab.env.to_device` does it per batch."""
    g = torch.Generator().manual_seed(0)
    x_eval = torch.randn(eval_batch, 3, side, side, generator=g)
    x_train = torch.randn(train_batch, 3, side, side, generator=g)
    model = build().eval()
    row: dict = {}
    with torch.no_grad():
        y_train = torch.randint(model(x_train[:2]).shape[1], (train_batch,), generator=g)
        out_nchw, out_cl = model(x_eval), model(x_eval.contiguous(memory_format=CL))
        row["max_abs_output_difference"] = float((out_nchw - out_cl).abs().max())
        row["eval_s"] = {
            "nchw": round(best_of(repeats, lambda: model(x_eval)), 4),
            "channels_last": round(best_of(repeats, lambda: model(x_eval.contiguous(memory_format=CL))), 4),
        }
    row["train_step_s"] = {
        "nchw": round(train_step_time(build(), x_train, y_train, steps, repeats), 4),
        "channels_last": round(
            train_step_time(
                build().to(memory_format=CL), x_train.contiguous(memory_format=CL), y_train, steps, repeats
            ),
            4,
        ),
    }
    for what in ("eval_s", "train_step_s"):
        row[what]["saved"] = round(1 - row[what]["channels_last"] / row[what]["nchw"], 3)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10, help="training steps per timed run")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = run_started()
    results = {}
    for name, (build, side, eval_batch, train_batch) in networks().items():
        results[name] = row = measure(build, side, eval_batch, train_batch, args.repeats, args.steps)
        print(
            f"{name:16s} eval of {eval_batch}: {row['eval_s']['nchw']:.3f} s -> {row['eval_s']['channels_last']:.3f} s "
            f"({100 * row['eval_s']['saved']:.0f} % less); training step of {train_batch}: "
            f"{1000 * row['train_step_s']['nchw']:.0f} -> {1000 * row['train_step_s']['channels_last']:.0f} ms "
            f"({100 * row['train_step_s']['saved']:.0f} % less); outputs differ by up to "
            f"{row['max_abs_output_difference']:.1e}",
            flush=True,
        )
    write_json({"args": vars(args), "results": results, "provenance": run_info(started)}, "channels_last.json")


if __name__ == "__main__":
    main()
