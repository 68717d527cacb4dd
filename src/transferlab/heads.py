"""Replacing the classification head of a pretrained model for a new number of classes."""

from __future__ import annotations

from typing import cast

from torch import nn

__all__ = ["find_head", "replace_head"]

# Where torchvision families keep their head: ResNet/RegNet/ShuffleNet/GoogLeNet and the course's TinyResNet
# use `fc`; VGG/AlexNet/MobileNet/EfficientNet/ConvNeXt/SqueezeNet/DenseNet `classifier`; Swin `head`; ViT `heads`.
HEAD_ATTRS = ("fc", "classifier", "head", "heads")


def _last_layer(container: nn.Module) -> tuple[str, nn.Module] | None:
    """Name and module of the last Linear in ``container`` (else its last 1x1 Conv2d, as in SqueezeNet)."""
    for kind in (nn.Linear, nn.Conv2d):
        found = [(n, m) for n, m in container.named_modules() if isinstance(m, kind)]
        if found and (kind is nn.Linear or found[-1][1].kernel_size == (1, 1)):
            return found[-1]
    return None


def find_head(model: nn.Module) -> tuple[str, nn.Module]:
    """Return the dotted name and module of ``model``'s final classification layer.

    Raises:
        TypeError: if the model's family is not one this function knows.

    Example:
        >>> from torchvision.models import vgg16
        >>> find_head(vgg16())[0]
        'classifier.6'
    """
    for attr in HEAD_ATTRS:
        container = getattr(model, attr, None)
        if not isinstance(container, nn.Module):
            continue
        found = _last_layer(container)
        if found is not None:
            name, layer = found
            return (f"{attr}.{name}" if name else attr), layer
    children = [n for n, _ in model.named_children()]
    raise TypeError(
        f"replace_head does not know the model family {type(model).__name__} (children: {children}): "
        f"it found no Linear or 1x1 Conv2d head under any of {list(HEAD_ATTRS)}. "
        "Replace the last layer by hand: find it with print(model), then assign a new layer, "
        "e.g. model.<name> = nn.Linear(old.in_features, num_classes)."
    )


def _new_head(old: nn.Linear | nn.Conv2d, num_classes: int, hidden: int | None, dropout: float) -> nn.Module:
    """A fresh head with the old layer's input size: Linear, or a 1x1 conv for a convolutional head."""
    conv = isinstance(old, nn.Conv2d)
    in_features = old.in_channels if conv else old.in_features

    def layer(n_in: int, n_out: int) -> nn.Module:
        return nn.Conv2d(n_in, n_out, kernel_size=1) if conv else nn.Linear(n_in, n_out)

    if hidden is None:
        layers = ([nn.Dropout(dropout)] if dropout > 0 else []) + [layer(in_features, num_classes)]
    else:
        layers = [layer(in_features, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout), layer(hidden, num_classes)]
    head = layers[0] if len(layers) == 1 else nn.Sequential(*layers)
    return head.to(device=old.weight.device, dtype=old.weight.dtype)


def replace_head(model: nn.Module, num_classes: int, hidden: int | None = None, dropout: float = 0.0) -> nn.Module:
    """Swap the final classification layer of ``model`` for a new, trainable one with ``num_classes`` outputs.

    Works for torchvision ResNet/RegNet/ShuffleNet (``fc``), VGG/AlexNet/MobileNet/EfficientNet/ConvNeXt/DenseNet
    (last Linear of ``classifier``), SqueezeNet (its final 1x1 conv), Swin/ViT, and the course's TinyResNet (``fc``).
    Everything before the head is kept as it is (frozen layers stay frozen).

    Args:
        model: the model, changed in place.
        num_classes: outputs of the new head.
        hidden: if given, the head becomes ``Linear(in, hidden) -> ReLU -> Dropout -> Linear(hidden, num_classes)``.
        dropout: dropout probability before the final layer (0 means none without a hidden layer).
    Returns:
        ``model``.

    Example:
        >>> from torchvision.models import resnet18
        >>> replace_head(resnet18(), 10).fc
        Linear(in_features=512, out_features=10, bias=True)
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}")
    name, old = find_head(model)
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, _new_head(cast("nn.Linear | nn.Conv2d", old), num_classes, hidden, dropout))
    if hasattr(model, "num_classes"):  # SqueezeNet keeps it and uses it nowhere else; keep it truthful
        vars(model)["num_classes"] = num_classes  # a plain attribute, not a parameter or a submodule
    return model
