"""Tests for transferlab.serialization: atomic writes, safe reads and the messages they give on bad files."""

import builtins
import os
import pickle
import time
import warnings
from collections import OrderedDict

import pytest
import torch
from torch import nn
from torchvision.models import resnet18

from transferlab import serialization as ser
from transferlab.serialization import (
    IncompleteLoadError,
    WeightsError,
    WeightsFileError,
    WeightsNotFoundError,
    atomic_open,
    load_file,
    load_state_dict_file,
    save_file,
    unsafe_globals,
    unwrap_checkpoint,
)


def small_state_dict(seed: int = 0) -> OrderedDict:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).state_dict()


def stray_files(folder, keep="w.pt"):
    return sorted(p.name for p in folder.iterdir() if p.name != keep)


# ---- the error hierarchy ---------------------------------------------------------------------------------------


def test_error_hierarchy():
    for cls in (WeightsFileError, WeightsNotFoundError, IncompleteLoadError):
        assert issubclass(cls, WeightsError) and issubclass(cls, RuntimeError)
    assert issubclass(WeightsNotFoundError, FileNotFoundError)  # `except FileNotFoundError` still catches it
    assert not issubclass(WeightsFileError, FileNotFoundError)


# ---- atomic writes ---------------------------------------------------------------------------------------------


def test_save_file_round_trip_equals_plain_torch_load(tmp_path):
    sd = small_state_dict()
    path = save_file(sd, tmp_path / "sub" / "w.pt")  # missing folders are created
    assert path == tmp_path / "sub" / "w.pt"
    plain = torch.load(path, weights_only=True)
    assert plain.keys() == sd.keys() and all(torch.equal(plain[k], sd[k]) for k in sd)


def test_save_file_bytes_do_not_depend_on_the_path(tmp_path):
    sd = small_state_dict()
    a, b = save_file(sd, tmp_path / "a.pt"), save_file(sd, tmp_path / "b.pt")
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != save_file(small_state_dict(seed=1), tmp_path / "c.pt").read_bytes()


def test_interrupted_write_keeps_the_previous_file(tmp_path):
    path = save_file({"v": torch.ones(3)}, tmp_path / "w.pt")
    with pytest.raises(KeyboardInterrupt), atomic_open(path) as f:
        f.write(b"PK\x03\x04 half a zip file")  # some bytes reach the temp file, then the process "dies"
        raise KeyboardInterrupt("interrupted mid-write")
    assert torch.equal(load_file(path)["v"], torch.ones(3))
    assert stray_files(tmp_path) == []


def test_failed_pickling_keeps_the_previous_file(tmp_path):
    path = save_file({"v": torch.ones(3)}, tmp_path / "w.pt")
    with pytest.raises((pickle.PicklingError, AttributeError)):
        save_file({"v": lambda: 0}, path)  # a lambda cannot be pickled
    assert torch.equal(load_file(path)["v"], torch.ones(3))
    assert stray_files(tmp_path) == []


def test_failed_rename_keeps_the_previous_file(tmp_path, monkeypatch):
    path = save_file({"v": torch.ones(3)}, tmp_path / "w.pt")

    def no_replace(src, dst):
        raise OSError("disk vanished")

    monkeypatch.setattr(ser.os, "replace", no_replace)
    with pytest.raises(OSError, match="disk vanished"):
        save_file({"v": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.equal(load_file(path)["v"], torch.ones(3))
    assert stray_files(tmp_path) == []


def test_fsync_before_the_rename_and_usual_permissions(tmp_path, monkeypatch):
    calls = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(ser.os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(ser.os, "replace", lambda a, b: (calls.append("replace"), real_replace(a, b))[1])
    path = save_file(small_state_dict(), tmp_path / "w.pt")
    assert calls == ["fsync", "replace"]
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's owner-only 0o600


# ---- load_file: good files -------------------------------------------------------------------------------------


def test_load_file_reads_what_plain_torch_load_reads(tmp_path):
    sd = small_state_dict()
    torch.save({"epoch": 3, "model": sd, "best": 0.5}, tmp_path / "ckpt.pt")
    ours, plain = load_file(tmp_path / "ckpt.pt"), torch.load(tmp_path / "ckpt.pt", weights_only=True)
    assert ours.keys() == plain.keys() and ours["epoch"] == 3
    assert all(torch.equal(ours["model"][k], plain["model"][k]) for k in sd)


def test_legacy_non_zip_torch_file_loads_without_warnings(tmp_path):
    sd = small_state_dict()
    torch.save(sd, tmp_path / "old.pt", _use_new_zipfile_serialization=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = load_state_dict_file(tmp_path / "old.pt")
    assert all(torch.equal(loaded[k], sd[k]) for k in sd)


# ---- load_file: missing files and directories ------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(WeightsNotFoundError, match=r"does not exist.*state_dict"):
        load_file(tmp_path / "nope.pt")


def test_a_directory_says_it_is_a_directory(tmp_path):
    (tmp_path / "run1").mkdir()
    save_file(small_state_dict(), tmp_path / "run1" / "best.pt")
    expected = r"is a directory, not a weights file. It holds \['best.pt'\]: pass one of them, e.g. .*run1/best.pt"
    with pytest.raises(WeightsFileError, match=expected):
        load_file(tmp_path / "run1")
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsFileError, match="is a directory"):
        load_file(tmp_path / "empty")


# ---- load_file: damaged files ----------------------------------------------------------------------------------


def damaged_files(tmp_path):
    good = save_file(small_state_dict(), tmp_path / "good.pt")
    data = good.read_bytes()
    files = {
        "truncated.pt": data[: len(data) // 2],
        "tail_cut.pt": data[:-30],
        "junk.pt": b"this is not a checkpoint",
        "empty.pt": b"",
        "zeroed_middle.pt": data[:200] + bytes(400) + data[600:],  # tampered: part of the archive overwritten
        "not_a_zip.pt": b"\x80\x02}q\x00." + bytes(20),  # a raw pickle of {} and junk: torch cannot read it
    }
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    return sorted(files)


def test_damaged_files_get_a_clear_message_fast(tmp_path):
    for name in damaged_files(tmp_path):
        start = time.perf_counter()
        with pytest.raises(WeightsFileError) as info:
            load_file(tmp_path / name)
        assert time.perf_counter() - start < 10.0, name  # generous: about 0.01 s on a quiet machine
        message = str(info.value)
        assert name in message and "corrupt, truncated or not a PyTorch checkpoint" in message, message


def test_a_byte_changed_after_saving_is_found(tmp_path):
    weights = torch.arange(256, dtype=torch.float32) * 0.5
    path = save_file({"w": weights}, tmp_path / "w.pt")
    data = bytearray(path.read_bytes())
    at = data.find(weights.numpy().tobytes())  # the tensor's storage, stored uncompressed in the archive
    assert at > 0
    data[at + 100] ^= 0x01  # one bit of one float: torch.load alone would return the altered tensor
    (tmp_path / "tampered.pt").write_bytes(bytes(data))
    assert not torch.equal(torch.load(tmp_path / "tampered.pt", weights_only=True)["w"], weights)
    with pytest.raises(WeightsFileError, match=r"tampered.pt .*entry archive/data/0 does not match the checksum"):
        load_file(tmp_path / "tampered.pt")


def test_archive_written_without_checksums_still_loads(tmp_path):
    torch.serialization.set_crc32_options(False)
    try:
        torch.save({"w": torch.ones(3)}, tmp_path / "nocrc.pt")
    finally:
        torch.serialization.set_crc32_options(True)
    assert torch.equal(load_file(tmp_path / "nocrc.pt")["w"], torch.ones(3))


# ---- load_file: pickles that would run code --------------------------------------------------------------------


class SystemCall:
    """Unpickling this runs ``os.system(command)``."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class Exec:
    """Unpickling this runs ``exec(source)``."""

    def __init__(self, source):
        self.source = source

    def __reduce__(self):
        return (builtins.exec, (self.source,))


def test_os_system_payload_is_named_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"weight": torch.ones(2), "x": SystemCall(f"touch {marker}")}, path)
    assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == ["posix.system"]
    with pytest.raises(WeightsFileError, match=r"would import and call 'posix.system'.*nothing in it was run"):
        load_file(path)
    assert not marker.exists()
    torch.load(path, weights_only=False)  # the test can fail: an unsafe load does run the payload
    assert marker.exists()


@pytest.mark.parametrize("protocol", [2, 4])
def test_raw_pickle_is_refused_naming_the_call_without_a_warning(tmp_path, protocol, recwarn):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(
        pickle.dumps({"weight": torch.ones(2), "x": Exec(f"open({str(marker)!r}, 'w').close()")}, protocol=protocol)
    )
    warnings.simplefilter("always")  # recwarn records every warning, even one already shown
    with pytest.raises(WeightsFileError, match=r"not a torch.save zip archive \(a raw pickle.*nothing in it was run"):
        load_file(path)
    assert [str(w.message) for w in recwarn] == []
    assert not marker.exists()
    pickle.loads(path.read_bytes())  # the same file unpickled unsafely does run the payload
    assert marker.exists()


def test_torch_itself_warns_on_a_raw_pickle(tmp_path):
    """The warning load_file keeps from the learner exists: plain torch.load gives it before refusing."""
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"x": SystemCall("true")}, protocol=4))
    with pytest.warns(UserWarning, match="Detected pickle protocol 4"), pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)


def test_whole_pickled_model_names_its_class(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(resnet18(), path)  # the dated recipe: torch.save(model)
    names = unsafe_globals(path)
    assert names == torch.serialization.get_unsafe_globals_in_checkpoint(path) or set(names) == set(
        torch.serialization.get_unsafe_globals_in_checkpoint(path)
    )
    assert names[:2] == ["torchvision.models.resnet.BasicBlock", "torchvision.models.resnet.ResNet"]  # model first
    with pytest.raises(
        WeightsFileError,
        match=r"whole pickled model \(torchvision.models.resnet.BasicBlock, "
        r"torchvision.models.resnet.ResNet\), not a state_dict",
    ):
        load_file(path)


def test_whole_pickled_model_nested_in_a_checkpoint(tmp_path):
    path = tmp_path / "ckpt.pt"
    torch.save({"epoch": 1, "model": nn.Linear(2, 2)}, path)
    with pytest.raises(WeightsFileError, match=r"whole pickled model \(torch.nn.modules.linear.Linear\)"):
        load_file(path)


def test_legacy_torch_file_that_would_run_code_is_named(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "old_evil.pt"
    torch.save({"w": torch.ones(2), "x": SystemCall(f"touch {marker}")}, path, _use_new_zipfile_serialization=False)
    assert unsafe_globals(path) is None  # torch reads only zip archives; the refusal says what the file is
    with pytest.raises(WeightsFileError, match=r"legacy format of PyTorch before 1.6.*nothing in it was run"):
        load_file(path)
    assert not marker.exists()


def test_unsafe_globals_of_a_plain_state_dict_is_empty(tmp_path):
    path = save_file(small_state_dict(), tmp_path / "w.pt")
    assert unsafe_globals(path) == []


# ---- unwrap_checkpoint and load_state_dict_file ----------------------------------------------------------------


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: sd,
        lambda sd: {"state_dict": sd, "epoch": 3},
        lambda sd: {"model": sd, "optimizer": {"lr": 0.1}},
        lambda sd: {"model_state_dict": sd, "epoch": 1},
        lambda sd: {"model": {"state_dict": sd}},
    ],
    ids=["plain", "state_dict", "model", "model_state_dict", "double"],
)
def test_unwrap_nested_checkpoints(wrap):
    sd = small_state_dict()
    assert unwrap_checkpoint(wrap(sd)) is sd


def test_unwrap_unknown_checkpoint_layout_names_its_keys():
    with pytest.raises(ValueError, match=r"keys are \['epoch', 'weights'\].*checkpoint\['<key>'\]"):
        unwrap_checkpoint({"epoch": 1, "weights": small_state_dict()})


def test_load_state_dict_file_unwraps_and_equals_the_source(tmp_path):
    sd = small_state_dict()
    save_file({"epoch": 4, "state_dict": sd, "best_prec1": 71.2}, tmp_path / "ckpt.pt")
    loaded = load_state_dict_file(tmp_path / "ckpt.pt")
    assert isinstance(loaded, OrderedDict) and list(loaded) == list(sd)
    assert all(torch.equal(loaded[k], sd[k]) for k in sd)


@pytest.mark.parametrize(
    "content, hint",
    [
        ({"epoch": 1, "weights": {"w": torch.ones(1)}}, "does not hold a state_dict.*'epoch', 'weights'"),
        ([torch.ones(1)], "does not hold a state_dict.*got list"),
        ({0: torch.ones(1)}, "not a flat state_dict of named tensors"),
    ],
)
def test_load_state_dict_file_refuses_what_is_not_a_state_dict(tmp_path, content, hint):
    save_file(content, tmp_path / "w.pt")
    with pytest.raises(WeightsFileError, match=hint):
        load_state_dict_file(tmp_path / "w.pt")
