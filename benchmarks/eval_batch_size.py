"""Benchmark: forward-pass time of the course's two pretrained networks against the batch size, one CPU thread.

The notebooks run their frozen networks over whole test sets in eval mode; on a CPU the batch size changes how
long that takes (cache sizes, kernel choice) and, down to a point, not the result. For each network and batch
size this times a pass over the same N inputs (best of R repeats) and checks that the outputs are bit for bit
those of the largest batch, so a faster batch size can be used without changing a single printed number.

    PYTHONPATH=src python benchmarks/eval_batch_size.py            # make bench-batch

Networks: TinyResNet (32x32 scenes, as in notebooks 05-11) and EfficientNet-Lite0 (96x96, as in notebook 08),
both with their heads removed. Writes src/transferlab/results/eval_batch_size.json with the run's provenance.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from transferlab.lite0 import EfficientNetLite0_Weights, efficientnet_lite0
from transferlab.models import TinyResNet_Weights, tiny_resnet

from provenance import run_info, run_started, write_json


def networks() -> dict[str, tuple[nn.Module, int]]:
    """name -> (headless network in eval mode, input side in pixels)."""
    tiny = tiny_resnet(weights=TinyResNet_Weights.DEFAULT)
    tiny.fc = nn.Identity()
    lite0 = efficientnet_lite0(weights=EfficientNetLite0_Weights.DEFAULT)
    lite0.classifier = nn.Identity()
    return {"tinyresnet_32px": (tiny.eval(), 32), "lite0_96px": (lite0.eval(), 96)}


@torch.no_grad()
def time_batches(model: nn.Module, inputs: torch.Tensor, batch_size: int, repeats: int) -> tuple[float, torch.Tensor]:
    """Best wall time of ``repeats`` passes over ``inputs`` in batches of ``batch_size``, and the outputs."""
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = torch.cat([model(batch) for batch in inputs.split(batch_size)])
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=256, help="inputs per pass")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[256, 128, 64, 32, 16, 8])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = run_started()
    sizes = sorted(args.batch_sizes, reverse=True)
    results = {}
    for name, (model, side) in networks().items():
        inputs = torch.randn(args.n, 3, side, side, generator=torch.Generator().manual_seed(0))
        model(inputs[:2])  # warm-up: first-call allocations out of the timings
        rows, reference = {}, None
        for batch_size in sizes:
            seconds, out = time_batches(model, inputs, batch_size, args.repeats)
            reference = out if reference is None else reference
            rows[str(batch_size)] = {
                "seconds": round(seconds, 3),
                "ms_per_input": round(1000 * seconds / args.n, 2),
                "identical_to_largest_batch": bool(torch.equal(out, reference)),
            }
            print(
                f"{name:16s} batch {batch_size:4d}: {seconds:6.2f} s ({1000 * seconds / args.n:5.1f} ms per input), "
                f"identical to batch {sizes[0]}: {rows[str(batch_size)]['identical_to_largest_batch']}",
                flush=True,
            )
        results[name] = rows
    write_json({"args": vars(args), "results": results, "provenance": run_info(started)}, "eval_batch_size.json")


if __name__ == "__main__":
    main()
