"""Tests for transferlab.heads on torchvision families (random weights; architecture only)."""

import pytest
import torch
from torch import nn
from torchvision import models

from transferlab.freeze import count_parameters, freeze
from transferlab.heads import find_head, replace_head

# (builder, dotted name of the final layer) -- the layer a learner would replace by hand.
FAMILIES = [
    (models.resnet18, "fc"),
    (models.vgg16, "classifier.6"),
    (models.alexnet, "classifier.6"),
    (models.mobilenet_v2, "classifier.1"),
    (models.mobilenet_v3_small, "classifier.3"),
    (models.efficientnet_b0, "classifier.1"),
    (models.densenet121, "classifier"),
    (models.squeezenet1_1, "classifier.1"),
]


@pytest.mark.parametrize("builder, name", FAMILIES, ids=lambda x: getattr(x, "__name__", x))
def test_replace_head_gives_n_outputs_for_each_family(builder, name):
    # Built on the meta device: real module structure and shapes, no memory or init time (VGG16 has 138M params).
    with torch.device("meta"):
        model = freeze(builder())
        old = model.get_submodule(name)
        replace_head(model, 7)
        new = model.get_submodule(name)
        out = model.eval()(torch.randn(1, 3, 64, 64))
    assert out.shape == (1, 7)
    assert new is not old and type(new) is type(old)
    assert (new.out_features if isinstance(new, nn.Linear) else new.out_channels) == 7
    assert all(p.requires_grad for p in new.parameters())
    assert count_parameters(model).trainable == sum(p.numel() for p in new.parameters())


def test_replace_head_keeps_the_body_and_its_values():
    torch.manual_seed(0)
    model = models.resnet18()
    body_before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("fc.")}
    replace_head(model, 7)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in body_before.items())
    assert set(model.state_dict()) - set(body_before) == {"fc.weight", "fc.bias"}


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
    with torch.device("meta"):
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


def test_course_tiny_resnet_follows_resnet_names():
    from transferlab.models import TinyResNet_Weights, tiny_resnet

    model = freeze(tiny_resnet(weights=TinyResNet_Weights.DEFAULT))
    conv1 = model.conv1.weight.clone()
    replace_head(model, 10, hidden=32)
    assert find_head(model)[0] == "fc.3"
    assert [m.out_features for m in model.fc if isinstance(m, nn.Linear)] == [32, 10]
    assert torch.equal(model.conv1.weight, conv1)
    assert count_parameters(model).trainable == 256 * 32 + 32 + 32 * 10 + 10
    assert model.eval()(torch.rand(2, 3, 32, 32)).shape == (2, 10)
