"""Tests for transferlab.transferability: the A/B split, stage-wise transfer models, the training recipe."""

import numpy as np
import pytest
import torch

from transferlab.data import SOURCE_CLASSES
from transferlab.freeze import freeze_bn
from transferlab.models import TinyResNet
from transferlab.transferability import (
    STAGES,
    WIDTHS,
    FitConfig,
    case_split,
    check_split,
    correct,
    features,
    fit,
    head_from,
    model_widths,
    pack_correct,
    paired_difference,
    scratch_model,
    split_classes,
    stage_modules,
    task_data,
    transfer_model,
    unpack_correct,
    variant_name,
)


def test_split_is_a_seeded_partition_into_halves():
    a, b = split_classes(SOURCE_CLASSES, seed=0)
    assert len(a) == len(b) == 26 and set(a) | set(b) == set(SOURCE_CLASSES) and not set(a) & set(b)
    assert (a, b) == split_classes(SOURCE_CLASSES, seed=0)
    assert (a, b) != split_classes(SOURCE_CLASSES, seed=1)
    assert list(a) == sorted(a, key=SOURCE_CLASSES.index)  # the original order is kept inside a half
    check_split(a, b)


@pytest.mark.parametrize(
    "task_a, task_b, message",
    [
        ((), ("A",), "task A is empty"),
        (("A", "B"), ("B", "C"), r"share the classes \['B'\]"),
        (("A", "A"), ("C",), "lists a class twice"),
        (("A",), ("7",), r"task B has classes \['7'\] that are not among the 52 source classes"),
    ],
)
def test_wrong_split_is_a_clear_error(task_a, task_b, message):
    with pytest.raises(ValueError, match=message):
        check_split(task_a, task_b)


def test_split_needs_two_distinct_classes():
    with pytest.raises(ValueError, match="at least two distinct classes"):
        split_classes(("A", "A"))


def test_stage_modules_and_names():
    assert stage_modules(1) == ("conv1", "bn1")
    assert stage_modules(len(STAGES)) == ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4")
    assert variant_name("A", 3, True) == "A3B+" and variant_name("B", 1, False) == "B1B"


@pytest.mark.parametrize("n", [0, 6, -1, 2.0, True, "2"])
def test_n_outside_the_stages_is_a_clear_error(n):
    with pytest.raises(ValueError, match="n must be an integer number of stages from 1 to 5"):
        stage_modules(n)
    with pytest.raises(ValueError, match="from 1 to 5"):
        transfer_model(scratch_model(4, 0), n, num_classes=4, fine_tune=False, seed=0)


def test_scratch_model_is_seeded_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a, b = scratch_model(5, 0), scratch_model(5, 0)
    assert torch.equal(torch.rand(3), expected)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    torch.manual_seed(0)  # plain PyTorch: the same init as seeding the global RNG, then building the model
    plain = TinyResNet(num_classes=5, widths=WIDTHS)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), plain.state_dict().values(), strict=True))


@pytest.mark.parametrize("n", range(1, len(STAGES) + 1))
def test_transfer_model_copies_the_first_n_stages_and_reinitialises_the_rest(n):
    donor = scratch_model(7, seed=42)
    model = transfer_model(donor, n, num_classes=4, fine_tune=False, seed=1)
    fresh = scratch_model(4, seed=1)
    copied = stage_modules(n)
    for key, value in model.state_dict().items():
        source = donor if key.split(".")[0] in copied else fresh
        assert torch.equal(value, source.state_dict()[key]), key
    for name, p in model.named_parameters():
        assert p.requires_grad == (name.split(".")[0] not in copied), name
    assert model.fc.out_features == 4


def test_frozen_stages_keep_their_batchnorm_statistics_and_weights_in_training():
    donor = scratch_model(3, seed=0)
    frozen = transfer_model(donor, 2, num_classes=3, fine_tune=False, seed=1)
    tuned = transfer_model(donor, 2, num_classes=3, fine_tune=True, seed=1)
    assert all(p.requires_grad for p in tuned.parameters())
    x, y = task_data(("A", "B", "C"), per_class=4)
    fit(frozen, x, y, FitConfig(epochs=1, batch_size=4), frozen=2)
    fit(tuned, x, y, FitConfig(epochs=1, batch_size=4))
    for key, value in donor.state_dict().items():
        if key.split(".")[0] in stage_modules(2):
            assert torch.equal(frozen.state_dict()[key], value), key  # weights AND running stats unchanged
    assert not torch.equal(tuned.layer1[0].conv1.weight, donor.layer1[0].conv1.weight)
    assert not torch.equal(tuned.bn1.running_mean, donor.bn1.running_mean)


def test_donor_must_be_a_tiny_resnet_and_its_widths_are_kept():
    with pytest.raises(TypeError, match="donor must be a TinyResNet"):
        transfer_model(torch.nn.Linear(2, 2), 1, num_classes=2, fine_tune=False, seed=0)
    wide = TinyResNet(num_classes=2, widths=(32, 64, 128, 256))
    model = transfer_model(wide, 2, num_classes=3, fine_tune=False, seed=0)
    assert model_widths(model) == (32, 64, 128, 256) and model_widths(scratch_model(2, 0)) == WIDTHS
    assert torch.equal(model.layer1[0].conv1.weight, wide.layer1[0].conv1.weight)


# ------------------------------------------------------------------------------------ the fair grid's pieces
def test_case_split_keeps_each_letter_with_its_other_case():
    a, b = case_split()
    check_split(a, b)
    assert len(a) == len(b) == 26 and all(c.swapcase() in a for c in a) and all(c.swapcase() in b for c in b)
    assert "m" in a and "n" in b


def test_task_data_is_fixed_and_the_same_images_per_letter_in_any_split():
    x, y = task_data(("A", "b"), "test", per_class=5)
    x2, y2 = task_data(("b", "C"), "test", per_class=5)
    assert x.shape == (10, 3, 16, 16) and y.tolist() == [0] * 5 + [1] * 5
    assert torch.equal(x[5:], x2[:5]) and y2.tolist() == [0] * 5 + [1] * 5  # the same b's, relabelled
    train, _ = task_data(("A",), "train", per_class=5)
    assert not torch.equal(train, x[:5])
    with pytest.raises(ValueError, match="split must be"):
        task_data(("A",), "val")
    with pytest.raises(ValueError, match="unknown"):
        task_data(("7",))


@pytest.mark.parametrize("n", range(0, len(STAGES) + 1))
def test_features_then_head_is_the_forward_pass(n):
    model = scratch_model(4, 0).eval()
    x, _ = task_data(("A", "B"), "test", per_class=3)
    assert torch.allclose(head_from(model, features(model, x, n), n), model(x), atol=1e-5)


def _plain_fit(model, x, y, cfg):
    """The same training in plain PyTorch: the whole model runs every step (frozen BatchNorm kept in eval)."""
    params = [p for p in model.parameters() if p.requires_grad]
    steps = -(-len(y) // cfg.batch_size)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps)
    loss_fn, g = torch.nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing), torch.Generator().manual_seed(cfg.seed)
    model.train()
    for _ in range(cfg.epochs):
        perm = torch.randperm(len(y), generator=g)
        for s in range(steps):
            i = perm[s * cfg.batch_size : (s + 1) * cfg.batch_size]
            loss = loss_fn(model(x[i]), y[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


@pytest.mark.parametrize("n, tuned", [(0, False), (2, False), (4, False), (2, True)])
def test_fit_with_a_cached_frozen_prefix_is_plain_training(n, tuned):
    x, y = task_data(("A", "B", "C"), per_class=12)
    cfg = FitConfig(epochs=2, batch_size=16, seed=3)
    donor = scratch_model(3, 9)
    if n:
        ours, plain = (transfer_model(donor, n, 3, fine_tune=tuned, seed=1) for _ in range(2))
    else:
        ours, plain = scratch_model(3, 1), scratch_model(3, 1)
    fit(ours, x, y, cfg, frozen=0 if tuned else n)
    _plain_fit(plain, x, y, cfg)
    for key, value in plain.state_dict().items():
        assert torch.allclose(ours.state_dict()[key].float(), value.float(), atol=1e-4), key
    if n and not tuned:
        assert torch.equal(ours.layer1[0].bn1.running_mean, donor.layer1[0].bn1.running_mean) or n < 2


def test_fit_refuses_a_prefix_that_is_not_frozen_and_empty_data():
    x, y = task_data(("A", "B"), per_class=4)
    tuned = transfer_model(scratch_model(2, 0), 2, 2, fine_tune=True, seed=1)
    with pytest.raises(ValueError, match="frozen=2 but these parameters"):
        fit(tuned, x, y, FitConfig(epochs=1), frozen=2)
    with pytest.raises(ValueError, match="as many labels as images"):
        fit(scratch_model(2, 0), x, y[:3], FitConfig(epochs=1))
    with pytest.raises(ValueError, match="no trainable parameters"):
        fit(freeze_bn(scratch_model(2, 0).requires_grad_(False)), x, y, FitConfig(epochs=1))


def test_correct_and_its_packing_round_trip():
    model = scratch_model(2, 0)
    x, y = task_data(("A", "B"), "test", per_class=7)
    hits = correct(model, x, y)
    assert hits.dtype == torch.bool and hits.shape == (14,)
    assert hits.tolist() == (model.eval()(x).argmax(1) == y).tolist()
    assert unpack_correct(pack_correct(hits), 14).tolist() == hits.tolist()


def test_paired_difference_matches_a_hand_computation():
    rng = np.random.default_rng(0)
    a, b = rng.random((3, 400)) < 0.6, rng.random((3, 400)) < 0.5
    out = paired_difference(a, b, n_boot=2000)
    per_seed = a.mean(1) - b.mean(1)
    assert out["diff"] == pytest.approx(per_seed.mean())
    assert out["se_seeds"] == pytest.approx(per_seed.std(ddof=1) / np.sqrt(3))
    assert out["se_images"] == pytest.approx(np.sqrt(((a - 0.0) - b).mean(0).var(ddof=1) / 400), rel=0.15)
    assert out["se"] == pytest.approx(np.hypot(out["se_seeds"], out["se_images"]))
    assert paired_difference(a, a)["diff"] == 0.0
    with pytest.raises(ValueError, match="same shape"):
        paired_difference(a[:1], b[:1])
