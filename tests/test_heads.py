"""Tests for transferlab.heads on torchvision families (random weights; architecture only)."""

import pytest
import torch
from torch import nn
from torchvision import models

from transferlab.freeze import count_parameters, freeze
from transferlab.heads import find_head, replace_head

# (builder, dotted name of the final layer) -- the layer a learner would replace by hand.
def small_densenet() -> models.DenseNet:
    return models.DenseNet(growth_rate=8, block_config=(1, 1), num_init_features=8)


FAMILIES = [
    (models.resnet18, "fc"),
    (models.vgg11, "classifier.6"),
    (models.alexnet, "classifier.6"),
    (models.mobilenet_v2, "classifier.1"),
    (models.mobilenet_v3_small, "classifier.3"),
    (models.efficientnet_b0, "classifier.1"),
    (small_densenet, "classifier"),  # torchvision's DenseNet class, fewer layers than densenet121: faster test
    (models.squeezenet1_1, "classifier.1"),
]


@pytest.mark.parametrize("builder, name", FAMILIES, ids=lambda x: getattr(x, "__name__", x))
def test_replace_head_gives_n_outputs_and_keeps_the_rest(builder, name):
    torch.manual_seed(0)
    model = freeze(builder())
    old = model.get_submodule(name)
    body_before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith(name + ".")}
    replace_head(model, 7)
    new = model.get_submodule(name)
    assert new is not old and type(new) is type(old)
    assert (new.out_features if isinstance(new, nn.Linear) else new.out_channels) == 7
    assert all(p.requires_grad for p in new.parameters())
    assert count_parameters(model).trainable == sum(p.numel() for p in new.parameters())
    assert all(torch.equal(model.state_dict()[k], v) for k, v in body_before.items())
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 7)


def test_squeezenet_gets_a_1x1_conv_and_truthful_num_classes():
    model = replace_head(models.squeezenet1_0(), 5)
    assert isinstance(model.classifier[1], nn.Conv2d) and model.classifier[1].kernel_size == (1, 1)
    assert model.num_classes == 5


def test_hidden_layer_head_matches_hand_written_one():
    model = replace_head(models.resnet18(), 10, hidden=64, dropout=0.3)
    expected = nn.Sequential(nn.Linear(512, 64), nn.ReLU(inplace=True), nn.Dropout(0.3), nn.Linear(64, 10))
    assert repr(model.fc) == repr(expected)


def test_dropout_without_hidden():
    fc = replace_head(models.resnet18(), 3, dropout=0.5).fc
    assert isinstance(fc[0], nn.Dropout) and fc[0].p == 0.5 and fc[1].out_features == 3


def test_find_head_names_the_layer():
    assert find_head(models.vgg16())[0] == "classifier.6"


def test_unknown_family_is_a_clear_error():
    class Custom(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Linear(4, 4)
            self.out = nn.Linear(4, 2)

    with pytest.raises(TypeError, match=r"does not know the model family Custom.*children: \['body', 'out'\].*by hand"):
        replace_head(Custom(), 3)


def test_num_classes_must_be_positive():
    with pytest.raises(ValueError, match="num_classes"):
        replace_head(models.resnet18(), 0)
