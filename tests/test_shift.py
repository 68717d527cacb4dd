"""Tests for transferlab.shift: the shifted target domains and AdaBN, checked against plain PyTorch."""

import copy

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from transferlab.data import target_dataset
from transferlab.freeze import freeze_bn
from transferlab.models import TinyResNet
from transferlab.shift import SHIFTS, adapt_bn, apply_shift, batchnorm_layers, shifted_target


def small_model(seed: int = 0) -> TinyResNet:
    torch.manual_seed(seed)
    model = TinyResNet(num_classes=10, widths=(8, 8, 16, 16))
    for _, bn in batchnorm_layers(model):  # a "source" model: statistics that are not the defaults
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.num_batches_tracked.fill_(100)
    return model.eval()


def pool(n: int = 40, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed)) * 2 + 0.5


def plain_adabn(model: nn.Module, batches) -> nn.Module:
    """AdaBN written out in plain PyTorch, the reference for adapt_bn."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        for images in batches:
            model(images)
    return model.eval()


def test_adapt_bn_equals_plain_pytorch_and_keeps_the_weights():
    model, images = small_model(), pool()
    reference = plain_adabn(copy.deepcopy(model), images.split(16))
    weights = {k: v.clone() for k, v in model.named_parameters()}
    adapted = adapt_bn(model, DataLoader(TensorDataset(images, torch.zeros(len(images))), batch_size=16))
    assert adapted is model and not model.training
    for key, value in reference.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    for key, value in model.named_parameters():
        assert torch.equal(value, weights[key]), key
    assert all(bn.momentum == 0.1 for _, bn in batchnorm_layers(model))  # momentum restored
    assert model.bn1.num_batches_tracked.item() == 3


def test_adapt_bn_with_one_batch_gives_that_batch_statistics():
    bn = nn.BatchNorm2d(3).eval()
    x = torch.randn(8, 3, 5, 5) * 3 + 2
    adapt_bn(nn.Sequential(bn), [x])  # images alone, no labels
    assert torch.allclose(bn.running_mean, x.mean((0, 2, 3)), atol=1e-6)
    assert torch.allclose(bn.running_var, x.var((0, 2, 3), unbiased=True), atol=1e-5)


def test_adapt_bn_runs_only_batchnorm_in_train_mode():
    torch.manual_seed(0)
    with_dropout = nn.Sequential(nn.Dropout(0.9), nn.BatchNorm1d(4))
    x = torch.randn(64, 4) + 3
    adapt_bn(with_dropout, [x])
    assert torch.allclose(with_dropout[1].running_mean, x.mean(0), atol=1e-6)  # dropout was off
    model = small_model().train()
    adapt_bn(model, [pool()])
    assert model.training  # the mode is restored


def test_no_batchnorm_is_a_clear_error():
    with pytest.raises(ValueError, match="has no BatchNorm layers; AdaBN re-estimates BatchNorm statistics"):
        adapt_bn(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()), [pool()])


def test_empty_loader_is_a_clear_error_and_leaves_the_model_unchanged():
    model = small_model()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match="the loader yielded no images"):
        adapt_bn(model, DataLoader(TensorDataset(torch.empty(0, 3, 32, 32), torch.empty(0)), batch_size=4))
    for key, value in before.items():
        assert torch.equal(model.state_dict()[key], value), key
    assert all(bn.momentum == 0.1 for _, bn in batchnorm_layers(model))


def test_a_failing_batch_leaves_the_model_unchanged():
    model = small_model()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(RuntimeError):
        adapt_bn(model, [pool(8), torch.rand(4, 5, 32, 32)])  # the second batch has the wrong channel count
    for key, value in before.items():
        assert torch.equal(model.state_dict()[key], value), key


def test_frozen_or_untracked_batchnorm_is_a_clear_error():
    with pytest.raises(ValueError, match=r"frozen by freeze_bn.*unfreeze_bn"):
        adapt_bn(freeze_bn(small_model()), [pool()])
    with pytest.raises(ValueError, match="track_running_stats=False"):
        adapt_bn(nn.Sequential(nn.BatchNorm2d(3, track_running_stats=False)), [pool()])


def test_shifts_keep_digits_labels_and_split():
    reference = target_dataset("test")
    for shift in SHIFTS:
        shifted = shifted_target("test", shift)
        assert torch.equal(shifted.labels, reference.labels)
        assert torch.equal(shifted.source_index, reference.source_index)
        assert shifted.images.shape == reference.images.shape
        assert 0 <= float(shifted.images.min()) and float(shifted.images.max()) <= 1
    assert torch.equal(shifted_target("test", "paper").images, reference.images)
    assert torch.equal(shifted_target("test", "inverted").images, 1 - reference.images)
    train = shifted_target("train", "mono", k=3, seed=1)
    assert torch.equal(train.source_index, target_dataset("train", k=3, seed=1).source_index)


def test_blur_and_dim_halves_brightness_and_smooths():
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    y = apply_shift(x, "blur+dim")
    assert y.mean().item() == pytest.approx(0.5 * x.mean().item(), rel=0.02)
    assert (y[..., 1:] - y[..., :-1]).abs().mean() < 0.5 * 0.5 * (x[..., 1:] - x[..., :-1]).abs().mean()


def test_unknown_shift_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown shift 'sepia'; use one of"):
        shifted_target("test", "sepia")
    with pytest.raises(ValueError, match="unknown shift"):
        apply_shift(torch.rand(1, 3, 4, 4), "sepia")
