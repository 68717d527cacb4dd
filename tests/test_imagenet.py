"""ImageNet track: weights planted in a temporary TORCH_HOME, the network never touched."""

import os
import re
import time

import pytest
import torch
from torch import nn
from torchvision.models import ResNet18_Weights, ResNet50_Weights, VGG16_Weights, get_model

from transferlab import imagenet
from transferlab.imagenet import (
    cached_weights_path,
    get_track,
    imagenet_model,
    imagenet_or_random,
    imagenet_state_dict,
    resolve_weights,
)
from transferlab.serialization import IncompleteLoadError, WeightsFileError, WeightsNotFoundError


@pytest.fixture(autouse=True)
def no_network(monkeypatch, tmp_path):
    """Every test runs offline in an empty cache: any attempt to reach the network fails the test."""

    def forbidden(*args, **kwargs):
        raise AssertionError("a test tried to use the network")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(imagenet, "network_available", forbidden)
    monkeypatch.setattr(torch.hub, "download_url_to_file", forbidden)


@pytest.fixture
def offline(monkeypatch):
    """Simulate an unreachable download host; record the timeout the caller asked for."""
    asked = []

    def unreachable(host=None, timeout=2.0):
        asked.append(timeout)
        return False

    monkeypatch.setattr(imagenet, "network_available", unreachable)
    return asked


def plant(weights, state_dict) -> str:
    path = cached_weights_path(weights)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state_dict, path)
    return path


def random_state_dict(name: str) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {k: v.clone() for k, v in get_model(name, weights=None).state_dict().items()}


@pytest.mark.parametrize(
    "weights, file_name",
    [
        (ResNet18_Weights.IMAGENET1K_V1, "resnet18-f37072fd.pth"),
        (ResNet50_Weights.IMAGENET1K_V2, "resnet50-11ad3fa6.pth"),
        (VGG16_Weights.IMAGENET1K_V1, "vgg16-397923af.pth"),
    ],
)
def test_cached_path_is_where_torchvision_looks(weights, file_name, tmp_path):
    path = cached_weights_path(weights)
    assert path == tmp_path / "torch" / "hub" / "checkpoints" / file_name
    assert path.name == os.path.basename(weights.url)


def test_resolve_weights_accepts_default_member_name_and_enum():
    assert resolve_weights("resnet50") is ResNet50_Weights.DEFAULT
    assert resolve_weights("resnet50", "IMAGENET1K_V1") is ResNet50_Weights.IMAGENET1K_V1
    assert resolve_weights("vgg16", VGG16_Weights.IMAGENET1K_V1) is VGG16_Weights.IMAGENET1K_V1


@pytest.mark.parametrize(
    "name, weights, hint",
    [
        ("resnet18", ResNet50_Weights.DEFAULT, "not weights of"),
        ("resnet18", "IMAGENET9K", "IMAGENET1K_V1"),
        ("no_such_net", "DEFAULT", "list_models"),
    ],
)
def test_resolve_weights_rejects_bad_input_with_a_hint(name, weights, hint):
    with pytest.raises(ValueError, match=hint):
        resolve_weights(name, weights)


@pytest.mark.parametrize("name", ["resnet18", "squeezenet1_1"])
def test_planted_weights_load_exactly(name):
    planted = random_state_dict(name)
    plant(resolve_weights(name), planted)
    model = imagenet_model(name)
    loaded = model.state_dict()
    assert loaded.keys() == planted.keys()
    assert all(torch.equal(loaded[k], planted[k]) for k in planted)
    # a fresh model differs: the values really came from the file
    fresh = get_model(name, weights=None).state_dict()
    assert not all(torch.equal(fresh[k], planted[k]) for k in planted if planted[k].is_floating_point())


def test_state_dict_matches_plain_torch_load():
    planted = random_state_dict("resnet18")
    path = plant(ResNet18_Weights.DEFAULT, planted)
    ours = imagenet_state_dict(ResNet18_Weights.DEFAULT)
    reference = torch.load(path, weights_only=True)
    assert ours.keys() == reference.keys()
    assert all(torch.equal(ours[k], reference[k]) for k in reference)


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "vgg16"])
def test_offline_and_missing_fails_fast_naming_the_file(name, offline):
    weights = resolve_weights(name)
    start = time.perf_counter()
    with pytest.raises(WeightsNotFoundError) as info:
        imagenet_model(name)
    assert time.perf_counter() - start < 30.0  # generous: no network wait at all here, well under 1 s when quiet
    assert offline and max(offline) < 5.0, "the reachability check must give up well inside 5 s"
    message = str(info.value)
    assert str(cached_weights_path(weights)) in message
    assert "online" in message and "copy the file" in message and weights.url in message


def test_no_download_means_no_network_check():
    # the autouse fixture fails the test if the network check runs
    with pytest.raises(WeightsNotFoundError, match="downloading is switched off"):
        imagenet_state_dict(ResNet18_Weights.DEFAULT, allow_download=False)


def test_the_network_check_is_the_only_wait(offline):
    """No wall clock: the only wait is the reachability check, asked for once with the caller's timeout."""
    with pytest.raises(WeightsNotFoundError, match="network is not reachable"):
        imagenet_state_dict(VGG16_Weights.DEFAULT, timeout=0.5)
    assert offline == [0.5]


def test_corrupt_file_gives_a_clear_error():
    path = cached_weights_path(ResNet18_Weights.DEFAULT)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"this is not a checkpoint")
    with pytest.raises(WeightsFileError, match="corrupt") as info:
        imagenet_model("resnet18")
    assert str(path) in str(info.value) and "Delete the file" in str(info.value)


def test_truncated_file_gives_a_clear_error():
    path = plant(ResNet18_Weights.DEFAULT, random_state_dict("resnet18"))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsFileError, match="corrupt, truncated"):
        imagenet_model("resnet18")


def test_whole_pickled_module_is_refused():
    plant(ResNet18_Weights.DEFAULT, nn.Linear(2, 2))
    with pytest.raises(WeightsFileError, match=r"whole pickled model \(torch.nn.modules.linear.Linear\)"):
        imagenet_state_dict(ResNet18_Weights.DEFAULT)


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_file_that_would_run_code_is_not_unpickled(tmp_path):
    marker = tmp_path / "code_ran"
    path = cached_weights_path(ResNet18_Weights.DEFAULT)
    path.parent.mkdir(parents=True)
    torch.save({"fc.weight": _RunsCode(str(marker))}, path)  # a torch.save archive whose pickle calls open()
    # Python 3.13 pickles open() as _io.open, earlier ones as io.open
    with pytest.raises(WeightsFileError, match=r"would import and call .*'(_?io|builtins|__builtin__)\.open'"):
        imagenet_state_dict(ResNet18_Weights.DEFAULT)
    assert not marker.exists()


def test_file_with_wrong_shapes_is_not_loaded():
    state_dict = random_state_dict("resnet18")
    state_dict["fc.weight"] = torch.zeros(10, 512)
    plant(ResNet18_Weights.DEFAULT, state_dict)
    with pytest.raises(
        IncompleteLoadError,
        match=r"(?s)does not fit 'resnet18', so nothing was loaded.*1 shape-mismatched"
        r".*fc.weight source \[10, 512\] vs model \[1000, 512\]",
    ):
        imagenet_model("resnet18")


def test_file_for_another_architecture_is_not_loaded_in_part():
    plant(ResNet18_Weights.DEFAULT, {"fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)})
    expected = "(?s)does not fit 'resnet18'.*2 loaded, 0 shape-mismatched, 100 missing"
    with pytest.raises(IncompleteLoadError, match=expected) as info:
        imagenet_model("resnet18")
    assert len(info.value.report.missing) == 100  # the same error, with its report, as load_matching and Lite0 give


def test_old_torchvision_file_without_num_batches_tracked_loads():
    """torchvision's own resnet18-f37072fd.pth predates the BatchNorm counter: it must load, as PyTorch loads it."""
    planted = {k: v for k, v in random_state_dict("resnet18").items() if not k.endswith("num_batches_tracked")}
    plant(ResNet18_Weights.DEFAULT, planted)
    model = imagenet_model("resnet18")
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], planted[k]) for k in planted)
    reference = get_model("resnet18", weights=None)
    reference.load_state_dict(planted, strict=True)  # plain PyTorch accepts the same file
    assert all(torch.equal(a, b) for a, b in zip(reference.state_dict().values(), loaded.values(), strict=True))


def test_offline_track_needs_no_file_and_imagenet_track_does(offline):
    torch.manual_seed(0)
    model = imagenet_or_random("squeezenet1_1", track="offline")
    torch.manual_seed(0)
    pairs = zip(model.parameters(), get_model("squeezenet1_1").parameters(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    with pytest.raises(WeightsNotFoundError, match=re.escape("vgg16-397923af.pth")):
        imagenet_or_random("vgg16", track="imagenet")
    with pytest.raises(ValueError, match="offline"):
        imagenet_or_random("vgg16", track="cifar")


def test_the_default_track_comes_from_the_environment(monkeypatch, offline):
    monkeypatch.setenv("TRANSFERLAB_TRACK", "imagenet")
    with pytest.raises(WeightsNotFoundError):
        imagenet_or_random("resnet18")
    monkeypatch.setenv("TRANSFERLAB_TRACK", "offline")
    assert imagenet_or_random("resnet18").fc.out_features == 1000


def test_imagenet_track_loads_planted_weights():
    planted = random_state_dict("resnet18")
    plant(ResNet18_Weights.DEFAULT, planted)
    model = imagenet_or_random("resnet18", track="imagenet")
    assert torch.equal(model.conv1.weight, planted["conv1.weight"])


def test_get_track_reads_the_environment(monkeypatch):
    monkeypatch.delenv("TRANSFERLAB_TRACK", raising=False)
    assert get_track() == "offline"
    monkeypatch.setenv("TRANSFERLAB_TRACK", "ImageNet")
    assert get_track() == "imagenet"
    monkeypatch.setenv("TRANSFERLAB_TRACK", "cifar")
    with pytest.raises(ValueError, match="TRANSFERLAB_TRACK"):
        get_track()
