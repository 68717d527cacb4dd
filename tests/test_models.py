"""TinyResNet and its shipped pretrained weights."""

import socket
import time

import pytest
import torch
from torch import nn
from torchvision.models import resnet18

from transferlab.data import source_dataset
from transferlab.models import TinyResNet_Weights, tiny_resnet
from transferlab.pretrain import PretrainConfig, _state_bytes, pretrain


def test_module_names_match_torchvision_resnet():
    ours = [name for name, _ in tiny_resnet().named_children()]
    assert ours == [name for name, _ in resnet18().named_children()]
    assert ours == ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc"]


def test_forward_shape_and_num_classes():
    model = tiny_resnet(num_classes=10)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_param_count_matches_meta():
    meta = TinyResNet_Weights.DEFAULT.meta
    assert sum(p.numel() for p in tiny_resnet().parameters()) == meta["num_params"]
    assert len(meta["categories"]) == 52 and meta["categories"][:3] == ["A", "B", "C"]


def test_enum_like_torchvision():
    assert TinyResNet_Weights.DEFAULT is TinyResNet_Weights.LETTERS_V1
    assert TinyResNet_Weights.verify("DEFAULT") is TinyResNet_Weights.DEFAULT
    x = torch.full((3, 32, 32), 0.5)
    out = TinyResNet_Weights.DEFAULT.transforms()(x)
    assert out.shape == x.shape and abs(float(out.mean())) < 1e-6  # 0.5 is the source mean


def test_loads_offline_fast(monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    start = time.perf_counter()
    model = tiny_resnet(weights=TinyResNet_Weights.DEFAULT)
    assert time.perf_counter() - start < 1.0
    state = TinyResNet_Weights.DEFAULT.get_state_dict()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())


def test_reaches_published_source_accuracy():
    weights = TinyResNet_Weights.DEFAULT
    model = tiny_resnet(weights=weights).eval()
    published = weights.meta["_metrics"]["letters-scenes-test"]["acc@1"] / 100
    # through the public path: the dataset with the weights' own transforms
    test = source_dataset("test", transform=weights.transforms())
    with torch.no_grad():
        preds = torch.cat([model(torch.stack([test[i][0] for i in range(s, min(s + 520, len(test)))])).argmax(1)
                           for s in range(0, len(test), 520)])  # fmt: skip
    acc = float((preds == test.labels).float().mean())
    assert abs(acc - published) <= 0.01
    assert acc > 5 / 52  # far above chance


def test_wrong_num_classes_says_to_replace_the_head():
    with pytest.raises(ValueError, match=r"replace its head.*nn.Linear\(model.fc.in_features, 10\)"):
        tiny_resnet(weights=TinyResNet_Weights.DEFAULT, num_classes=10)
    model = tiny_resnet(weights="DEFAULT", num_classes=52)
    model.fc = nn.Linear(model.fc.in_features, 10)
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


def test_pretraining_same_seed_is_bit_identical():
    cfg = PretrainConfig(steps=3, batch_size=16, glyphs_per_class=2, seed=1)
    model_a, model_b = pretrain(cfg, log_every=0), pretrain(cfg, log_every=0)
    a, b = model_a.state_dict(), model_b.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _state_bytes(model_a) == _state_bytes(model_b)  # the checkpoint file, byte for byte
    c = pretrain(PretrainConfig(steps=3, batch_size=16, glyphs_per_class=2, seed=2), log_every=0).state_dict()
    assert not torch.equal(a["conv1.weight"], c["conv1.weight"])
