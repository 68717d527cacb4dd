"""Tests for transferlab.checkpoint: exact resume, clear load errors, writes that keep the previous checkpoint.

The atomic writer itself is tested in test_serialization.py.
"""

import random

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from transferlab import serialization
from transferlab.checkpoint import get_rng_state, load_checkpoint, save_checkpoint, set_rng_state
from transferlab.serialization import WeightsDeviceError, WeightsFileError, WeightsNotFoundError
from transferlab.training import train_one_epoch


class NoisyBlobs(Dataset):
    """Samples whose augmentation draws from NumPy and Python RNGs, so every RNG matters for resuming."""

    def __init__(self, n: int = 48):
        g = torch.Generator().manual_seed(0)
        self.y = torch.arange(n) % 3
        self.x = torch.randn(n, 4, generator=g) + nn.functional.one_hot(self.y, 4).float()

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        jitter = float(np.random.normal(0, 0.1)) + random.uniform(-0.1, 0.1)
        return self.x[i] + jitter, self.y[i]


def reseed(seed: int) -> None:
    """Seed PyTorch's, NumPy's and Python's global generators."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def make(seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.7)
    return model, opt, sched


def run(model, opt, sched, loader, epochs):
    for _ in range(epochs):
        train_one_epoch(model, loader, opt)
        sched.step()


@pytest.mark.parametrize("own_generator", [False, True], ids=["global-rng-shuffle", "own-generator-shuffle"])
def test_resume_is_exact(tmp_path, own_generator):
    data = NoisyBlobs()

    def loader(seed):
        g = torch.Generator().manual_seed(seed) if own_generator else None
        return DataLoader(data, batch_size=8, shuffle=True, generator=g), g

    # straight: 4 epochs
    reseed(1)
    model_a, opt_a, sched_a = make()
    loader_a, _ = loader(7)
    run(model_a, opt_a, sched_a, loader_a, 4)

    # 2 epochs, save, then fresh objects, load, 2 more
    reseed(1)
    model_b, opt_b, sched_b = make()
    loader_b, g_b = loader(7)
    run(model_b, opt_b, sched_b, loader_b, 2)
    save_checkpoint(model_b, tmp_path / "ckpt.pt", opt_b, sched_b, epoch=2, generator=g_b, note="half")
    del model_b, opt_b, sched_b

    reseed(99)  # a fresh process would be in another state
    model_c, opt_c, sched_c = make(seed=5)
    loader_c, g_c = loader(123)
    ckpt = load_checkpoint(model_c, tmp_path / "ckpt.pt", opt_c, sched_c, generator=g_c)
    assert ckpt["epoch"] == 2 and ckpt["note"] == "half"
    run(model_c, opt_c, sched_c, loader_c, 2)

    sa, sc = model_a.state_dict(), model_c.state_dict()
    assert sa.keys() == sc.keys()
    for k in sa:
        assert torch.equal(sa[k], sc[k]), k
    assert sched_a.get_last_lr() == sched_c.get_last_lr()
    for pa, pc in zip(opt_a.state.values(), opt_c.state.values(), strict=True):
        assert torch.equal(pa["momentum_buffer"], pc["momentum_buffer"])


def test_resume_without_restoring_rng_differs(tmp_path):
    """The check above can fail: skipping the RNG restore changes the result."""
    data = NoisyBlobs()
    reseed(1)
    model_a, opt_a, sched_a = make()
    run(model_a, opt_a, sched_a, DataLoader(data, batch_size=8, shuffle=True), 2)
    save_checkpoint(model_a, tmp_path / "c.pt", opt_a, sched_a, epoch=2)
    run(model_a, opt_a, sched_a, DataLoader(data, batch_size=8, shuffle=True), 1)
    torch.manual_seed(99)
    model_c, opt_c, sched_c = make()
    load_checkpoint(model_c, tmp_path / "c.pt", opt_c, sched_c, restore_rng=False)
    run(model_c, opt_c, sched_c, DataLoader(data, batch_size=8, shuffle=True), 1)
    pairs = zip(model_a.state_dict().values(), model_c.state_dict().values(), strict=True)
    assert not all(torch.equal(a, c) for a, c in pairs)


def test_rng_state_round_trip_and_weights_only(tmp_path):
    state = get_rng_state()
    torch.save(state, tmp_path / "rng.pt")
    loaded = torch.load(tmp_path / "rng.pt", weights_only=True)
    expected = (random.random(), float(np.random.rand()), torch.rand(3))
    set_rng_state(loaded)
    assert random.random() == expected[0]
    assert float(np.random.rand()) == expected[1]
    assert torch.equal(torch.rand(3), expected[2])


def stray_files(folder):
    return sorted(p.name for p in folder.iterdir() if p.name != "ckpt.pt")


def test_interrupted_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    model, opt, sched = make()
    path = save_checkpoint(model, tmp_path / "ckpt.pt", opt, sched, epoch=1)
    real_save = torch.save

    def crash_half_way(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a zip file")  # some bytes reach the temp file, then the process "dies"
        raise KeyboardInterrupt("interrupted mid-write")

    monkeypatch.setattr(serialization.torch, "save", crash_half_way)
    with torch.no_grad():
        model[0].weight.add_(1.0)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(model, path, opt, sched, epoch=2)
    monkeypatch.setattr(serialization.torch, "save", real_save)

    fresh, _, _ = make(seed=3)
    assert load_checkpoint(fresh, path)["epoch"] == 1
    assert not torch.equal(fresh[0].weight, model[0].weight)  # the old weights, not the new ones
    assert stray_files(tmp_path) == []


def test_failed_rename_keeps_previous_checkpoint(tmp_path, monkeypatch):
    model, opt, sched = make()
    path = save_checkpoint(model, tmp_path / "ckpt.pt", opt, sched, epoch=1)

    def no_replace(src, dst):
        raise OSError("disk vanished")

    monkeypatch.setattr(serialization.os, "replace", no_replace)
    with pytest.raises(OSError, match="disk vanished"):
        save_checkpoint(model, path, opt, sched, epoch=2)
    monkeypatch.undo()
    assert load_checkpoint(make()[0], path)["epoch"] == 1
    assert stray_files(tmp_path) == []


def test_load_errors_are_clear(tmp_path):
    model = make()[0]
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        load_checkpoint(model, tmp_path / "missing.pt")

    torch.save(model.state_dict(), tmp_path / "bare.pt")
    with pytest.raises(WeightsFileError, match="load_state_dict"):
        load_checkpoint(model, tmp_path / "bare.pt")

    good = save_checkpoint(model, tmp_path / "good.pt")
    (tmp_path / "cut.pt").write_bytes(good.read_bytes()[:200])
    with pytest.raises(WeightsFileError, match="corrupt"):
        load_checkpoint(model, tmp_path / "cut.pt")

    torch.save({"model": model, "epoch": 0, "rng": {}}, tmp_path / "pickled.pt")  # a whole pickled module
    with pytest.raises(WeightsFileError, match=r"whole pickled model \(torch.nn.modules.container.Sequential\)"):
        load_checkpoint(model, tmp_path / "pickled.pt")

    with pytest.raises(WeightsFileError, match="optimizer"):
        load_checkpoint(model, good, optimizer=torch.optim.SGD(model.parameters(), lr=0.1))


def test_old_argument_order_says_the_new_one(tmp_path):
    model = make()[0]
    path = save_checkpoint(model, tmp_path / "ckpt.pt")
    with pytest.raises(TypeError, match=r"model first: load_checkpoint\(model, path"):
        load_checkpoint(path, model)


def test_checkpoint_loads_with_plain_torch_load_weights_only(tmp_path):
    model, opt, sched = make()
    path = save_checkpoint(model, tmp_path / "ckpt.pt", opt, sched, epoch=3, best_acc=0.5)
    raw = torch.load(path, weights_only=True, map_location="cpu")
    assert {"model", "optimizer", "scheduler", "epoch", "rng", "best_acc"} <= raw.keys()
    assert raw["epoch"] == 3
    assert isinstance(raw["rng"]["numpy"]["keys"], torch.Tensor) and isinstance(raw["rng"]["python"]["state"], list)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_map_location_cuda_on_a_cpu_machine_is_a_device_error_not_a_corrupt_file(tmp_path):
    model = nn.Linear(2, 2)
    path = save_checkpoint(model, tmp_path / "ckpt.pt")
    with pytest.raises(
        WeightsDeviceError,
        match=r"map_location='cuda' asks for a CUDA device, which this machine "
        r"does not have; nothing was read\. Fix: .*map_location='cpu'",
    ):
        load_checkpoint(model, path, map_location="cuda")
    load_checkpoint(model, path, map_location="cpu")  # the same file is fine


def test_save_checkpoint_takes_the_model_first(tmp_path):
    model = nn.Linear(2, 2)
    with pytest.raises(TypeError, match=r"model first.*save_checkpoint\(model, "):
        save_checkpoint(tmp_path / "ckpt.pt", model)  # the old (path, model) order
    assert not (tmp_path / "ckpt.pt").exists()
