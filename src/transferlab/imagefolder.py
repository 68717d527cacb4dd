"""Folders of photos in ``ImageFolder`` shape (``root/class_name/*.jpg``): checked, split, written, downloaded.

A learner's own photos arrive as a folder per class. :func:`check_image_folder` reads one and says what is wrong
with it in words (an empty folder, one class only, an unreadable image named, images not sorted into class
folders). :func:`load_splits` accepts either shape a practitioner meets: ``root/class/*`` (split here, per class,
by a seeded shuffle of the files) or ``root/train/class/*`` + ``root/val/class/*`` (+ optional ``root/test``),
used as given. The course's offline default is written by :func:`write_offline_folder` from photos that ship in
installed packages; :func:`fetch_hymenoptera` is the opt-in online folder (the PyTorch tutorial's ants and bees).

Example:
    >>> import tempfile
    >>> root = write_offline_folder(Path(tempfile.mkdtemp()) / "photos")
    >>> splits = load_splits(root)
    >>> splits.classes, len(splits.train), len(splits.val), len(splits.test)
    (['face', 'not_face', 'texture'], 120, 90, 90)
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import random
import shutil
import urllib.request
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from transferlab.env import network_available

__all__ = [
    "HYMENOPTERA_URL",
    "IMAGE_EXTENSIONS",
    "ImageFolderError",
    "OfflineError",
    "Splits",
    "check_image_folder",
    "fetch_hymenoptera",
    "load_splits",
    "offline_sources",
    "write_offline_folder",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")  # torchvision's, lower case
SPLIT_NAMES = ("train", "val", "test")
HYMENOPTERA_URL = "https://download.pytorch.org/tutorial/hymenoptera_data.zip"
HYMENOPTERA_CLASSES = ("ants", "bees")
# The offline folder: per class, this many images in train / val / test.
OFFLINE_COUNTS = (40, 30, 30)
OFFLINE_TEXTURES = ("brick", "grass", "gravel")  # scikit-image's CC0 texture photos, 512 x 512 grey
TEXTURE_CROP = 64  # texture crops are cut at 64 x 64 and shrunk to the 25 x 25 of the LFW images


class ImageFolderError(ValueError):
    """A folder that is not a usable ``ImageFolder``: the message names the problem and the fix."""


class OfflineError(RuntimeError):
    """A download was asked for, but the network cannot be reached (or ``TRANSFERLAB_OFFLINE`` is set)."""


@dataclass
class Splits:
    """Labelled image files of a train / validation / test split; labels index ``classes``."""

    classes: list[str]
    train: list[tuple[Path, int]]
    val: list[tuple[Path, int]]
    test: list[tuple[Path, int]]


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def check_image_folder(root: str | os.PathLike, verify: bool = True) -> dict[str, list[Path]]:
    """The image files of an ``ImageFolder``-shaped folder, class by class (classes sorted, as torchvision does).

    Args:
        root: a folder holding one subfolder per class, each with image files (hidden entries are ignored).
        verify: open every image with PIL to find unreadable files now, not in the middle of training.
    Raises:
        ImageFolderError: no such folder; an empty folder; images lying in ``root`` itself (not sorted into class
            folders); a class folder without images; a single class; an unreadable image (named).

    Example:
        >>> check_image_folder("/no/such/folder")
        Traceback (most recent call last):
        ...
        transferlab.imagefolder.ImageFolderError: /no/such/folder is not a folder. ...
    """
    root = Path(root)
    if not root.is_dir():
        raise ImageFolderError(
            f"{root} is not a folder. Give the folder that holds one subfolder per class "
            "(root/cat/1.jpg, root/dog/2.jpg, ...)."
        )
    loose = _images_in(root)
    subfolders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if loose:
        raise ImageFolderError(
            f"{root} is not ImageFolder-shaped: {len(loose)} image(s) lie in the folder itself (e.g. {loose[0].name}) "
            "instead of in one subfolder per class. Fix: move each image into root/<class name>/."
        )
    if not subfolders:
        raise ImageFolderError(
            f"{root} is empty: no class subfolders and no images. Fix: put each class's images "
            "in its own subfolder, root/<class name>/*.jpg."
        )
    classes: dict[str, list[Path]] = {}
    for folder in subfolders:
        files = _images_in(folder)
        if not files:
            nested = [p.name for p in folder.iterdir() if p.is_dir()]
            hint = f" It holds folders ({', '.join(nested[:3])}): is {root} one level too high?" if nested else ""
            raise ImageFolderError(
                f"the class folder {folder} holds no images ({', '.join(IMAGE_EXTENSIONS)}).{hint} "
                "Fix: add images or remove the folder."
            )
        classes[folder.name] = files
    if len(classes) < 2:
        raise ImageFolderError(
            f"{root} holds a single class ({next(iter(classes))!r}); a classifier needs at least "
            "two. Fix: add a subfolder of images for every other class."
        )
    if verify:
        for files in classes.values():
            for path in files:
                try:
                    with Image.open(path) as image:
                        image.convert("RGB")
                except Exception as err:  # PIL raises several types for a bad file
                    raise ImageFolderError(
                        f"cannot read the image {path} ({type(err).__name__}: {err}). Fix: delete or replace that file."
                    ) from err
    return classes


def _split_files(files: Sequence[Path], fractions: tuple[float, float], seed: int) -> tuple[list, list, list]:
    """Shuffle ``files`` by ``seed`` and cut them into train / val / test (val and test get at least one each)."""
    order = list(files)
    random.Random(seed).shuffle(order)
    n_val, n_test = (max(1, round(f * len(order))) for f in fractions)
    if n_val + n_test >= len(order):
        raise ImageFolderError(
            f"a class with {len(order)} images cannot give a train, a validation and a test "
            f"image (e.g. {files[0].parent}); add images (at least 3 per class, a few dozen is "
            "better)."
        )
    return order[n_val + n_test :], order[:n_val], order[n_val : n_val + n_test]


def load_splits(
    root: str | os.PathLike, val_fraction: float = 0.2, test_fraction: float = 0.2, seed: int = 0, verify: bool = True
) -> Splits:
    """Train / validation / test files of ``root``, checked by :func:`check_image_folder`.

    ``root/train`` and ``root/val`` (optionally ``root/test``) are used as given, each ImageFolder-shaped with the
    same classes; without ``root/test``, the validation files are halved (seeded) into validation and test.
    Otherwise ``root`` itself is ImageFolder-shaped and each class's files are shuffled by ``seed`` and cut by the
    two fractions. Files are distinct, so no image is in two splits; near-duplicate photos (bursts, crops of one
    photo) can still leak, which only a split by source can prevent: give train/val/test folders for that.
    """
    root = Path(root)
    if (root / "train").is_dir() and (root / "val").is_dir():
        given = {s: check_image_folder(root / s, verify) for s in SPLIT_NAMES if (root / s).is_dir()}
        classes = sorted(given["train"])
        for name, found in given.items():
            if sorted(found) != classes:
                raise ImageFolderError(
                    f"{root / name} has the classes {sorted(found)}, {root / 'train'} has "
                    f"{classes}; every split needs the same class folders."
                )
        if "test" not in given:
            shuffled = {c: random.Random(seed).sample(files, len(files)) for c, files in given["val"].items()}
            for c, files in shuffled.items():
                if len(files) < 2:
                    raise ImageFolderError(
                        f"{root / 'val' / c} holds {len(files)} image; halving it into validation "
                        "and test needs at least 2 (better: give a test/ folder too)."
                    )
            given["val"] = {c: files[: len(files) // 2] for c, files in shuffled.items()}
            given["test"] = {c: files[len(files) // 2 :] for c, files in shuffled.items()}
        parts = {s: {c: given[s][c] for c in classes} for s in SPLIT_NAMES}
    else:
        found = check_image_folder(root, verify)
        classes = sorted(found)
        cut = {c: _split_files(found[c], (val_fraction, test_fraction), seed) for c in classes}
        parts = {s: {c: cut[c][i] for c in classes} for i, s in enumerate(SPLIT_NAMES)}
    labelled = {s: [(p, i) for i, c in enumerate(classes) for p in parts[s][c]] for s in SPLIT_NAMES}
    return Splits(classes, labelled["train"], labelled["val"], labelled["test"])


def offline_sources() -> dict[str, Path]:
    """The files the offline folder is written from, inside the installed scikit-image.

    Raises:
        FileNotFoundError: scikit-image is missing, or a file is missing from it.
    """
    spec = importlib.util.find_spec("skimage")
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "the offline photos ship with scikit-image, which is not installed; pip install scikit-image"
        )
    data = Path(spec.origin).parent / "data"
    sources = {"lfw_subset": data / "lfw_subset.npy", **{t: data / f"{t}.png" for t in OFFLINE_TEXTURES}}
    for path in sources.values():
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing from scikit-image; pip install --force-reinstall scikit-image")
    return sources


def _texture_crops(path: Path, split: int, count: int, side: int) -> list[np.ndarray]:
    """``count`` crops of a texture photo from its band ``split``: rows [0, 1/2), [1/2, 3/4), [3/4, 1)."""
    with Image.open(path) as image:
        grey = np.asarray(image.convert("L"))
    h = grey.shape[0]
    top, bottom = [(0, h // 2), (h // 2, 3 * h // 4), (3 * h // 4, h)][split]
    crops = [
        grey[r : r + TEXTURE_CROP, c : c + TEXTURE_CROP]
        for r in range(top, bottom - TEXTURE_CROP + 1, TEXTURE_CROP)
        for c in range(0, grey.shape[1] - TEXTURE_CROP + 1, TEXTURE_CROP)
    ]
    if len(crops) < count:
        raise ValueError(f"the band {split} of {path.name} holds {len(crops)} crops, {count} were asked for")
    picked = np.linspace(0, len(crops) - 1, count).round().astype(int)  # spread over the band
    return [np.asarray(Image.fromarray(crops[i]).resize((side, side), Image.Resampling.BOX)) for i in picked]


def write_offline_folder(root: str | os.PathLike, counts: tuple[int, int, int] = OFFLINE_COUNTS) -> Path:
    """Write the course's offline photo folder, ``root/{train,val,test}/{face,not_face,texture}/*.png``.

    From scikit-image's wheel: ``lfw_subset.npy`` holds 100 face photos and 100 non-face photos (25 x 25 grey,
    from Labeled Faces in the Wild); each photo goes to ONE split. The ``texture`` class is cut from the brick,
    grass and gravel photos: train crops from the top half of each photo, validation from the next quarter, test
    from the bottom quarter, so no two splits share a pixel. Writing is skipped when ``root`` already holds the
    same folder (a ``.complete`` stamp records the counts).

    Returns:
        ``root``.
    """
    root = Path(root)
    stamp = root / ".complete"
    if stamp.is_file() and stamp.read_text() == repr(tuple(counts)):
        return root
    if root.exists():
        shutil.rmtree(root)
    sources = offline_sources()
    lfw = np.load(sources["lfw_subset"])  # (200, 25, 25) float in [0, 1]: 100 faces, then 100 non-faces
    if sum(counts) > 100:
        raise ValueError(f"the LFW subset holds 100 photos per class; counts {counts} ask for {sum(counts)}")
    side = lfw.shape[1]
    start = np.cumsum((0, *counts))
    for s, split in enumerate(SPLIT_NAMES):
        images = {
            "face": [lfw[i] for i in range(start[s], start[s + 1])],
            "not_face": [lfw[100 + i] for i in range(start[s], start[s + 1])],
            "texture": [],
        }
        per_photo = np.array_split(np.arange(counts[s]), len(OFFLINE_TEXTURES))
        for texture, share in zip(OFFLINE_TEXTURES, per_photo, strict=True):
            images["texture"] += [c / 255.0 for c in _texture_crops(sources[texture], s, len(share), side)]
        for cls, arrays in images.items():
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i, array in enumerate(arrays):
                pixels = (np.clip(array, 0, 1) * 255).round().astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{cls}_{i:03d}.png")
    stamp.write_text(repr(tuple(counts)))
    return root


def _download(url: str, dest: Path) -> None:
    with urllib.request.urlopen(url, timeout=60) as response, open(dest, "wb") as f:
        shutil.copyfileobj(response, f)


def _check_hymenoptera(folder: Path) -> None:
    for split in ("train", "val"):
        found = check_image_folder(folder / split, verify=False) if (folder / split).is_dir() else {}
        if sorted(found) != list(HYMENOPTERA_CLASSES) or min(len(v) for v in found.values()) < 50:
            sizes = {k: len(v) for k, v in found.items()}
            raise ImageFolderError(
                f"{folder / split} is not the hymenoptera data (expected at least 50 images in "
                f"each of {HYMENOPTERA_CLASSES}, found {sizes or 'no class folders'}). Delete "
                f"{folder} and fetch again."
            )


def fetch_hymenoptera(
    cache_dir: str | os.PathLike | None = None,
    downloader: Callable[[str, Path], None] | None = None,
    url: str = HYMENOPTERA_URL,
) -> Path:
    """The PyTorch tutorial's ants-and-bees folder, downloaded once into ``cache_dir`` and checked.

    Args:
        cache_dir: where to keep it (default: ``$TORCH_HOME/transferlab``, i.e. next to torch's own downloads).
        downloader: ``downloader(url, dest_file)`` (default: urllib); tests plant a fake one.
    Returns:
        the folder holding ``train/{ants,bees}`` and ``val/{ants,bees}`` (use it with :func:`load_splits`).
    Raises:
        OfflineError: the data is not in the cache and the network is not reachable (nothing is waited for).
        ImageFolderError: the download is not a zip, or it does not hold the expected folders.
    """
    import torch.hub

    cache = Path(cache_dir) if cache_dir is not None else Path(torch.hub.get_dir()).parent / "transferlab"
    folder = cache / "hymenoptera_data"
    if (folder / ".complete").is_file():
        return folder
    if downloader is None:
        if not network_available():
            raise OfflineError(
                f"the ants-and-bees data is not in {cache} and the network cannot be reached (or "
                "TRANSFERLAB_OFFLINE is set). Fix: go online once, or download "
                f"{url} yourself and unzip it into {cache}; or use the offline folder."
            )
        downloader = _download
    cache.mkdir(parents=True, exist_ok=True)
    archive = cache / "hymenoptera_data.zip"
    downloader(url, archive)
    if not zipfile.is_zipfile(archive):
        archive.unlink()
        raise ImageFolderError(f"the download of {url} is not a zip file; it was deleted. Try again later.")
    with zipfile.ZipFile(archive) as z:
        for name in z.namelist():  # refuse members that would land outside the cache
            if not (cache / name).resolve().is_relative_to(cache.resolve()):
                raise ImageFolderError(f"the archive member {name!r} points outside {cache}; refused.")
        z.extractall(cache)
    _check_hymenoptera(folder)
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    archive.unlink()
    (folder / ".complete").write_text(digest)
    return folder
