"""Tests for transferlab.pretrain: a tiny run of the command line writes a loadable checkpoint and its metadata."""

import json

import pytest
import torch

from transferlab import pretrain, training
from transferlab.data import SOURCE_CLASSES, source_batch, source_glyphs
from transferlab.models import tiny_resnet


@pytest.fixture
def small_source_test(monkeypatch):
    """The fixed source test set takes ~10 s to render; a tiny run is scored on 52 fresh scenes instead."""

    class Small:
        def __init__(self, classes):
            self.images, self.labels = source_batch(len(classes), 1.0, 99, classes, source_glyphs("train", 1))

        def __len__(self):
            return len(self.labels)

    def small(split: str, classes=SOURCE_CLASSES) -> Small:
        assert split == "test"
        return Small(classes)

    monkeypatch.setattr(pretrain, "source_dataset", small)
    return small


def test_main_writes_a_checkpoint_that_loads_into_tiny_resnet_and_its_metadata(tmp_path, small_source_test):
    out = tmp_path / "sub" / "weights.pt"
    out.parent.mkdir()
    pretrain.main(["--steps", "3", "--batch-size", "8", "--glyphs-per-class", "1", "--threads", "1", "--out", str(out)])
    assert sorted(p.name for p in out.parent.iterdir()) == ["weights.json", "weights.pt"]  # no temporary left over
    state = torch.load(out, map_location="cpu", weights_only=True)
    model = tiny_resnet(num_classes=len(SOURCE_CLASSES))
    model.load_state_dict(state)  # strict: every key and shape matches the architecture
    meta = json.loads((tmp_path / "sub" / "weights.json").read_text(encoding="utf-8"))
    assert meta["categories"] == list(SOURCE_CLASSES)
    assert meta["num_params"] == sum(p.numel() for p in model.parameters())
    assert meta["config"]["steps"] == 3 and meta["config"]["batch_size"] == 8
    assert meta["build"]["threads"] == 1
    # the stored accuracy is the one the written weights reach on the (small) test set
    accuracy = pretrain.source_accuracy(model.eval())
    assert meta["_metrics"]["letters-scenes-test"]["acc@1"] == round(100 * accuracy, 2)


def test_main_with_excluded_letters_builds_a_smaller_head(tmp_path, small_source_test):
    out = tmp_path / "ablation.pt"
    pretrain.main(
        [
            "--steps",
            "2",
            "--batch-size",
            "8",
            "--glyphs-per-class",
            "1",
            "--threads",
            "1",
            "--exclude",
            "OlZ",
            "--out",
            str(out),
        ]
    )
    state = torch.load(out, map_location="cpu", weights_only=True)
    assert state["fc.weight"].shape == (len(SOURCE_CLASSES) - 3, 256)
    meta = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
    assert "O" not in meta["categories"] and len(meta["categories"]) == len(SOURCE_CLASSES) - 3


def test_pretrain_steps_are_the_library_recipe(monkeypatch):
    """pretrain() trains through train_one_cycle (train_steps underneath) with the configured budget and recipe."""
    seen = {}

    def spy(model, data, steps, optimizer, **kwargs):
        seen.update(steps=steps, batch=data(0), optimizer=optimizer, **kwargs)
        return [0.0] * steps

    monkeypatch.setattr(training, "train_steps", spy)
    cfg = pretrain.PretrainConfig()
    cfg.steps, cfg.batch_size, cfg.glyphs_per_class = 5, 4, 1
    pretrain.pretrain(cfg, log_every=0)
    images, labels = seen["batch"]
    assert seen["steps"] == 5 and images.shape == (4, 3, 32, 32) and labels.shape == (4,)
    assert isinstance(seen["scheduler"], torch.optim.lr_scheduler.OneCycleLR)
    assert seen["scheduler"].total_steps == 5
    assert isinstance(seen["optimizer"], torch.optim.AdamW)
    assert seen["optimizer"].defaults["weight_decay"] == cfg.weight_decay
    assert seen["loss_fn"].label_smoothing == cfg.label_smoothing
    normalised = seen["transform"](torch.full((1, 3, 2, 2), 0.75))
    assert torch.allclose(normalised, torch.ones(1, 3, 2, 2))  # (0.75 - 0.5) / 0.25


def test_source_accuracy_matches_plain_pytorch_and_keeps_the_mode():
    from torchvision.transforms import Normalize

    from transferlab.data import source_dataset
    from transferlab.models import NORM_MEAN, NORM_STD, TinyResNet

    torch.manual_seed(0)
    model, classes = TinyResNet(num_classes=3).train(), ("A", "b", "C")
    test = source_dataset("test", classes=classes)
    model.eval()
    with torch.no_grad():
        hits = int((model(Normalize(NORM_MEAN, NORM_STD)(test.images)).argmax(1) == test.labels).sum())
    model.train()
    assert pretrain.source_accuracy(model, classes, batch_size=7) == hits / len(test)
    assert model.training  # evaluated in eval mode, handed back in train mode
