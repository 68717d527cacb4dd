"""Real photos, offline: the sample photographs that ship inside scikit-image's wheel (``skimage/data/``).

scikit-image's package carries a few real photographs (most CC0 or public domain; see each function's docstring in
``skimage.data``): a cat, a cup of coffee, a cameraman, a rocket, a motorcycle, textures of brick, grass and
gravel, ... They are files in the installed package, so no download is needed (``skimage.data`` fetches the rest
of its data set from the network; this module never does).

Example:
    >>> image = load_photo("chelsea")
    >>> image.mode, image.size
    ('RGB', (451, 300))
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import TensorDataset

from transferlab.data import few_shot_indices  # re-exported: notebook 08 and the photo benchmarks draw with it

__all__ = [
    "LAYOUTS",
    "PHOTOS",
    "TEXTURES",
    "few_shot_indices",
    "load_photo",
    "patch_positions",
    "photo_patches",
    "photo_path",
]

# Real photographs in the wheel, name -> file (synthetic images such as `color`, `phantom`, `logo` are left out).
_FILES = {
    "astronaut": "astronaut.png",
    "brick": "brick.png",
    "camera": "camera.png",
    "cell": "cell.png",
    "chelsea": "chelsea.png",
    "clock_motion": "clock_motion.png",
    "coffee": "coffee.png",
    "coins": "coins.png",
    "grass": "grass.png",
    "gravel": "gravel.png",
    "hubble_deep_field": "hubble_deep_field.jpg",
    "ihc": "ihc.png",
    "moon": "moon.png",
    "motorcycle_left": "motorcycle_left.png",
    "motorcycle_right": "motorcycle_right.png",
    "page": "page.png",
    "retina": "retina.jpg",
    "rocket": "rocket.jpg",
    "text": "text.png",
}
PHOTOS: tuple[str, ...] = tuple(_FILES)
# The classes of the few-shot task: photos that look alike all over, so each half of a photo shows the same class.
# Brick, grass, gravel (CC0 textures), the moon's surface, a microscopy image of cells and an immunohistochemistry
# slide (``ihc``, colour in the wheel: made grey here like the others, so colour cannot give the class away).
TEXTURES: tuple[str, ...] = ("brick", "grass", "gravel", "moon", "cell", "ihc")


def photo_path(name: str) -> Path:
    """The file of photo ``name`` inside the installed scikit-image package.

    Raises:
        ValueError: ``name`` is not one of :data:`PHOTOS` (the message lists them).
        FileNotFoundError: scikit-image is not installed, or the file is missing from it.

    Example:
        >>> photo_path("coffee").name
        'coffee.png'
    """
    if name not in _FILES:
        raise ValueError(f"no photo called {name!r}; choose one of: {', '.join(PHOTOS)}.")
    spec = importlib.util.find_spec("skimage")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("the photos ship with scikit-image, which is not installed; pip install scikit-image")
    path = Path(spec.origin).parent / "data" / _FILES[name]
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing from the installed scikit-image; reinstall it: "
            "pip install --force-reinstall scikit-image"
        )
    return path


def load_photo(name: str) -> Image.Image:
    """Load photo ``name`` (one of :data:`PHOTOS`) as an RGB PIL image; grey photos get three equal channels.

    Example:
        >>> load_photo("camera").mode
        'RGB'
    """
    with Image.open(photo_path(name)) as image:
        return image.convert("RGB")


def _grey(name: str) -> Tensor:
    """Photo ``name`` as a (H, W) float tensor in [0, 1] (ITU-R 601 luma, PIL's ``convert("L")``)."""
    with Image.open(photo_path(name)) as image:
        return torch.from_numpy(np.array(image.convert("L"), dtype=np.float32) / 255.0)


LAYOUTS: tuple[str, ...] = ("checkerboard", "halves")


def patch_positions(
    name: str, split: str = "train", size: int = 64, per_class: int = 32, layout: str = "checkerboard"
) -> Tensor:
    """``(top, left)`` pixel corners of the ``per_class`` non-overlapping ``size`` x ``size`` patches of one split.

    The photo is tiled on a grid of ``size`` x ``size`` squares. ``layout="checkerboard"``: a tile whose row + column
    is even goes to train, odd to test, so both splits sample the whole photo (same distribution) and share no pixel;
    if a split holds more than ``per_class`` tiles, ``per_class`` of them evenly spread over its list are kept.
    ``layout="halves"``: train tiles from the left half, test tiles from the right half, the first ``per_class`` row
    by row (this leaks a shift wherever the two halves of a photo differ).

    Example:
        >>> patch_positions("brick", "test")[:3].tolist()  # row 0: columns 1, 3, 5
        [[0, 64], [0, 192], [0, 320]]
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    width, height = load_photo(name).size
    rows = torch.arange(height // size)
    if layout == "halves":
        half = width // 2
        cols = torch.arange(half // size) + (0 if split == "train" else half // size)
        grid = torch.cartesian_prod(rows, cols) * size
        if split == "test":
            grid[:, 1] += half - (half // size) * size  # the right half starts at half, not on the tile grid
        if len(grid) < per_class:
            raise ValueError(f"half of {name!r} holds only {len(grid)} patches of {size}x{size}; ask for fewer")
        return grid[:per_class]
    grid = torch.cartesian_prod(rows, torch.arange(width // size))
    grid = grid[(grid.sum(dim=1) % 2) == (0 if split == "train" else 1)]
    if len(grid) < per_class:
        raise ValueError(
            f"the {split} squares of {name!r} hold only {len(grid)} patches of {size}x{size}; ask for fewer"
        )
    keep = torch.linspace(0, len(grid) - 1, per_class).round().long()
    return grid[keep] * size


def photo_patches(
    split: str = "train",
    names: tuple[str, ...] = TEXTURES,
    size: int = 64,
    per_class: int = 32,
    layout: str = "checkerboard",
) -> TensorDataset:
    """Non-overlapping grey ``size`` x ``size`` patches of each photo: a few-shot task on real photos.

    Train and test patches never share a pixel. With ``layout="checkerboard"`` (default) they alternate like the
    squares of a chess board, so both come from the whole photo; ``layout="halves"`` takes train from the left half
    and test from the right half (see :func:`patch_positions`).

    Args:
        split: ``"train"`` or ``"test"``.
        names: the photos, one class each (label = position in ``names``).
        size: patch side in pixels.
        per_class: patches per photo.
        layout: ``"checkerboard"`` or ``"halves"``.
    Returns:
        ``TensorDataset(images, labels)``: images ``(N, 3, size, size)`` float in [0, 1] (grey copied to R, G, B),
        labels ``(N,)`` int64, ``per_class`` per class, in class order.

    Example:
        >>> images, labels = photo_patches("test").tensors
        >>> images.shape, labels.bincount().tolist()
        (torch.Size([192, 3, 64, 64]), [32, 32, 32, 32, 32, 32])
    """
    images, labels = [], []
    for label, name in enumerate(names):
        grey = _grey(name)
        corners = patch_positions(name, split, size, per_class, layout)
        images.append(torch.stack([grey[t : t + size, left : left + size] for t, left in corners.tolist()]))
        labels.append(torch.full((per_class,), label, dtype=torch.int64))
    return TensorDataset(torch.cat(images).unsqueeze(1).expand(-1, 3, -1, -1).contiguous(), torch.cat(labels))
