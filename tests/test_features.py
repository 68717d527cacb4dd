"""Tests for transferlab.features: the cache equals running the frozen backbone, and a head trains on it."""

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from transferlab.features import extract_features, train_head


def backbone_and_data():
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5),
                             nn.AdaptiveAvgPool2d(1))
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
    history = train_head(head, feats, feats, opt, epochs=30, batch_size=8,
                         generator=torch.Generator().manual_seed(0), progress=False)
    assert len(history) == 30
    assert history.best_val_acc >= 0.9
    # the cached head plugged behind the frozen backbone gives the same predictions on images
    full = nn.Sequential(backbone, nn.Flatten(), head).eval()
    with torch.no_grad():
        assert torch.equal(full(data.tensors[0]).argmax(1), head(feats.tensors[0]).argmax(1))
