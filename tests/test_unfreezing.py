"""Tests for transferlab.unfreezing: the arms of notebook 07 and the paired difference with its bootstrap."""

import numpy as np
import pytest
import torch
from torch.nn.modules.batchnorm import _BatchNorm

from transferlab.env import seed_everything
from transferlab.freeze import unfreeze_bn
from transferlab.training import train_one_epoch
from transferlab.unfreezing import (
    ARMS,
    LAYER3_RATIO,
    Budget,
    build_arm,
    frozen_model,
    paired_difference,
    run_arm,
    target_split,
    train_loader_for,
)


def trainable_blocks(model):
    return {name.split(".")[0] for name, p in model.named_parameters() if p.requires_grad}


def bn_follows_train(model, block):
    """After model.train(), do the block's BatchNorm layers run in train mode (hooks included)?"""
    model.train()
    bns = [m for m in model.get_submodule(block).modules() if isinstance(m, _BatchNorm)]
    for bn in bns:
        for hook in bn._forward_pre_hooks.values():
            hook(bn, ())
    return all(bn.training for bn in bns)


def lrs(optimizer):
    return {g["name"]: g["lr"] for g in optimizer.param_groups}


ALL = {"conv1", "bn1", "layer1", "layer2", "layer3", "layer4", "fc"}


@pytest.mark.parametrize(
    "arm, at_start, later",
    [
        ("features", {"fc"}, {"fc"}),
        ("one-shot", ALL, ALL),
        ("warm-up", ALL, ALL),
        ("LP-FT", {"fc"}, ALL),
        ("matched", {"fc", "layer4", "layer3"}, {"fc", "layer4", "layer3"}),
        ("gradual", {"fc"}, {"fc", "layer4", "layer3"}),
    ],
)
def test_each_arm_trains_what_its_table_says(arm, at_start, later):
    model, optimizer, _, on_epoch_start = build_arm(arm, 1e-3)
    assert trainable_blocks(model) == at_start
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert in_optimizer == {id(p) for p in model.parameters() if p.requires_grad}
    for epoch in range(Budget().epochs):
        on_epoch_start(epoch)
    assert trainable_blocks(model) == later
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert in_optimizer == {id(p) for p in model.parameters() if p.requires_grad}
    for block in ("bn1", "layer1", "layer3", "layer4"):
        assert bn_follows_train(model, block) == (block in later), f"{arm}: BatchNorm of {block}"


@pytest.mark.filterwarnings("ignore:Detected call of")  # stepped without training
def test_learning_rates_of_the_arms():
    assert lrs(build_arm("one-shot", 1e-3)[1]) == {"fc": 1e-2, "default": 1e-3}
    assert lrs(build_arm("matched", 1e-3)[1]) == {"fc": 1e-2, "layer4": 1e-3, "layer3": LAYER3_RATIO * 1e-3}
    _, optimizer, scheduler, _ = build_arm("warm-up", 1e-3)
    seen = []
    for _ in range(4):
        seen.append(lrs(optimizer))
        scheduler.step()
    assert [round(s["default"] / 1e-3, 6) for s in seen] == [round(1 / 3, 6), round(2 / 3, 6), 0.5, 0.5]
    assert [s["fc"] for s in seen] == [1e-2, 1e-2, 5e-3, 5e-3]  # the head does not warm up
    _, optimizer, _, on_epoch_start = build_arm("gradual", 1e-3)
    for epoch in range(5):
        on_epoch_start(epoch)
    assert lrs(optimizer) == {"fc": 1e-2, "layer4": 1e-3, "layer3": LAYER3_RATIO * 1e-3}


def test_bad_arm_or_missing_rate_is_an_error():
    with pytest.raises(ValueError, match="unknown arm"):
        build_arm("two-shot", 1e-3)
    with pytest.raises(ValueError, match="body_lr"):
        build_arm("gradual", None)
    assert set(ARMS) == {"features", "one-shot", "warm-up", "LP-FT", "matched", "gradual"}


def test_gradual_arm_equals_the_plain_pytorch_loop():
    budget = Budget(steps_per_epoch=1, epochs=5)
    model = run_arm("gradual", 3, 1e-3, budget)
    seed_everything(3)
    plain = frozen_model()
    optimizer = torch.optim.AdamW([{"params": plain.fc.parameters(), "lr": 1e-2}])
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    rates = {"layer4": 1e-3, "layer3": LAYER3_RATIO * 1e-3}
    train_loader = train_loader_for(3, budget)  # one loader: its sampler's generator runs on
    for epoch in range(budget.epochs):
        for name in {2: ["layer4"], 4: ["layer3"]}.get(epoch, []):
            block = plain.get_submodule(name)
            block.requires_grad_(True)
            unfreeze_bn(block)
            optimizer.add_param_group({"params": list(block.parameters()), "lr": rates[name]})
        train_one_epoch(plain, train_loader, optimizer)
        scheduler.step()
    state = plain.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    key = "layer3.0.bn1.running_mean"
    assert not torch.equal(state[key], frozen_model().state_dict()[key])  # layer3's statistics did move


def test_target_split_is_disjoint_by_digit_and_checks_its_argument():
    val, test = target_split(100)
    assert (len(val), len(test)) == (200, 800)
    with pytest.raises(ValueError, match="val_digits"):
        target_split(500)


def test_paired_difference_against_plain_numpy():
    rng = np.random.default_rng(1)
    a, b = rng.random((5, 4000)) < 0.8, rng.random((5, 4000)) < 0.7
    d = paired_difference(a, b, n_boot=500)
    per_seed = a.mean(axis=1) - b.mean(axis=1)
    assert d.mean == pytest.approx(per_seed.mean())
    assert d.se_seeds == pytest.approx(per_seed.std(ddof=1) / np.sqrt(5))
    # independent images: the bootstrap s.e. of a mean over seeds ~ std of the per-image mean difference / sqrt(n)
    assert d.se_images == pytest.approx((a.mean(0) - b.mean(0)).std() / np.sqrt(4000), rel=0.15)
    assert d.clears
    same = paired_difference(a, a)  # negative control: an arm against itself is a tie
    assert (same.mean, same.se, same.clears) == (0.0, 0.0, False)


def test_paired_difference_resamples_whole_clusters():
    rng = np.random.default_rng(2)
    half = rng.random((3, 500)) < 0.5
    a = np.concatenate([half, half], axis=1)  # every image twice: two copies are one observation
    b = np.zeros_like(a)
    clustered = paired_difference(a, b, clusters=np.arange(1000) % 500, n_boot=500)
    naive = paired_difference(a, b, n_boot=500)
    assert clustered.se_images == pytest.approx(np.sqrt(2) * naive.se_images, rel=0.2)
    with pytest.raises(ValueError, match="seeds, images"):
        paired_difference(a[:1], b[:1])
