"""The ImageFolder checks, the splits, the offline folder and the (offline-tested) hymenoptera fetch."""

import zipfile

import numpy as np
import pytest
from PIL import Image

from transferlab import imagefolder
from transferlab.imagefolder import (
    ImageFolderError,
    OfflineError,
    check_image_folder,
    fetch_hymenoptera,
    load_splits,
    write_offline_folder,
)


def _plant(root, classes, n=5, size=8):
    for c, cls in enumerate(classes):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(np.full((size, size, 3), 10 * c + i, np.uint8)).save(root / cls / f"{i}.png")
    return root


def test_check_image_folder_lists_classes_sorted(tmp_path):
    found = check_image_folder(_plant(tmp_path / "d", ["dog", "cat"], n=3))
    assert list(found) == ["cat", "dog"] and [p.name for p in found["cat"]] == ["0.png", "1.png", "2.png"]


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "is not a folder"),
        ("empty", "is empty"),
        ("loose", "is not ImageFolder-shaped"),
        ("one_class", "single class"),
        ("no_images", "holds no images"),
        ("unreadable", "cannot read the image"),
    ],
)
def test_each_bad_folder_gets_its_own_message(tmp_path, case, message):
    root = tmp_path / case
    if case != "missing":
        root.mkdir()
    if case == "loose":
        Image.new("RGB", (4, 4)).save(root / "a.png")
    if case == "one_class":
        _plant(root, ["cat"])
    if case == "no_images":
        _plant(root, ["cat"])
        (root / "dog" / "nested").mkdir(parents=True)
    if case == "unreadable":
        _plant(root, ["cat", "dog"])
        (root / "dog" / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(ImageFolderError, match=message) as err:
        check_image_folder(root)
    if case == "unreadable":
        assert "bad.jpg" in str(err.value)  # the file is named


def test_load_splits_of_a_flat_folder_is_disjoint_and_seeded(tmp_path):
    root = _plant(tmp_path / "d", ["a", "b"], n=10)
    s = load_splits(root, seed=1)
    files = [set(p for p, _ in getattr(s, name)) for name in ("train", "val", "test")]
    assert [len(f) for f in files] == [12, 4, 4]
    assert not (files[0] & files[1] or files[0] & files[2] or files[1] & files[2])
    assert load_splits(root, seed=1).val == s.val and load_splits(root, seed=2).val != s.val
    assert s.classes == ["a", "b"] and {label for _, label in s.train} == {0, 1}


def test_load_splits_uses_given_train_val_and_halves_val_without_test(tmp_path):
    _plant(tmp_path / "d" / "train", ["a", "b"], n=4)
    _plant(tmp_path / "d" / "val", ["a", "b"], n=4)
    s = load_splits(tmp_path / "d")
    assert (len(s.train), len(s.val), len(s.test)) == (8, 4, 4)
    assert all(p.parent.parent.name == "val" for p, _ in s.val + s.test)
    _plant(tmp_path / "d" / "test", ["a", "c"], n=2)
    with pytest.raises(ImageFolderError, match="same class folders"):
        load_splits(tmp_path / "d")


def test_a_class_too_small_to_split_is_refused(tmp_path):
    with pytest.raises(ImageFolderError, match="cannot give a train"):
        load_splits(_plant(tmp_path / "d", ["a", "b"], n=2))


def test_offline_folder_has_three_classes_and_splits_share_no_image(tmp_path):
    root = write_offline_folder(tmp_path / "photos", counts=(4, 3, 3))
    s = load_splits(root)
    assert s.classes == ["face", "not_face", "texture"]
    assert (len(s.train), len(s.val), len(s.test)) == (12, 9, 9)
    pixels = {
        name: {np.asarray(Image.open(p)).tobytes() for p, _ in getattr(s, name)} for name in ("train", "val", "test")
    }
    assert not (pixels["train"] & pixels["val"] or pixels["train"] & pixels["test"] or pixels["val"] & pixels["test"])
    mtime = (root / ".complete").stat().st_mtime_ns
    assert write_offline_folder(root, counts=(4, 3, 3)) == root and (root / ".complete").stat().st_mtime_ns == mtime


def _hymenoptera_zip(path, n=50):
    with zipfile.ZipFile(path, "w") as z:
        for split in ("train", "val"):
            for cls in ("ants", "bees"):
                for i in range(n):
                    z.writestr(f"hymenoptera_data/{split}/{cls}/{i}.jpg", b"jpeg bytes are not opened by the check")


def test_fetch_hymenoptera_with_a_planted_zip_then_from_the_cache(tmp_path):
    calls = []

    def fake_download(url, dest):
        calls.append(url)
        _hymenoptera_zip(dest)

    folder = fetch_hymenoptera(tmp_path, downloader=fake_download)
    assert folder == tmp_path / "hymenoptera_data" and calls == [imagefolder.HYMENOPTERA_URL]
    assert sorted(p.name for p in (folder / "train").iterdir()) == ["ants", "bees"]
    assert not (tmp_path / "hymenoptera_data.zip").exists()
    assert fetch_hymenoptera(tmp_path, downloader=fake_download) == folder and len(calls) == 1  # cached


def test_fetch_hymenoptera_refuses_offline_without_touching_the_network(tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFERLAB_OFFLINE", "1")
    monkeypatch.setattr(imagefolder, "_download", lambda *a: pytest.fail("the network was used"))
    with pytest.raises(OfflineError, match="cannot be reached"):
        fetch_hymenoptera(tmp_path)


def test_fetch_hymenoptera_rejects_a_wrong_download(tmp_path):
    with pytest.raises(ImageFolderError, match="not a zip"):
        fetch_hymenoptera(tmp_path / "a", downloader=lambda url, dest: dest.write_bytes(b"<html>error</html>"))

    def too_small(url, dest):
        _hymenoptera_zip(dest, n=3)

    with pytest.raises(ImageFolderError, match="not the hymenoptera data"):
        fetch_hymenoptera(tmp_path / "b", downloader=too_small)
