"""Grad-CAM against a computation by hand (torch.autograd.grad on the layer's output)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from transferlab.gradcam import grad_cam


def _net():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(6, 5, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(5, 4),
    )


def _by_hand(model, inputs, classes):
    maps = model[:4](inputs)  # the layer's output, kept in the graph
    logits = model[4:](maps)
    (grads,) = torch.autograd.grad(logits.gather(1, classes.view(-1, 1)).sum(), maps)
    cam = F.relu((grads.mean(dim=(2, 3), keepdim=True) * maps).sum(1)).detach()
    return cam / cam.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1)


def test_grad_cam_matches_the_computation_by_hand():
    model, x = _net().eval(), torch.randn(3, 3, 8, 8)
    classes = torch.tensor([0, 2, 3])
    ours = grad_cam(model, model[3], x, classes, upsample=False)
    assert ours.shape == (3, 4, 4)
    torch.testing.assert_close(ours, _by_hand(model, x, classes))
    other = grad_cam(model, model[3], x, torch.tensor([1, 1, 1]), upsample=False)
    assert not torch.allclose(ours, other)  # the map depends on the class: the test can fail


def test_grad_cam_defaults_to_predictions_upsamples_and_restores_mode():
    model, x = _net().train(), torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        predicted = model.eval()(x).argmax(1)
    model.train()
    cam = grad_cam(model, model[3], x)
    assert cam.shape == (2, 8, 8) and model.training and float(cam.max()) <= 1.0 + 1e-6
    manual = F.interpolate(
        _by_hand(model.eval(), x, predicted)[:, None], size=(8, 8), mode="bilinear", align_corners=False
    )[:, 0]
    torch.testing.assert_close(cam, manual / manual.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1))
    assert not model[3]._forward_hooks  # the hook is removed


def test_grad_cam_names_a_layer_the_model_does_not_use():
    with pytest.raises(ValueError, match="never ran"):
        grad_cam(_net(), nn.ReLU(), torch.randn(1, 3, 8, 8))
