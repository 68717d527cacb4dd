"""Tests for transferlab.features: the cache equals running the frozen backbone, and a head trains on it."""

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from transferlab.features import ShuffledBatches, extract_features, train_head


def backbone_and_data():
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5), nn.AdaptiveAvgPool2d(1))
    y = torch.arange(40) % 2
    x = torch.rand(40, 3, 8, 8) + y.view(-1, 1, 1, 1).float()
    return backbone, TensorDataset(x, y)


def test_extract_features_equals_the_backbone_in_eval_mode():
    backbone, data = backbone_and_data()
    backbone.train()
    bn_before = backbone[1].running_mean.clone()
    feats = extract_features(backbone, DataLoader(data, batch_size=16))
    x, y = feats.tensors
    assert x.shape == (40, 4) and not x.requires_grad
    assert torch.equal(y, data.tensors[1])
    assert backbone.training  # mode restored
    assert torch.equal(backbone[1].running_mean, bn_before)  # BN statistics untouched
    backbone.eval()
    with torch.no_grad():
        expected = backbone(data.tensors[0]).flatten(1)
    torch.testing.assert_close(x, expected)


def test_train_head_learns_on_cached_features_and_matches_full_model():
    backbone, data = backbone_and_data()
    feats = extract_features(backbone, DataLoader(data, batch_size=16))
    torch.manual_seed(1)
    head = nn.Linear(4, 2)
    opt = torch.optim.SGD(head.parameters(), lr=0.5)
    history = train_head(
        head, feats, feats, opt, epochs=30, batch_size=8, generator=torch.Generator().manual_seed(0), progress=False
    )
    assert len(history) == 30
    assert history.best_val_acc >= 0.9
    # the cached head plugged behind the frozen backbone gives the same predictions on images
    full = nn.Sequential(backbone, nn.Flatten(), head).eval()
    with torch.no_grad():
        assert torch.equal(full(data.tensors[0]).argmax(1), head(feats.tensors[0]).argmax(1))


def test_shuffled_batches_cover_every_sample_once_per_pass_in_a_seeded_order():
    data = TensorDataset(torch.arange(10.0), torch.arange(10))
    batches = ShuffledBatches(data, 4, generator=torch.Generator().manual_seed(0))
    first, second = list(batches), list(batches)
    assert len(batches) == 3 and [len(x) for x, _ in first] == [4, 4, 2]
    for one_pass in (first, second):
        x = torch.cat([b[0] for b in one_pass])
        assert sorted(x.tolist()) == list(range(10))  # a permutation: every sample exactly once
        assert torch.equal(torch.cat([b[1] for b in one_pass]).float(), x)  # inputs and labels stay paired
    assert not torch.equal(torch.cat([b[0] for b in first]), torch.cat([b[0] for b in second]))  # new order
    again = list(ShuffledBatches(data, 4, generator=torch.Generator().manual_seed(0)))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, again, strict=True))


def test_train_head_without_validation_picks_the_best_epoch_on_the_training_features():
    backbone, data = backbone_and_data()
    feats = extract_features(backbone, DataLoader(data, batch_size=16))
    head = nn.Linear(4, 2)
    history = train_head(
        head, feats, None, torch.optim.SGD(head.parameters(), lr=0.5), epochs=5, batch_size=8, progress=False
    )
    x, y = feats.tensors
    with torch.no_grad():
        assert history.val_acc[history.best_epoch] == (head(x).argmax(1) == y).float().mean().item()


def test_pooled_features_at_equals_slicing_the_network():
    from transferlab.features import pooled_features_at

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 6, 3), nn.Flatten(), nn.LazyLinear(2)
    )
    x = torch.rand(10, 3, 8, 8)
    net(x)  # materialise the lazy layer
    net.train()
    feats = pooled_features_at(net, DataLoader(TensorDataset(x, torch.zeros(10)), batch_size=4), ["2", "3", "5"])
    assert net.training and not net[0]._forward_hooks  # mode restored, hooks removed
    net.eval()
    with torch.no_grad():  # plain PyTorch as the reference: run the network up to each layer
        assert torch.allclose(feats["2"], net[:3](x).mean(dim=(2, 3)), atol=1e-6)
        assert torch.allclose(feats["3"], net[:4](x).mean(dim=(2, 3)), atol=1e-6)
        assert torch.allclose(feats["5"], net(x), atol=1e-6)
    import pytest

    with pytest.raises(ValueError, match="no submodule called"):
        pooled_features_at(net, [(x, None)], ["blocks.2"])
