"""Tests for transferlab.optim: parameter groups, gradual unfreezing and the learning-rate search."""

import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from transferlab.optim import HALF_DECADES, GradualUnfreezer, LRSearch, param_groups, tune_lr
from transferlab.training import fit


def net() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module("layer1", nn.Sequential(nn.Linear(4, 8), nn.ReLU()))
    model.add_module("layer10", nn.Linear(8, 8))
    model.add_module("fc", nn.Linear(8, 3))
    return model


def ids(params):
    return {id(p) for p in params}


def test_param_groups_assign_every_trainable_param_exactly_once():
    model = net()
    groups = param_groups(model, {"layer1": 1e-3, "fc": 1e-1}, default_lr=1e-2)
    by_name = {g["name"]: g for g in groups}
    assert [g["name"] for g in groups] == ["layer1", "fc", "default"]
    assert ids(by_name["layer1"]["params"]) == ids(model.layer1.parameters())  # not layer10
    assert ids(by_name["default"]["params"]) == ids(model.layer10.parameters())
    all_ids = [id(p) for g in groups for p in g["params"]]
    assert len(all_ids) == len(set(all_ids)) == len(list(model.parameters()))
    opt = torch.optim.SGD(groups, lr=123.0)
    assert [g["lr"] for g in opt.param_groups] == [1e-3, 1e-1, 1e-2]


def test_param_groups_longest_prefix_wins_and_frozen_params_are_left_out():
    model = net()
    for p in model.layer10.parameters():
        p.requires_grad_(False)
    groups = param_groups(model, {"layer1": 1e-3, "layer1.0": 1e-4, "fc": 1e-1})
    by_name = {g["name"]: g for g in groups}
    assert ids(by_name["layer1.0"]["params"]) == ids(model.layer1[0].parameters())
    assert "layer1" not in by_name  # layer1 has no parameters of its own outside layer1.0
    with_frozen = param_groups(model, {"fc": 1e-1}, default_lr=1e-3, include_frozen=True)
    assert sum(len(g["params"]) for g in with_frozen) == len(list(model.parameters()))


def test_param_groups_errors_name_the_problem_and_the_fix():
    model = net()
    with pytest.raises(ValueError, match=r"no parameters under \['layer4'\].*layer1"):
        param_groups(model, {"layer4": 1e-3}, default_lr=1e-2)
    with pytest.raises(ValueError, match="default_lr"):
        param_groups(model, {"fc": 1e-3})
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        param_groups(model, {"fc": 1e-3})


def test_gradual_unfreezer_adds_groups_at_the_scheduled_epochs():
    model = net()
    for p in list(model.layer1.parameters()) + list(model.layer10.parameters()):
        p.requires_grad_(False)
    opt = torch.optim.SGD(param_groups(model, {"fc": 0.1}), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    unfreezer = GradualUnfreezer(model, opt, {1: ["layer10"], 3: ["layer1"]}, lrs={"layer10": 0.01, "layer1": 0.001})
    data = TensorDataset(torch.randn(16, 4), torch.arange(16) % 3)
    frozen_l1 = model.layer1[0].weight.detach().clone()
    history = fit(
        model,
        DataLoader(data, batch_size=8),
        None,
        opt,
        epochs=4,
        scheduler=sched,
        progress=False,
        on_epoch_start=unfreezer,
        restore_best=False,
    )
    assert [len(row) for row in history.lr] == [1, 2, 2, 3]
    assert history.lr[1] == [0.1, 0.01]
    assert history.lr[2] == pytest.approx([0.05, 0.005])  # the scheduler decays added groups too
    assert history.lr[3] == pytest.approx([0.05, 0.005, 0.001])
    assert [g["name"] for g in opt.param_groups] == ["fc", "layer10", "layer1"]
    assert all(p.requires_grad for p in model.parameters())
    assert not torch.equal(model.layer1[0].weight, frozen_l1)  # trained in epoch 3
    assert unfreezer.unfrozen == ["layer10", "layer1"]


def test_gradual_unfreezer_reenables_params_already_in_the_optimizer():
    model = net()
    opt = torch.optim.SGD(param_groups(model, {"fc": 0.1}, default_lr=0.01, include_frozen=True))
    for p in model.layer1.parameters():
        p.requires_grad_(False)
    GradualUnfreezer(model, opt, {0: ["layer1"]}, default_lr=0.5)(0)
    assert len(opt.param_groups) == 2 and all(p.requires_grad for p in model.layer1.parameters())


def test_gradual_unfreezer_rejects_unknown_names_and_missing_lrs():
    model = net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="unknown module"):
        GradualUnfreezer(model, opt, {1: ["layer4"]}, default_lr=0.1)
    with pytest.raises(ValueError, match="learning rate"):
        GradualUnfreezer(model, opt, {1: ["layer1"]})


def test_tune_lr_widens_an_edge_choice_until_it_is_inside():
    calls = []

    def score(lr):
        calls.append(lr)
        return -abs(math.log10(lr) - math.log10(0.03))  # best at 3e-2, above the starting grid

    found = tune_lr(score, (1e-3, 3e-3, 1e-2))
    assert found.best == 0.03 and not found.at_edge
    assert list(found.scores) == [1e-3, 3e-3, 1e-2, 3e-2, 1e-1]  # two rungs added above, none below
    assert sorted(calls) == list(found.scores)  # each rate scored once


def test_tune_lr_keeps_an_inside_choice_and_breaks_ties_toward_the_rate_scored_first():
    assert tune_lr(lambda lr: {1e-3: 0.5, 3e-3: 0.7, 1e-2: 0.6}[lr], (1e-3, 3e-3, 1e-2)) == LRSearch(
        3e-3, {1e-3: 0.5, 3e-3: 0.7, 1e-2: 0.6}, at_edge=False
    )
    flat = tune_lr(lambda lr: 1.0, (1e-3, 3e-3, 1e-2))  # a plateau: one rung below is tried, then the search stops
    assert flat.best == 1e-3 and list(flat.scores) == [3e-4, 1e-3, 3e-3, 1e-2] and not flat.at_edge


def test_tune_lr_reports_an_edge_when_the_ladder_ends_and_rejects_rates_off_the_ladder():
    found = tune_lr(lambda lr: lr, (0.1, 0.3))
    assert found.best == HALF_DECADES[-1] and found.at_edge
    with pytest.raises(ValueError, match=r"not on it: \[0.002\]"):
        tune_lr(lambda lr: lr, (1e-3, 0.002))
    with pytest.raises(ValueError, match="starts from rates of the ladder"):
        tune_lr(lambda lr: lr, ())
