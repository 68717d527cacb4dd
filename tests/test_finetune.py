"""The fine-tuning recipe and its command, on a tiny planted folder (32 px, a few steps: seconds, no network)."""

import re

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from transferlab.finetune import (
    WEIGHTS,
    accuracy,
    augment,
    eval_transform,
    finetune_folder,
    load_data,
    load_finetuned,
    main,
    new_lite0,
    save_finetuned,
    train_run,
)

FAST = ["--size", "32", "--steps", "2", "--probe-steps", "4", "--batch-size", "4", "--no-progress"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for c, cls in enumerate(["ant", "bee", "cat"]):
        (root / cls).mkdir()
        for i in range(5):
            pixels = rng.integers(0, 60, (20, 24, 3)) + 90 * c  # a class is a brightness: learnable
            Image.fromarray(pixels.astype(np.uint8)).save(root / cls / f"{i}.png")
    return root


def test_eval_transform_is_the_weights_own_at_224():
    assert repr(eval_transform(224)) == repr(WEIGHTS.transforms())


def test_augment_gives_fresh_views_in_the_eval_range():
    raw = torch.randint(0, 256, (3, 3, 37, 37), dtype=torch.uint8)
    torch.manual_seed(0)
    a = augment(raw, 32)
    assert a.shape == (3, 3, 32, 32) and a.min() >= -1 and a.max() <= 1
    assert not torch.equal(a, augment(raw, 32))


def test_train_run_keeps_the_best_validation_weights():
    torch.manual_seed(0)
    x, y = torch.randn(60, 8), torch.randint(0, 3, (60,))
    head = nn.Linear(8, 3)
    run = train_run(head, (x, y), (x[:30], y[:30]), lr=1.0, steps=9, seed=0, batch_size=8, eval_every=3)
    assert run.best_step in (3, 6, 9) and len(run.losses) == 9
    assert accuracy(head, x[:30], y[:30]) == run.val_acc  # the weights loaded back are those of the best check


def test_command_prints_its_numbers_saves_and_reloads_identically(folder, tmp_path, capsys):
    report = main([str(folder), "--out", str(tmp_path / "out"), "--lrs", "1e-3,1e-2", *FAST])
    printed = capsys.readouterr().out
    assert "classes: ant, bee, cat" in printed
    assert re.search(r"probe  lr 0\.001  val_acc [\d.]+", printed) and re.search(r"full  lr 0\.01  val_acc", printed)
    assert f"test_acc {report['test_acc']:.4f}" in printed and f"val_acc {report['val_acc']:.4f}" in printed
    model, meta, transform = load_finetuned(tmp_path / "out")
    assert meta["classes"] == ["ant", "bee", "cat"] and meta["preprocessing"]["crop_size"] == 32
    data = load_data(folder, 32)
    assert accuracy(model, data.eval["test"], data.labels["test"]) == report["test_acc"]
    with Image.open(data.paths["test"][0]) as image:
        assert torch.equal(transform(image.convert("RGB")), data.eval["test"][0])


def test_new_lite0_trains_in_channels_last_and_the_saved_model_gives_the_very_same_logits(folder, tmp_path):
    data = load_data(folder, 32)
    model, _ = finetune_folder(data, "full", [3e-3], steps=2, batch_size=4, progress=False)
    assert new_lite0(3, seed=0).conv_stem.weight.is_contiguous(memory_format=torch.channels_last)
    save_finetuned(model, tmp_path / "out", data.classes, 32)
    loaded, _, _ = load_finetuned(tmp_path / "out")
    with torch.no_grad():  # bit for bit: loaded in the memory order it was trained in, the same sums in the same order
        assert torch.equal(loaded(data.eval["test"]), model.eval()(data.eval["test"]))


def test_command_numbers_are_the_recipe_run_directly(folder, tmp_path, capsys):
    report = main([str(folder), "--out", str(tmp_path / "out"), "--strategy", "full", "--lrs", "3e-3", *FAST])
    data = load_data(folder, 32)
    model, runs = finetune_folder(data, "full", [3e-3], steps=2, batch_size=4, progress=False)
    assert runs["full"][0].val_acc == report["full_val"][3e-3]
    assert accuracy(model, data.eval["test"], data.labels["test"]) == report["test_acc"]


def test_probe_strategy_trains_only_a_head(folder):
    data = load_data(folder, 32)
    model, runs = finetune_folder(data, "probe", [1e-2], probe_steps=4, batch_size=4, progress=False)
    assert list(runs) == ["probe"] and isinstance(model.classifier, nn.Linear) and model.classifier.out_features == 3


@pytest.mark.parametrize(
    "case, message",
    [
        ("empty", "is empty"),
        ("one_class", "single class"),
        ("unreadable", "cannot read the image .*broken.png"),
        ("loose", "not ImageFolder-shaped"),
    ],
)
def test_command_refuses_a_bad_folder_with_a_clear_message(tmp_path, case, message):
    root = tmp_path / case
    (root / "a").mkdir(parents=True)
    if case != "empty":
        Image.new("RGB", (8, 8)).save(root / "a" / "1.png")
    if case == "empty":
        (root / "a").rmdir()
    if case == "unreadable":
        (root / "b").mkdir()
        (root / "b" / "broken.png").write_bytes(b"\x89PNG broken")
    if case == "loose":
        Image.new("RGB", (8, 8)).save(root / "stray.jpg")
    with pytest.raises(SystemExit) as exit_info:
        main([str(root), "--out", str(tmp_path / "out"), *FAST])
    assert re.search(message, str(exit_info.value.code)), exit_info.value.code
    assert not (tmp_path / "out").exists()
