"""Tests for transferlab.loading: key cleaning, nested checkpoints, safe file loading, matching, conv adaptation."""

import builtins
import math
import pickle

import pytest
import torch
from torch import nn
from torchvision.models import resnet18

from transferlab.loading import (
    CheckpointError,
    IncompleteLoadError,
    adapt_input_conv,
    clean_state_dict,
    load_checkpoint_file,
    load_matching,
    unwrap_checkpoint,
)


class Small(nn.Module):
    def __init__(self, n_out: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, n_out)

    def forward(self, x):
        return self.fc(self.bn(self.conv(x)).mean((2, 3)))


def seeded(n_out: int = 3, seed: int = 0) -> Small:
    torch.manual_seed(seed)
    return Small(n_out)


# ---- clean_state_dict -------------------------------------------------------------------------------------------

def test_clean_state_dict_strips_real_dataparallel_keys():
    model = seeded()
    wrapped = nn.DataParallel(model)  # on CPU DataParallel just wraps: its keys gain `module.`
    keys = list(wrapped.state_dict())
    assert keys[0].startswith("module.")
    assert list(clean_state_dict(wrapped.state_dict())) == list(model.state_dict())


def test_clean_state_dict_strips_real_torch_compile_keys():
    model = seeded()
    compiled = torch.compile(model)  # wrapping only; nothing is compiled until it is called
    assert next(iter(compiled.state_dict())).startswith("_orig_mod.")
    assert list(clean_state_dict(compiled.state_dict())) == list(model.state_dict())


def test_clean_state_dict_combined_and_repeated_prefixes():
    sd = {"module._orig_mod.conv.weight": 1, "_orig_mod.module.fc.bias": 2, "backbone._orig_mod.x": 3, "fc.module.w": 4}
    assert list(clean_state_dict(sd)) == ["conv.weight", "fc.bias", "backbone.x", "fc.module.w"]


def test_clean_state_dict_refuses_colliding_keys():
    with pytest.raises(ValueError, match="both become 'fc.bias'"):
        clean_state_dict({"module.fc.bias": 1, "fc.bias": 2})


# ---- unwrap_checkpoint ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("wrap", [
    lambda sd: sd,
    lambda sd: {"state_dict": sd, "epoch": 3},
    lambda sd: {"model": sd, "optimizer": {"lr": 0.1}},
    lambda sd: {"model_state_dict": sd, "epoch": 1},
    lambda sd: {"model": {"state_dict": sd}},
], ids=["plain", "state_dict", "model", "model_state_dict", "double"])
def test_unwrap_nested_checkpoints(wrap):
    sd = seeded().state_dict()
    assert unwrap_checkpoint(wrap(sd)) is sd


def test_unwrap_unknown_checkpoint_layout_names_its_keys():
    with pytest.raises(ValueError, match=r"keys are \['epoch', 'weights'\].*checkpoint\['<key>'\]"):
        unwrap_checkpoint({"epoch": 1, "weights": seeded().state_dict()})


# ---- load_matching ----------------------------------------------------------------------------------------------

def test_load_matching_by_name_and_shape_and_proves_copies():
    source, target = seeded(n_out=10, seed=1), seeded(n_out=3, seed=2)
    fc_before = target.fc.weight.clone()
    report = load_matching(target, source.state_dict())
    assert set(report.shape_mismatched) == {"fc.weight", "fc.bias"}
    assert report.shape_mismatched["fc.weight"] == ((10, 4), (3, 4))
    assert report.missing == [] and report.unexpected == [] and not report.complete
    src = source.state_dict()
    for key in report.loaded:
        assert torch.equal(target.state_dict()[key], src[key]), key
    assert torch.equal(target.fc.weight, fc_before)
    assert len(report.loaded) == len(src) - 2
    text = repr(report)
    assert text.startswith("LoadReport: 7 loaded, 2 shape-mismatched, 0 missing, 0 unexpected")
    assert "fc.weight source [10, 4] vs model [3, 4]" in text


def test_plain_load_state_dict_fails_on_the_same_shapes():
    """The reference behaviour load_matching avoids: name matching alone raises a size mismatch."""
    with pytest.raises(RuntimeError, match="size mismatch for fc.weight"):
        seeded(3).load_state_dict(seeded(10).state_dict(), strict=False)


def test_load_matching_equals_the_plain_pytorch_recipe():
    source, ours, theirs = resnet18(num_classes=1000), resnet18(num_classes=5), resnet18(num_classes=5)
    theirs.load_state_dict(ours.state_dict())
    load_matching(ours, source.state_dict())
    model_sd = theirs.state_dict()  # plain PyTorch: filter by name AND shape, then load with strict=False
    keep = {k: v for k, v in source.state_dict().items() if k in model_sd and v.shape == model_sd[k].shape}
    theirs.load_state_dict(keep, strict=False)
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), theirs.state_dict().values()))


def test_missing_and_unexpected_keys_are_reported():
    source = {k: v for k, v in seeded().state_dict().items() if not k.startswith("bn.")}
    source["extra.weight"] = torch.zeros(2)
    report = load_matching(seeded(seed=3), source)
    assert report.missing == ["bn.weight", "bn.bias", "bn.running_mean", "bn.running_var", "bn.num_batches_tracked"]
    assert report.unexpected == ["extra.weight"]


def test_load_matching_strips_prefixes_and_unwraps():
    source = seeded(seed=1)
    ckpt = {"epoch": 4, "model": nn.DataParallel(source).state_dict()}
    target = seeded(seed=2)
    report = load_matching(target, ckpt)
    assert report.complete and torch.equal(target.conv.weight, source.conv.weight)


def test_strict_raises_and_loads_nothing():
    target = seeded(3, seed=2)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(IncompleteLoadError, match=r"(?s)nothing was loaded.*fc.weight source \[10, 4\].*exclude="):
        load_matching(target, seeded(10, seed=1).state_dict(), strict=True)
    assert all(torch.equal(target.state_dict()[k], v) for k, v in before.items())


def test_strict_with_exclude_accepts_a_replaced_head():
    target = seeded(3, seed=2)
    report = load_matching(target, seeded(10, seed=1).state_dict(), strict=True, exclude=("fc.",))
    assert report.complete and report.excluded == ["fc.weight", "fc.bias"]


def test_nothing_matching_is_an_error():
    source = {f"backbone.{k}": v for k, v in seeded().state_dict().items()}
    with pytest.raises(IncompleteLoadError, match="no tensor matched.*backbone"):
        load_matching(seeded(), source)


def test_load_matching_from_a_file(tmp_path):
    source, target = seeded(seed=1), seeded(seed=2)
    path = tmp_path / "ckpt.pt"
    torch.save({"state_dict": source.state_dict()}, path)
    assert load_matching(target, path).complete
    assert torch.equal(target.fc.weight, source.fc.weight)


# ---- load_checkpoint_file: bad files ----------------------------------------------------------------------------

def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist.*state_dict"):
        load_checkpoint_file(tmp_path / "nope.pt")


def test_corrupt_and_truncated_files(tmp_path):
    good = tmp_path / "good.pt"
    torch.save(seeded().state_dict(), good)
    data = good.read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.pt").write_bytes(b"this is not a checkpoint")
    (tmp_path / "empty.pt").write_bytes(b"")
    assert set(load_checkpoint_file(good)) == set(seeded().state_dict())
    for name in ["truncated.pt", "junk.pt", "empty.pt"]:
        with pytest.raises(CheckpointError, match="corrupt, truncated or not a PyTorch checkpoint"):
            load_checkpoint_file(tmp_path / name)


def test_whole_pickled_module_explains_state_dict(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(resnet18(), path)  # the dated recipe: torch.save(model)
    with pytest.raises(CheckpointError, match=r"whole pickled model \(torchvision.models.resnet.ResNet\).*state_dict"):
        load_checkpoint_file(path)


class Exploit:
    """Unpickling this object runs code: it creates the file at ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (builtins.exec, (f"open({self.marker!r}, 'w').close()",))


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_code_running_pickle_is_refused_and_never_runs(tmp_path, writer):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    payload = {"weight": torch.ones(2), "x": Exploit(marker)}
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(CheckpointError, match="nothing in it was run"):
        load_checkpoint_file(path)
    assert not marker.exists()
    # the test can fail: an unsafe load of the same file does create the marker
    if writer == "torch.save":
        torch.load(path, weights_only=False)
    else:
        pickle.loads(path.read_bytes())
    assert marker.exists()


# ---- adapt_input_conv -------------------------------------------------------------------------------------------

def test_one_channel_sums_rgb_filters_and_matches_grey_input():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 8, 3, padding=1)
    grey = adapt_input_conv(conv, 1)
    assert torch.equal(grey.weight, conv.weight.sum(dim=1, keepdim=True))
    assert torch.equal(grey.bias, conv.bias)
    x = torch.rand(2, 1, 9, 9)
    assert torch.allclose(grey(x), conv(x.expand(-1, 3, -1, -1)), atol=1e-6)


@pytest.mark.parametrize("in_chans", [2, 4, 6, 7])
def test_more_channels_repeat_and_rescale_like_timm(in_chans):
    torch.manual_seed(0)
    weight = torch.randn(5, 3, 3, 3)
    tiled = torch.cat([weight] * math.ceil(in_chans / 3), dim=1)[:, :in_chans]
    expected = tiled * (3 / in_chans)
    assert torch.equal(adapt_input_conv(weight, in_chans), expected)


def test_three_channels_is_unchanged_copy():
    weight = torch.randn(4, 3, 3, 3)
    out = adapt_input_conv(weight, 3)
    assert torch.equal(out, weight) and out.data_ptr() != weight.data_ptr()


def test_adapt_keeps_conv_settings():
    conv = resnet18().conv1
    new = adapt_input_conv(conv, 1)
    assert (new.in_channels, new.out_channels, new.kernel_size, new.stride, new.padding) == (1, 64, (7, 7), (2, 2), (3, 3))
    assert new.bias is None


@pytest.mark.parametrize("bad", [nn.Conv2d(64, 64, 3), torch.randn(8, 1, 3, 3), torch.randn(8, 3, 3)])
def test_wrong_channel_count_is_a_clear_error(bad):
    with pytest.raises(ValueError, match=r"3 \(RGB\) input channels.*model.conv1"):
        adapt_input_conv(bad, 1)


def test_in_chans_must_be_positive():
    with pytest.raises(ValueError, match="in_chans"):
        adapt_input_conv(nn.Conv2d(3, 4, 3), 0)
