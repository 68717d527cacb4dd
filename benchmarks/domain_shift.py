"""Domain shift and AdaBN (notebook 10) over several source seeds: the grid the notebook cannot afford live.

For each source seed (``--seeds``) the course's TinyResNet gets a new 10-way head (initialised with that seed) and
is fine-tuned on the whole paper training pool (``--steps`` x ``--batch-size``, AdamW, ``--lr``; the seed also
draws the batches). Then, on the fixed target test set rendered in every domain of ``transferlab.shift.SHIFTS``:

* ``source``        the fine-tuned model as it is (its BatchNorm statistics are running averages of fine-tuning);
* ``paper_adabn``   AdaBN on 500 unlabelled *paper* images: the control, fresh statistics of the source domain;
* ``adabn``         AdaBN on 500 unlabelled images of the test's own domain (inductive: a disjoint training pool);
* ``bn1_only``      the source model with only the stem's BatchNorm (``bn1``) taken from ``adabn``;
* ``transductive``  AdaBN on the test images themselves, the protocol of Li et al. (2016);
* ``sweep``         AdaBN on n = 1, 4, 16, 64, 256 of the 500 pool images (3 random subsets each) and on all 500;
* ``few``           k = 5 labelled target images per class (3 draws): a linear head trained on the frozen
                    body's cached features, with the source-BN or the AdaBN body, initialised fresh or from the
                    source head, for every learning rate of ``--head-lrs``; each run's accuracy on a labelled
                    validation set (``--val-size`` training-pool digits not among the 50, other scenes) and on
                    the test set. The notebook picks each arm's learning rate on validation, never on test.
* ``label_shift``   AdaBN on the paper pool's digits 0-4 only, against the same number of pool images of all
                    digits: accuracy on every test digit, on 0-4 and on 5-9.

The notebook re-runs source seed 0 live with the same recipe and compares its numbers with this file's.

Usage (from the repository root; ``make bench-shift``)::

    PYTHONPATH=src python benchmarks/domain_shift.py --threads 1
    PYTHONPATH=src python benchmarks/domain_shift.py --seeds 0 --sweep 1 500 --draws 1 --results-dir /tmp  # smoke
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from typing import Any

import torch
from torch import Tensor, nn

from transferlab.data import TARGET_CLASSES, target_dataset
from transferlab.models import TinyResNet_Weights, tiny_resnet
from transferlab.serialization import atomic_open
from transferlab.shift import SHIFTS, adapt_bn, shifted_target
from transferlab.training import predict, train_steps

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from provenance import RESULTS, run_info, run_started

WEIGHTS = TinyResNet_Weights.DEFAULT
PREPROCESS = WEIGHTS.transforms()
NUM_CLASSES = len(TARGET_CLASSES)
SHIFTED = [s for s in SHIFTS if s != "paper"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="source seeds")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--pool-size", type=int, default=500)
    p.add_argument("--pool-batch", type=int, default=250)
    p.add_argument("--sweep", type=int, nargs="+", default=[1, 4, 16, 64, 256, 500])
    p.add_argument("--draws", type=int, default=3, help="random subsets per sweep size below the pool size")
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--label-draws", type=int, default=3)
    p.add_argument("--head-steps", type=int, default=100)
    p.add_argument("--head-lrs", type=float, nargs="+", default=[3e-4, 1e-3, 3e-3, 1e-2, 3e-2])
    p.add_argument("--val-size", type=int, default=300)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--name", default="domain_shift")
    p.add_argument("--results-dir", default=str(RESULTS))
    return p.parse_args(argv)


def fine_tune_source(seed: int, args: argparse.Namespace) -> nn.Module:
    """The paper-domain model of notebook 10, section 2, for one source seed."""
    train = target_dataset("train")
    model = tiny_resnet(weights=WEIGHTS)
    torch.manual_seed(seed)
    model.fc = nn.Linear(model.fc.in_features, NUM_CLASSES)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    train_steps(
        model,
        (PREPROCESS(train.images), train.labels),
        args.steps,
        optimizer,
        batch_size=args.batch_size,
        generator=torch.Generator().manual_seed(seed),
    )
    return model.eval()


def unlabelled_pool(shift: str, size: int) -> tuple[Tensor, Tensor]:
    """``size`` training-pool images in ``shift`` (scenes of seed 1), normalised, and their (unused) labels."""
    pool = shifted_target("train", shift, seed=1)
    pick = torch.randperm(len(pool), generator=torch.Generator().manual_seed(1))[:size]
    return PREPROCESS(pool.images[pick]), pool.labels[pick]


@torch.no_grad()
def features(model: nn.Module, x: Tensor) -> Tensor:
    body = copy.deepcopy(model).eval()
    body.fc = nn.Identity()
    return torch.cat([body(b) for b in x.split(100)])


def accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    preds, _ = predict(model, zip(x.split(100), y.split(100), strict=True))
    return float((preds == y).float().mean())


def head_accuracy(head: nn.Module, feats: Tensor, y: Tensor) -> float:
    preds, _ = predict(head, [(feats, y)])
    return float((preds == y).float().mean())


def train_head(feats: Tensor, y: Tensor, init: nn.Linear | None, lr: float, steps: int, seed: int) -> nn.Linear:
    """A linear head, fresh (``init=None``, drawn with ``seed``) or a copy of ``init``: full-batch AdamW steps."""
    torch.manual_seed(seed)
    head = nn.Linear(feats.shape[1], NUM_CLASSES) if init is None else copy.deepcopy(init)
    train_steps(head, lambda step: (feats, y), steps, torch.optim.AdamW(head.parameters(), lr=lr))
    return head


def adapted(model: nn.Module, x: Tensor, batch: int) -> nn.Module:
    return adapt_bn(copy.deepcopy(model), x.split(batch))


def validation_set(shift: str, exclude: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """Labelled training-pool digits not in ``exclude`` (source indices), scenes of seed 2: for choosing LRs."""
    pool = shifted_target("train", shift, seed=2)
    idx = torch.nonzero(~torch.isin(pool.source_index, exclude)).flatten()
    idx = idx[torch.randperm(len(idx), generator=torch.Generator().manual_seed(2))[:size]]
    return PREPROCESS(pool.images[idx]), pool.labels[idx]


def run_seed(seed: int, args: argparse.Namespace, tests: dict[str, tuple[Tensor, Tensor]]) -> dict[str, Any]:
    t0 = time.process_time()
    model = fine_tune_source(seed, args)
    out: dict[str, Any] = {"seed": seed}
    src_feats = {s: features(model, x) for s, (x, _) in tests.items()}
    out["source"] = {s: head_accuracy(model.fc, src_feats[s], y) for s, (_, y) in tests.items()}
    paper_x, paper_y = unlabelled_pool("paper", args.pool_size)
    paper_adabn = adapted(model, paper_x, args.pool_batch)
    out["paper_adabn"] = {s: accuracy(paper_adabn, x, y) for s, (x, y) in tests.items()}
    out["adabn"], out["bn1_only"], out["transductive"], out["sweep"], out["few"] = {}, {}, {}, {}, {}
    for shift in SHIFTED:
        x_test, y_test = tests[shift]
        pool_x, _ = unlabelled_pool(shift, args.pool_size)
        target = adapted(model, pool_x, args.pool_batch)
        target_feats = features(target, x_test)
        out["adabn"][shift] = head_accuracy(target.fc, target_feats, y_test)
        bn1_only = copy.deepcopy(model)
        bn1_only.bn1.load_state_dict(target.bn1.state_dict())  # bn1's input does not depend on any other BN
        out["bn1_only"][shift] = accuracy(bn1_only, x_test, y_test)
        out["transductive"][shift] = accuracy(adapted(model, x_test, 250), x_test, y_test)
        sweep: dict[str, list[float]] = {}
        for n in args.sweep:
            draws = 1 if n >= args.pool_size else args.draws
            accs = []
            for d in range(draws):
                pick = torch.randperm(args.pool_size, generator=torch.Generator().manual_seed(1000 * n + d))[:n]
                accs.append(accuracy(adapted(model, pool_x[pick], args.pool_batch), x_test, y_test))
            sweep[str(n)] = accs
        out["sweep"][shift] = sweep
        few: dict[str, dict[str, dict[str, list[float]]]] = {}
        bodies = {"source": (model, src_feats[shift]), "adabn": (target, target_feats)}
        for d in range(args.label_draws):
            labelled = shifted_target("train", shift, k=args.k, seed=10 + d)
            x_lab, y_lab = PREPROCESS(labelled.images), labelled.labels
            x_val, y_val = validation_set(shift, labelled.source_index, args.val_size)
            for bn, (body, test_feats) in bodies.items():
                f_lab, f_val = features(body, x_lab), features(body, x_val)
                for init in ("fresh", "source"):
                    arm = few.setdefault(f"{bn}/{init}", {})
                    for lr in args.head_lrs:
                        head = train_head(f_lab, y_lab, None if init == "fresh" else body.fc, lr, args.head_steps, d)
                        cell = arm.setdefault(f"{lr:g}", {"val": [], "test": []})
                        cell["val"].append(head_accuracy(head, f_val, y_val))
                        cell["test"].append(head_accuracy(head, test_feats, y_test))
        out["few"][shift] = few
    low = paper_y < 5
    n_low = int(low.sum())
    only_low = adapted(model, paper_x[low], args.pool_batch)
    same_size = adapted(model, paper_x[:n_low], args.pool_batch)
    x_p, y_p = tests["paper"]
    out["label_shift"] = {"pool_size": n_low}
    for name, m in (("digits 0-4 pool", only_low), ("all-digit pool", same_size), ("source", model)):
        out["label_shift"][name] = {
            part: accuracy(m, x_p[mask], y_p[mask])
            for part, mask in (("all", y_p >= 0), ("0-4", y_p < 5), ("5-9", y_p >= 5))
        }
    out["cpu_seconds"] = round(time.process_time() - t0, 1)
    return out


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    started = run_started()
    tests = {}
    for shift in SHIFTS:
        ds = shifted_target("test", shift)
        tests[shift] = (PREPROCESS(ds.images), ds.labels)
    config = {k: v for k, v in vars(args).items() if k not in ("results_dir", "name")}
    runs = []
    path = os.path.join(args.results_dir, f"{args.name}.json")
    for seed in args.seeds:
        runs.append(run_seed(seed, args, tests))
        print(f"seed {seed}: {runs[-1]['cpu_seconds']} CPU s; adabn {runs[-1]['adabn']}", flush=True)
        result = {"provenance": run_info(started), "config": config, "complete": seed == args.seeds[-1], "runs": runs}
        with atomic_open(path) as f:  # all or nothing: an interrupted run keeps the previous file
            f.write(json.dumps(result, indent=1).encode("utf-8"))
    print("wrote", path)


if __name__ == "__main__":
    main()
