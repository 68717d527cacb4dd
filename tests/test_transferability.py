"""Tests for transferlab.transferability: the A/B split, stage-wise transfer models, the training recipe."""

import pytest
import torch

from transferlab.data import SOURCE_CLASSES
from transferlab.models import TinyResNet
from transferlab.pretrain import PretrainConfig, pretrain
from transferlab.transferability import (
    STAGES,
    check_split,
    scratch_model,
    split_classes,
    stage_modules,
    task_accuracy,
    task_stream,
    train_on_task,
    transfer_model,
    variant_name,
)

TINY = dict(steps=2, batch_size=8)


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
    plain = TinyResNet(num_classes=5)
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
    classes = ("A", "B", "C")
    train_on_task(frozen, classes, PretrainConfig(**TINY))
    train_on_task(tuned, classes, PretrainConfig(**TINY))
    for key, value in donor.state_dict().items():
        if key.split(".")[0] in stage_modules(2):
            assert torch.equal(frozen.state_dict()[key], value), key  # weights AND running stats unchanged
    assert not torch.equal(tuned.layer1[0].conv1.weight, donor.layer1[0].conv1.weight)
    assert not torch.equal(tuned.bn1.running_mean, donor.bn1.running_mean)


def test_donor_must_be_a_tiny_resnet_of_the_default_widths():
    with pytest.raises(TypeError, match="donor must be a TinyResNet"):
        transfer_model(torch.nn.Linear(2, 2), 1, num_classes=2, fine_tune=False, seed=0)
    with pytest.raises(ValueError, match="does not fit a default TinyResNet"):
        transfer_model(TinyResNet(num_classes=2, widths=(8, 16, 32, 64)), 1, num_classes=2, fine_tune=False, seed=0)


def test_train_on_task_on_a_scratch_model_is_exactly_pretrain():
    classes = ("A", "b", "C")
    cfg = PretrainConfig(steps=3, batch_size=8, seed=5)
    ours = train_on_task(scratch_model(3, seed=5), classes, cfg)
    reference = pretrain(cfg, classes, log_every=0)
    for key, value in reference.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value), key
    assert not ours.training


def test_a_shared_stream_gives_the_same_result_and_is_checked():
    classes, cfg = ("A", "B"), PretrainConfig(**TINY)
    stream = task_stream(classes, cfg)
    a = train_on_task(scratch_model(2, 0), classes, cfg, stream=stream)
    b = train_on_task(scratch_model(2, 0), classes, cfg)
    assert torch.equal(a.fc.weight, b.fc.weight)
    with pytest.raises(ValueError, match="the stream has 1 batches but cfg.steps is 2"):
        train_on_task(scratch_model(2, 0), classes, cfg, stream=stream[:1])


def test_nothing_to_train_and_no_steps_are_clear_errors():
    model = scratch_model(2, 0).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        train_on_task(model, ("A", "B"), PretrainConfig(**TINY))
    with pytest.raises(ValueError, match="cfg.steps must be at least 1"):
        task_stream(("A", "B"), PretrainConfig(steps=0, batch_size=8))


def test_task_accuracy_matches_plain_pytorch_and_restores_the_mode():
    from transferlab.data import source_dataset
    from transferlab.pretrain import source_accuracy

    classes = ("A", "B")
    model = scratch_model(2, 0).train()
    acc = task_accuracy(model, classes)
    assert model.training
    assert acc == pytest.approx(source_accuracy(model.eval(), classes))
    assert len(source_dataset("test", classes=classes)) == 60
