"""transferlab: the helper package behind the transfer-learning course.

Each module holds one concern (``transferlab.freeze``, ``transferlab.loading``, ...). The names a notebook uses
most are also importable from the package itself::

    from transferlab import replace_head, load_matching, tiny_resnet, TinyResNet_Weights

They are imported on first use (PEP 562), so ``import transferlab`` stays fast and pulls in nothing heavy.
``freeze`` itself is not among them: importing the module ``transferlab.freeze`` sets the package attribute of
that name to the module, so ``from transferlab import freeze`` could give either; use
``from transferlab.freeze import freeze``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> module that defines it: the learner's toolbox, in the order the course meets it.
_EXPORTS = {
    "seed_everything": "env",
    "get_device": "env",
    "num_threads": "env",
    "tiny_resnet": "models",
    "TinyResNet_Weights": "models",
    "efficientnet_lite0": "lite0",
    "EfficientNetLite0_Weights": "lite0",
    "imagenet_model": "imagenet",
    "unfreeze": "freeze",
    "freeze_bn": "freeze",
    "unfreeze_bn": "freeze",
    "is_bn_frozen": "freeze",
    "count_parameters": "freeze",
    "find_head": "heads",
    "replace_head": "heads",
    "load_matching": "loading",
    "adapt_input_conv": "loading",
    "clean_state_dict": "loading",
    "train_one_epoch": "training",
    "evaluate": "training",
    "predict": "training",
    "fit": "training",
    "extract_features": "features",
    "param_groups": "optim",
    "GradualUnfreezer": "optim",
    "tune_lr": "optim",
    "save_checkpoint": "checkpoint",
    "load_checkpoint": "checkpoint",
    "adapt_bn": "shift",
    "apply_lora": "lora",
    "merge_lora": "lora",
    "bitfit": "lora",
}

__all__ = [  # the names of _EXPORTS, sorted (tests/test_public_api.py checks they agree)
    "EfficientNetLite0_Weights",
    "GradualUnfreezer",
    "TinyResNet_Weights",
    "__version__",
    "adapt_bn",
    "adapt_input_conv",
    "apply_lora",
    "bitfit",
    "clean_state_dict",
    "count_parameters",
    "efficientnet_lite0",
    "evaluate",
    "extract_features",
    "find_head",
    "fit",
    "freeze_bn",
    "get_device",
    "imagenet_model",
    "is_bn_frozen",
    "load_checkpoint",
    "load_matching",
    "merge_lora",
    "num_threads",
    "param_groups",
    "predict",
    "replace_head",
    "save_checkpoint",
    "seed_everything",
    "tiny_resnet",
    "train_one_epoch",
    "tune_lr",
    "unfreeze",
    "unfreeze_bn",
]

if TYPE_CHECKING:  # what the lazy imports give, for type checkers and editors
    from transferlab.checkpoint import load_checkpoint, save_checkpoint
    from transferlab.env import get_device, num_threads, seed_everything
    from transferlab.features import extract_features
    from transferlab.freeze import count_parameters, freeze_bn, is_bn_frozen, unfreeze, unfreeze_bn
    from transferlab.heads import find_head, replace_head
    from transferlab.imagenet import imagenet_model
    from transferlab.lite0 import EfficientNetLite0_Weights, efficientnet_lite0
    from transferlab.loading import adapt_input_conv, clean_state_dict, load_matching
    from transferlab.lora import apply_lora, bitfit, merge_lora
    from transferlab.models import TinyResNet_Weights, tiny_resnet
    from transferlab.optim import GradualUnfreezer, param_groups, tune_lr
    from transferlab.shift import adapt_bn
    from transferlab.training import evaluate, fit, predict, train_one_epoch


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"transferlab.{_EXPORTS[name]}"), name)
        globals()[name] = value  # imported once
        return value
    raise AttributeError(f"module 'transferlab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
