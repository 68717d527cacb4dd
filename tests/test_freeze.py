"""Tests for transferlab.freeze, checked against plain PyTorch."""

import copy

import pytest
import torch
from torch import nn
from torchvision.models import resnet18

from transferlab.freeze import count_parameters, freeze, freeze_bn, is_bn_frozen, unfreeze, unfreeze_bn


def small_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))


def test_freeze_whole_model_sets_every_requires_grad_false():
    model = freeze(resnet18())
    assert not any(p.requires_grad for p in model.parameters())


def test_freeze_named_submodules_only():
    model = freeze(resnet18(), ["conv1", "layer1"])
    for name, p in model.named_parameters():
        assert p.requires_grad == (not name.startswith(("conv1.", "layer1."))), name


def test_unfreeze_inner_block_after_freezing_all():
    model = unfreeze(freeze(resnet18()), "layer4.1")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in model.named_parameters() if n.startswith("layer4.1.")}


def test_unknown_submodule_name_is_a_clear_error():
    with pytest.raises(ValueError, match=r"no submodule 'layer9'.*children are"):
        freeze(resnet18(), ["layer9"])


def test_count_parameters_matches_plain_pytorch():
    model = freeze(resnet18(), ["conv1", "layer1", "layer2"])
    expected_frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    counts = count_parameters(model)
    assert counts.frozen == expected_frozen > 0
    assert counts.total == sum(p.numel() for p in model.parameters())
    assert counts.trainable == counts.total - expected_frozen


def test_frozen_batchnorm_still_drifts_without_freeze_bn():
    """The pitfall freeze_bn exists for: requires_grad=False does not stop running statistics."""
    model = freeze(small_net()).train()
    before = model[1].running_mean.clone()
    model(torch.randn(8, 3, 8, 8) + 2.0)
    assert not torch.equal(model[1].running_mean, before)


def test_freeze_bn_survives_train_and_stops_running_stats():
    model = freeze_bn(small_net())
    bn = model[1]
    stats = (bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone())
    model.train()  # what every training loop calls
    out = model(torch.randn(8, 3, 8, 8) + 2.0)
    assert torch.equal(bn.running_mean, stats[0]) and torch.equal(bn.running_var, stats[1])
    assert torch.equal(bn.num_batches_tracked, stats[2])
    assert not bn.training and not any(p.requires_grad for p in bn.parameters())
    # the rest of the model still trains, and its output equals plain PyTorch with that BN in eval mode
    assert model[0].training and model[0].weight.requires_grad
    reference = copy.deepcopy(model)
    unfreeze_bn(reference).train()
    reference[1].eval()
    torch.manual_seed(1)
    x = torch.randn(4, 3, 8, 8)
    assert torch.allclose(model(x), reference(x))
    assert out.shape == (8, 2)


def test_freeze_bn_is_idempotent_and_undoable():
    model = freeze_bn(freeze_bn(small_net()))
    assert len(model[1]._forward_pre_hooks) == 1
    unfreeze_bn(model).train()
    before = model[1].running_mean.clone()
    model(torch.randn(8, 3, 8, 8) + 2.0)
    assert not torch.equal(model[1].running_mean, before)
    assert all(p.requires_grad for p in model[1].parameters())


def test_freeze_bn_in_a_torchvision_resnet():
    model = freeze_bn(resnet18()).train()
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    before = [bn.running_mean.clone() for bn in bns]
    model(torch.randn(2, 3, 32, 32))
    assert all(torch.equal(bn.running_mean, b) for bn, b in zip(bns, before, strict=True))
    assert len(bns) == 20


def test_unfreeze_bn_on_a_deep_copy_leaves_the_original_frozen():
    original = freeze_bn(small_net())
    copy_ = unfreeze_bn(copy.deepcopy(original))
    x = torch.randn(8, 3, 8, 8) + 2.0
    before = original[1].running_mean.clone()
    original.train()(x)
    assert torch.equal(original[1].running_mean, before)
    copy_.train()(x)
    assert not torch.equal(copy_[1].running_mean, before)


def test_is_bn_frozen_follows_freeze_and_unfreeze_also_on_a_copy():

    model = freeze_bn(small_net())
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(is_bn_frozen(m) for m in bns)
    assert not is_bn_frozen(nn.Linear(2, 2)) and not is_bn_frozen(nn.BatchNorm2d(2))
    clone = unfreeze_bn(copy.deepcopy(model))  # the copy's hook is the copy's own: unfreezing it leaves the original
    assert not any(is_bn_frozen(m) for m in clone.modules())
    assert all(is_bn_frozen(m) for m in bns)
    assert not any(k.endswith("hook") for k in model.state_dict())  # the handle is not saved with the weights
