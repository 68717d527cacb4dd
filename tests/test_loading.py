"""Tests for transferlab.loading: key cleaning, matching by name and shape, old checkpoints, conv adaptation.

Reading files safely (and nested checkpoints) is tested in test_serialization.py.
"""

import math
import re
from collections import OrderedDict

import pytest
import torch
from torch import nn
from torchvision.models import resnet18

from transferlab.loading import adapt_input_conv, clean_state_dict, load_matching
from transferlab.serialization import IncompleteLoadError, save_file


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
    with pytest.raises(ValueError, match=re.escape("both become 'fc.bias'")):
        clean_state_dict({"module.fc.bias": 1, "fc.bias": 2})


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
    with pytest.raises(RuntimeError, match=re.escape("size mismatch for fc.weight")):
        seeded(3).load_state_dict(seeded(10).state_dict(), strict=False)


def test_load_matching_equals_the_plain_pytorch_recipe():
    source, ours, theirs = resnet18(num_classes=1000), resnet18(num_classes=5), resnet18(num_classes=5)
    theirs.load_state_dict(ours.state_dict())
    load_matching(ours, source.state_dict())
    model_sd = theirs.state_dict()  # plain PyTorch: filter by name AND shape, then load with strict=False
    keep = {k: v for k, v in source.state_dict().items() if k in model_sd and v.shape == model_sd[k].shape}
    theirs.load_state_dict(keep, strict=False)
    pairs = zip(ours.state_dict().values(), theirs.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)


def test_missing_and_unexpected_keys_are_reported():
    source = {k: v for k, v in seeded().state_dict().items() if not k.startswith("bn.")}
    source["extra.weight"] = torch.zeros(2)
    report = load_matching(seeded(seed=3), source)
    assert report.missing == ["bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"]
    assert report.filled_in == ["bn.num_batches_tracked"]
    assert report.unexpected == ["extra.weight"]
    # the same lists as plain PyTorch, which fills the counter in too
    result = seeded(seed=3).load_state_dict({k: v for k, v in source.items() if k != "extra.weight"}, strict=False)
    assert result.missing_keys == report.missing


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
    with pytest.raises(IncompleteLoadError, match=r"no tensor matched.*backbone"):
        load_matching(seeded(), source)


def test_load_matching_from_a_file(tmp_path):
    source, target = seeded(seed=1), seeded(seed=2)
    path = tmp_path / "ckpt.pt"
    torch.save({"state_dict": source.state_dict()}, path)
    assert load_matching(target, path).complete
    assert torch.equal(target.fc.weight, source.fc.weight)


# ---- adapt_input_conv -------------------------------------------------------------------------------------------


def test_one_channel_sums_rgb_filters_and_matches_grey_input():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 8, 3, padding=1)
    grey = adapt_input_conv(1, conv)
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
    assert torch.equal(adapt_input_conv(in_chans, weight), expected)


def test_three_channels_is_unchanged_copy():
    weight = torch.randn(4, 3, 3, 3)
    out = adapt_input_conv(3, weight)
    assert torch.equal(out, weight) and out.data_ptr() != weight.data_ptr()


def test_adapt_keeps_conv_settings():
    conv = resnet18().conv1
    new = adapt_input_conv(1, conv)
    settings = (new.in_channels, new.out_channels, new.kernel_size, new.stride, new.padding)
    assert settings == (1, 64, (7, 7), (2, 2), (3, 3))
    assert new.bias is None


@pytest.mark.parametrize("bad", [nn.Conv2d(64, 64, 3), torch.randn(8, 1, 3, 3), torch.randn(8, 3, 3)])
def test_wrong_channel_count_is_a_clear_error(bad):
    with pytest.raises(ValueError, match=r"3 \(RGB\) input channels.*model.conv1"):
        adapt_input_conv(1, bad)


def test_old_argument_order_says_the_new_one():
    with pytest.raises(TypeError, match=r"channel count first, like timm: adapt_input_conv\(in_chans, conv\)"):
        adapt_input_conv(nn.Conv2d(3, 4, 3), 1)


def test_in_chans_must_be_positive():
    with pytest.raises(ValueError, match="in_chans"):
        adapt_input_conv(0, nn.Conv2d(3, 4, 3))


def test_report_repr_summarises_each_category():
    source = {k: v for k, v in seeded().state_dict().items() if not k.startswith("bn.")}
    source["extra.weight"] = torch.zeros(2)
    text = repr(load_matching(seeded(seed=3), source, exclude=("fc.",)))
    lines = text.splitlines()
    assert lines[0] == "LoadReport: 2 loaded, 0 shape-mismatched, 4 missing, 1 unexpected, 2 excluded"
    assert lines[1] == "  missing (model keeps its values) 4 [bn: 4]: bn.weight, bn.bias, bn.running_mean, ..."
    assert lines[2] == "  unexpected (ignored) 1 [extra: 1]: extra.weight"
    assert lines[3] == "  excluded (model keeps its values) 2 [fc: 2]: fc.weight, fc.bias"
    assert lines[4] == (
        "  filled in (absent from old checkpoints; model keeps its counters) 1 [bn: 1]: bn.num_batches_tracked"
    )
    assert len(lines) == 5


def test_load_matching_from_another_model():
    source, target = seeded(n_out=10, seed=1), seeded(seed=2)
    report = load_matching(target, source, strict=True, exclude=("fc.",))
    assert report.complete and torch.equal(target.bn.running_var, source.bn.running_var)


# ---- checkpoints from before PyTorch 0.4.1 (no num_batches_tracked) --------------------------------------------


def pre_041_dataparallel_checkpoint(model: nn.Module) -> dict:
    """A checkpoint shaped like the published pre-0.4.1 ones: saved from nn.DataParallel (keys prefixed
    ``module.``), nested under ``state_dict`` next to training extras, and without BatchNorm's
    ``num_batches_tracked`` buffers (added in 0.4.1). The dict comprehension drops ``_metadata`` as an old file
    has none."""
    state = {
        k: v.clone() for k, v in nn.DataParallel(model).state_dict().items() if not k.endswith("num_batches_tracked")
    }
    return {
        "epoch": 90,
        "arch": "resnet18",
        "state_dict": OrderedDict(state),
        "best_prec1": 69.758,
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.0001, "momentum": 0.9}]},
    }


def test_pre_041_dataparallel_checkpoint_loads_strictly_and_exactly(tmp_path):
    torch.manual_seed(1)
    source = resnet18(num_classes=10)
    with torch.no_grad():  # make every buffer differ from a fresh model's, so the comparison below can fail
        for name, buffer in source.named_buffers():
            if not name.endswith("num_batches_tracked"):
                buffer.add_(torch.rand_like(buffer))
    path = save_file(pre_041_dataparallel_checkpoint(source), tmp_path / "model_best.pth.tar")

    target = resnet18(num_classes=10)
    report = load_matching(target, path, strict=True)
    src, tgt = source.state_dict(), target.state_dict()
    assert report.complete
    assert report.filled_in == [k for k in src if k.endswith("num_batches_tracked")] and len(report.filled_in) == 20
    assert report.missing == [] and report.unexpected == [] and report.shape_mismatched == {}
    for key in src:
        if key.endswith("num_batches_tracked"):
            assert int(tgt[key]) == 0, key  # filled in: the fresh model keeps its own counter, as in PyTorch
        else:
            assert torch.equal(tgt[key], src[key]), key
    assert "filled in (absent from old checkpoints; model keeps its counters) 20" in repr(report)


def test_pre_041_checkpoint_agrees_with_plain_pytorch(tmp_path):
    torch.manual_seed(2)
    source = resnet18(num_classes=10)
    path = save_file(pre_041_dataparallel_checkpoint(source), tmp_path / "ckpt.pth")
    ours, theirs = resnet18(num_classes=10), resnet18(num_classes=10)
    theirs.load_state_dict(ours.state_dict())
    load_matching(ours, path, strict=True)
    plain = torch.load(path, weights_only=True)["state_dict"]  # plain PyTorch: unwrap, strip, strict load
    theirs.load_state_dict({k.removeprefix("module."): v for k, v in plain.items()}, strict=True)
    pairs = zip(ours.state_dict().values(), theirs.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)


def test_a_missing_num_batches_tracked_is_not_a_missing_tensor():
    model = nn.BatchNorm2d(4)
    source = {k: torch.full_like(v, 2) for k, v in model.state_dict().items() if k != "num_batches_tracked"}
    report = load_matching(model, source, strict=True)
    assert report.complete and report.filled_in == ["num_batches_tracked"] and report.missing == []
    assert torch.equal(model.running_var, torch.full((4,), 2.0))


def test_exclude_names_whole_modules_not_string_prefixes():
    """``exclude="layer1"`` skips layer1 and nothing else; a plain string is one name, not its letters."""
    source = {"layer1.0.weight": torch.ones(1, 1), "layer10.0.weight": torch.ones(1, 1), "fc.bias": torch.ones(1)}
    model = nn.Module()
    model.layer1 = nn.Sequential(nn.Linear(1, 1, bias=False))
    model.layer10 = nn.Sequential(nn.Linear(1, 1, bias=False))
    model.fc = nn.Linear(1, 1)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    report = load_matching(model, source, exclude="layer1")
    assert report.excluded == ["layer1.0.weight"]
    assert model.layer10[0].weight.item() == 1.0 and model.layer1[0].weight.item() == 0.0
    assert "fc.bias" in report.loaded and report.missing == ["fc.weight"]
    assert load_matching(model, source, exclude=("layer1.",)).excluded == ["layer1.0.weight"]
