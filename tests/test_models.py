"""TinyResNet and its shipped pretrained weights."""

import re
import socket
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models import resnet18

from transferlab import models
from transferlab.data import source_dataset
from transferlab.models import TinyResNet_Weights, tiny_resnet
from transferlab.pretrain import PretrainConfig, pretrain
from transferlab.serialization import WeightsFileError, WeightsNotFoundError, file_sha256, save_file


def test_module_names_match_torchvision_resnet():
    ours = [name for name, _ in tiny_resnet().named_children()]
    assert ours == [name for name, _ in resnet18().named_children()]
    assert ours == ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc"]


def test_forward_is_torchvisions_resnet_forward():
    """TinyResNet's own forward computes what torchvision's ResNet.forward computes with the same modules."""
    from torchvision.models.resnet import BasicBlock, ResNet

    torch.manual_seed(0)
    tiny = tiny_resnet(weights=TinyResNet_Weights.DEFAULT).eval()
    reference = ResNet(BasicBlock, [1, 1, 1, 1], num_classes=52).eval()
    for name, module in tiny.named_children():  # the same modules in torchvision's container
        setattr(reference, name, module)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(tiny(x), reference(x))
        reference.maxpool = nn.Identity()  # negative control: a different network gives different logits
        assert not torch.allclose(tiny(x), reference(x))


def test_built_from_public_parts_only():
    """No private ResNet state is set by hand: TinyResNet is a plain nn.Module of public torchvision blocks."""
    from torchvision.models.resnet import BasicBlock, ResNet

    model = tiny_resnet()
    assert not isinstance(model, ResNet)
    assert all(isinstance(getattr(model, f"layer{i}")[0], BasicBlock) for i in range(1, 5))
    assert not {"_norm_layer", "inplanes", "dilation", "base_width"} & set(vars(model))


def test_forward_shape_and_num_classes():
    model = tiny_resnet(num_classes=10)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_param_count_matches_meta():
    meta = TinyResNet_Weights.DEFAULT.meta
    assert sum(p.numel() for p in tiny_resnet().parameters()) == meta["num_params"]
    assert len(meta["categories"]) == 52 and meta["categories"][:3] == ["A", "B", "C"]


def test_enum_like_torchvision():
    assert TinyResNet_Weights.DEFAULT is TinyResNet_Weights.LETTERS_V1
    assert TinyResNet_Weights.verify("DEFAULT") is TinyResNet_Weights.DEFAULT
    x = torch.full((3, 32, 32), 0.5)
    out = TinyResNet_Weights.DEFAULT.transforms()(x)
    assert out.shape == x.shape and abs(float(out.mean())) < 1e-6  # 0.5 is the source mean


def test_loads_offline_through_the_safe_reader(monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    model = tiny_resnet(weights=TinyResNet_Weights.DEFAULT)
    state = TinyResNet_Weights.DEFAULT.get_state_dict()
    plain = torch.load(TinyResNet_Weights.DEFAULT.url, map_location="cpu", weights_only=True)
    assert state.keys() == plain.keys() == model.state_dict().keys()
    assert all(torch.equal(v, model.state_dict()[k]) and torch.equal(v, plain[k]) for k, v in state.items())


def test_get_state_dict_reads_through_serialization(monkeypatch):
    calls = []
    real = models.load_state_dict_file
    monkeypatch.setattr(models, "load_state_dict_file", lambda path: (calls.append(path), real(path))[1])
    tiny_resnet(weights="DEFAULT")
    assert calls == [TinyResNet_Weights.DEFAULT.url]


def test_missing_weights_file_says_how_to_rebuild(monkeypatch, tmp_path):
    monkeypatch.setattr(TinyResNet_Weights.LETTERS_V1.value, "url", str(tmp_path / "gone.pt"))
    with pytest.raises(WeightsNotFoundError, match=re.escape("python -m transferlab.pretrain")):
        tiny_resnet(weights="DEFAULT")


def test_unknown_weights_name_the_valid_choices():
    with pytest.raises(
        ValueError,
        match=r"unknown weights 'nope' for tiny_resnet; use one of None, 'LETTERS_V1', "
        r"'DEFAULT'",
    ):
        tiny_resnet(weights="nope")


def test_reaches_published_source_accuracy():
    weights = TinyResNet_Weights.DEFAULT
    model = tiny_resnet(weights=weights).eval()
    published = weights.meta["_metrics"]["letters-scenes-test"]["acc@1"] / 100
    # through the public path: the dataset with the weights' own transforms
    test = source_dataset("test", transform=weights.transforms())
    with torch.no_grad():
        preds = torch.cat(
            [
                model(torch.stack([test[i][0] for i in range(s, min(s + 520, len(test)))])).argmax(1)
                for s in range(0, len(test), 520)
            ]
        )
    acc = float((preds == test.labels).float().mean())
    assert abs(acc - published) <= 0.01
    assert acc > 5 / 52  # far above chance


def test_wrong_num_classes_says_to_replace_the_head():
    with pytest.raises(ValueError, match=r"replace its head.*nn.Linear\(model.fc.in_features, 10\)"):
        tiny_resnet(weights=TinyResNet_Weights.DEFAULT, num_classes=10)
    model = tiny_resnet(weights="DEFAULT", num_classes=52)
    model.fc = nn.Linear(model.fc.in_features, 10)
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


def test_pretraining_same_seed_is_bit_identical(tmp_path):
    cfg = PretrainConfig(steps=3, batch_size=16, glyphs_per_class=2, seed=1)
    model_a, model_b = pretrain(cfg, log_every=0), pretrain(cfg, log_every=0)
    a, b = model_a.state_dict(), model_b.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the checkpoint file pretrain writes, byte for byte
    assert save_file(a, tmp_path / "a.pt").read_bytes() == save_file(b, tmp_path / "b.pt").read_bytes()
    c = pretrain(PretrainConfig(steps=3, batch_size=16, glyphs_per_class=2, seed=2), log_every=0).state_dict()
    assert not torch.equal(a["conv1.weight"], c["conv1.weight"])


def test_an_altered_weights_file_is_refused_before_unpickling(monkeypatch, tmp_path):
    altered = tmp_path / "tiny_resnet_letters_v1.pt"
    altered.write_bytes(Path(TinyResNet_Weights.DEFAULT.url).read_bytes())
    with altered.open("r+b") as f:  # one byte changed deep inside the archive
        f.seek(altered.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))
    monkeypatch.setattr(TinyResNet_Weights.LETTERS_V1.value, "url", str(altered))
    unpickled = []
    monkeypatch.setattr(torch, "load", lambda *a, **k: unpickled.append(a) or {})
    with pytest.raises(
        WeightsFileError,
        match=r"tiny_resnet_letters_v1\.pt is not the released file: its SHA-256 .*"
        r"Fix: reinstall transferlab",
    ):
        tiny_resnet(weights="DEFAULT")
    assert unpickled == [], "the file must be refused before torch.load reads it"


def test_the_shipped_file_matches_its_recorded_sha256():
    weights = TinyResNet_Weights.DEFAULT
    assert file_sha256(weights.url) == weights.meta["sha256"], "rebuild: python -m transferlab.pretrain"


def test_tiny_resnet_from_file_loads_all_or_nothing_then_replaces_the_head(tmp_path):
    from transferlab.models import tiny_resnet_from_file
    from transferlab.serialization import IncompleteLoadError

    torch.manual_seed(0)
    source = tiny_resnet(num_classes=5)
    wrapped = tmp_path / "ddp.pt"
    torch.save({"model": {f"module.{k}": v for k, v in source.state_dict().items()}}, wrapped)  # a DDP checkpoint
    same = tiny_resnet_from_file(wrapped)
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in same.state_dict().items())
    new = tiny_resnet_from_file(wrapped, num_classes=3)
    assert new.fc.out_features == 3 and torch.equal(new.layer4[0].conv2.weight, source.layer4[0].conv2.weight)
    state = source.state_dict()
    del state["layer2.0.bn1.running_var"]
    torch.save(state, tmp_path / "partial.pt")
    with pytest.raises(IncompleteLoadError, match=r"(?s)partial.pt does not fit TinyResNet.*layer2.0.bn1.running_var"):
        tiny_resnet_from_file(tmp_path / "partial.pt")
