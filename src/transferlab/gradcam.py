"""Grad-CAM (Selvaraju et al. 2017): where in the image a convolutional layer's evidence for a class lies.

The class score's gradient with respect to a layer's feature maps, averaged over space, weighs each map; the
weighted sum, passed through a ReLU, is the heat map. Two hooks collect what is needed in one forward and one
backward pass: a forward hook keeps the layer's output, and a hook on that output tensor keeps its gradient.
Notebook 12 writes this out in plain PyTorch first.

Example:
    >>> model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    ...                       nn.Linear(4, 2))
    >>> grad_cam(model, model[1], torch.randn(2, 3, 8, 8)).shape
    torch.Size([2, 8, 8])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["grad_cam"]


def grad_cam(
    model: nn.Module, layer: nn.Module, inputs: torch.Tensor, classes: torch.Tensor | None = None, upsample: bool = True
) -> torch.Tensor:
    """Grad-CAM maps of ``layer`` for ``classes`` (default: each input's predicted class), in [0, 1] per image.

    Args:
        model: the classifier, run in eval mode (its mode is restored).
        layer: a module of ``model`` whose output is ``(N, C, h, w)`` feature maps.
        inputs: a batch ``(N, 3, H, W)``.
        classes: one class index per input, or ``None`` for the predicted ones.
        upsample: resize the maps to ``(H, W)`` (bilinear); ``False`` returns them at ``(h, w)``.
    Returns:
        ``(N, H, W)`` (or ``(N, h, w)``) maps, each divided by its maximum (an all-zero map stays zero).
    """
    kept: dict[str, torch.Tensor] = {}

    def keep(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        kept["maps"] = output
        output.register_hook(lambda grad: kept.__setitem__("grads", grad))

    was_training = model.training
    model.eval()
    handle = layer.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            logits = model(inputs.requires_grad_(False))
            picked = logits.argmax(1) if classes is None else torch.as_tensor(classes, device=logits.device)
            model.zero_grad(set_to_none=True)
            logits.gather(1, picked.view(-1, 1)).sum().backward()  # each image's score depends on it alone
    finally:
        handle.remove()
        model.train(was_training)
    if "maps" not in kept:
        raise ValueError("the layer never ran in the forward pass; pass a module of `model` that its forward uses.")
    maps, grads = kept["maps"].detach(), kept["grads"].detach()
    weights = grads.mean(dim=(2, 3), keepdim=True)  # one weight per feature map: its spatially averaged gradient
    cam = F.relu((weights * maps).sum(dim=1))
    if upsample:
        cam = F.interpolate(cam.unsqueeze(1), size=inputs.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    peak = cam.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1)
    return cam / peak
