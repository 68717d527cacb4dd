"""The course's own offline source and target datasets (no download: everything comes from installed packages).

Recipe
------
Both tasks show one character in a 32x32 RGB *scene*; only what the character is differs.

* **Glyphs.** Every character first becomes an 8x8 map of "ink counts" in 0..16, exactly the format of
  scikit-learn's handwritten digits (a 32x32 binary bitmap cut into 4x4 blocks, each block's count of ink pixels).
  - Source glyphs: the 52 Latin letters ``A-Z a-z`` rendered with PIL from the TrueType fonts that ship inside
    matplotlib (``mpl-data/fonts/ttf``: DejaVu Sans/Serif/Mono with their bold and oblique faces, STIX, Computer
    Modern), each rendering jittered (rotation, shear, aspect ratio, stroke width), cropped to its bounding box,
    fitted into 32x32, binarised and block-counted. Printed letters.
  - Target glyphs: the 1,797 real handwritten digits of :func:`sklearn.datasets.load_digits`. Handwritten digits.
* **Scenes.** A glyph is upsampled to a random size and position, inked in a colour over a background made of a
  colour gradient plus pixel noise, with a few clutter strokes behind it. ``difficulty`` in [0, 1] is one knob that
  moves every nuisance from easy (big centred white glyph on black, no noise or clutter) to hard (small, shifted,
  rotated, coloured, noisy, cluttered); pretraining ramps it up as a curriculum.
  - ``palette="any"`` (source): arbitrary ink and background colours with a minimum contrast.
  - ``palette="paper"`` (target): dark ink on light, tinted paper.
* **Source task** (``source_dataset``): 52-way letter classification. Train and test use different renderings
  (jitter draws) and different scenes; the train set can be regenerated without limit (``source_batch``).
* **Target task** (``target_dataset``): 10-way digit classification with few labels. A FIXED held-out test set of
  50 digit images per class (two scenes each, 1,000 images) is set aside once; a training set takes ``k`` images
  per class (chosen by ``seed``) only from the remaining ~130 per class, so no test digit is ever trained on.

Gaps the course talks about: the *domain* gap is printed vs handwritten strokes and colourful vs paper-like scenes;
the *task* gap is letters vs digits (different label spaces).

Example:
    >>> test = target_dataset("test")
    >>> image, label = test[0]
    >>> image.shape, image.dtype, TARGET_CLASSES[label] in TARGET_CLASSES
    (torch.Size([3, 32, 32]), torch.float32, True)
"""

from __future__ import annotations

import importlib.util
import math
import os
import string
from collections.abc import Callable, Sequence
from functools import cache, lru_cache

import matplotlib
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor
from torch.nn import functional as F
from torch.utils.data import Dataset

__all__ = [
    "DIGIT_LIKE_LETTERS",
    "IMAGE_SIZE",
    "SOURCE_CLASSES",
    "SOURCE_FONTS",
    "TARGET_CLASSES",
    "TARGET_DIFFICULTY",
    "TARGET_PALETTE",
    "SceneDataset",
    "few_shot_indices",
    "render_scenes",
    "source_batch",
    "source_dataset",
    "source_glyphs",
    "target_dataset",
    "target_split_indices",
]

SOURCE_CLASSES: tuple[str, ...] = tuple(string.ascii_uppercase + string.ascii_lowercase)
TARGET_CLASSES: tuple[str, ...] = tuple(string.digits)
# Letters a learner may suspect of being digits in disguise; the benchmark's ablation drops them from the source.
DIGIT_LIKE_LETTERS: tuple[str, ...] = ("O", "l", "Z", "S", "b", "B", "g")
SOURCE_FONTS: tuple[str, ...] = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSans-BoldOblique.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf",
    "DejaVuSansMono-Oblique.ttf",
    "DejaVuSansMono-BoldOblique.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf",
    "DejaVuSerif-BoldItalic.ttf",
    "STIXGeneral.ttf",
    "STIXGeneralBol.ttf",
    "STIXGeneralItalic.ttf",
    "STIXGeneralBolIta.ttf",
    "cmr10.ttf",
    "cmss10.ttf",
    "cmtt10.ttf",
    "cmti10.ttf",
    "cmb10.ttf",
)
IMAGE_SIZE = 32
TARGET_DIFFICULTY = 0.6  # nuisance level of the target scenes (see the benchmark for how it was chosen)
TARGET_PALETTE = "paper"
SOURCE_TEST_PER_CLASS = 30
TARGET_TEST_PER_CLASS = 50  # digit images per class held out for testing, never trained on
TARGET_TEST_SCENES = 2  # scenes per held-out digit image
_SPLIT_SEED = 20_14  # fixes which digit images are held out; never change it (the test set would change)
_SOURCE_TEST_SEED = 1_000_003


# ----------------------------------------------------------------------------------------------------------- glyphs
def _font_dir() -> str:
    return os.path.join(matplotlib.get_data_path(), "fonts", "ttf")


@cache
def _font(name: str) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(os.path.join(_font_dir(), name), 40)


def _block_counts(ink: np.ndarray) -> np.ndarray:
    """32x32 boolean bitmap -> 8x8 counts of ink pixels per 4x4 block (0..16), as sklearn's digits were made."""
    return ink.reshape(8, 4, 8, 4).sum(axis=(1, 3)).astype(np.float32)


def _render_glyph(char: str, font: str, rotate: float, shear: float, aspect: float, stroke: int) -> np.ndarray:
    """Render one jittered character and degrade it to an 8x8 count map in 0..16."""
    canvas = Image.new("L", (96, 96), 0)
    ImageDraw.Draw(canvas).text(
        (48, 48), char, fill=255, font=_font(font), anchor="mm", stroke_width=stroke, stroke_fill=255
    )
    # Inverse affine map (output -> input) about the centre: rotation, shear and horizontal stretch.
    c, s = math.cos(math.radians(rotate)), math.sin(math.radians(rotate))
    a, b, d, e = c / aspect, (s + shear * c) / aspect, -s, c - shear * s
    data = (a, b, 48 - 48 * a - 48 * b, d, e, 48 - 48 * d - 48 * e)
    canvas = canvas.transform((96, 96), Image.Transform.AFFINE, data, resample=Image.Resampling.BILINEAR)
    box = canvas.getbbox()
    if box is None:
        raise RuntimeError(f"font {font!r} rendered {char!r} as an empty image; remove it from SOURCE_FONTS")
    crop = canvas.crop(box)
    scale = 32 / max(crop.size)  # fit the longer side into 32 pixels, keep the aspect ratio (NIST-style)
    w, h = max(1, round(crop.width * scale)), max(1, round(crop.height * scale))
    bitmap = Image.new("L", (32, 32), 0)
    bitmap.paste(crop.resize((w, h), Image.Resampling.BILINEAR), ((32 - w) // 2, (32 - h) // 2))
    return _block_counts(np.asarray(bitmap) > 96)


@lru_cache(maxsize=8)
def source_glyphs(split: str = "train", per_class: int = 60, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Rendered letter glyphs: ``(glyphs [N, 8, 8] in [0, 1], labels [N])``, ``per_class`` renderings per letter.

    Each rendering draws a font and jitter (rotation +-12 deg, shear +-0.3, aspect 0.75-1.3, stroke 0-2 px) from a
    generator seeded by ``split`` and ``seed``, so train and test renderings differ. Cached in memory.
    """
    rng = np.random.default_rng([seed, {"train": 0, "test": 1}[split]])
    glyphs, labels = [], []
    for label, char in enumerate(SOURCE_CLASSES):
        for _ in range(per_class):
            font = SOURCE_FONTS[rng.integers(len(SOURCE_FONTS))]
            jitter = rng.uniform(-12, 12), rng.uniform(-0.3, 0.3), rng.uniform(0.75, 1.3), int(rng.integers(0, 3))
            glyphs.append(_render_glyph(char, font, *jitter))
            labels.append(label)
    return torch.from_numpy(np.stack(glyphs) / 16.0).float(), torch.tensor(labels)


@lru_cache(maxsize=1)
def _digits() -> tuple[Tensor, Tensor]:
    """sklearn's 1,797 digits as ([N, 8, 8] in [0, 1], labels), the same arrays as ``load_digits()``."""
    # load_digits() reads this file; reading it directly skips importing sklearn.datasets (~1.5 s).
    spec = importlib.util.find_spec("sklearn")
    locations = spec.submodule_search_locations if spec else None
    path = os.path.join(locations[0], "datasets", "data", "digits.csv.gz") if locations else ""
    if os.path.exists(path):
        table = np.loadtxt(path, delimiter=",")
        images, labels = table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)
    else:
        from sklearn.datasets import load_digits

        images, labels = load_digits(return_X_y=True)
        images = images.reshape(-1, 8, 8)
    return torch.from_numpy(images / 16.0).float(), torch.from_numpy(labels).long()


# ----------------------------------------------------------------------------------------------------------- scenes
def _hsv_to_rgb(h: Tensor, s: Tensor, v: Tensor) -> Tensor:
    """Vectorised HSV -> RGB for [N] tensors in [0, 1]; returns [N, 3]."""
    k = (torch.tensor([5.0, 3.0, 1.0]) + h[:, None] * 6) % 6
    return v[:, None] - v[:, None] * s[:, None] * torch.clamp(torch.minimum(k, 4 - k), 0, 1)


def _colours(n: int, palette: str, g: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """Ink colour, and the two background gradient colours, each [N, 3]."""
    u = lambda *shape: torch.rand(*shape, generator=g)  # noqa: E731
    if palette == "any":
        ink, bg = u(n, 3), u(n, 3)
        low_contrast = (ink.mean(1) - bg.mean(1)).abs() < 0.35
        bg[low_contrast] = 1 - ink[low_contrast]  # guarantee the glyph stays visible
        bg2 = (bg + 0.3 * (u(n, 3) - 0.5)).clamp(0, 1)
    elif palette == "paper":
        ink = _hsv_to_rgb(u(n), u(n), 0.35 * u(n))
        bg = _hsv_to_rgb(u(n), 0.35 * u(n), 0.75 + 0.25 * u(n))
        bg2 = _hsv_to_rgb(u(n), 0.35 * u(n), 0.75 + 0.25 * u(n))
    elif palette == "mono":
        ink, bg, bg2 = torch.ones(n, 3), torch.zeros(n, 3), torch.zeros(n, 3)
    else:
        raise ValueError(f"unknown palette {palette!r}; use 'any', 'paper' or 'mono'")
    return ink, bg, bg2


def _strokes(n: int, count: int, g: torch.Generator) -> Tensor:
    """``count`` random line segments per image, as soft masks [N, 1, 32, 32] in [0, 1]."""
    if count == 0:
        return torch.zeros(n, 1, IMAGE_SIZE, IMAGE_SIZE)
    p0, p1 = torch.rand(n, count, 1, 2, generator=g) * 32, torch.rand(n, count, 1, 2, generator=g) * 32
    ys, xs = torch.meshgrid(torch.arange(32.0) + 0.5, torch.arange(32.0) + 0.5, indexing="ij")
    pix = torch.stack([xs, ys], -1).reshape(1, 1, -1, 2)
    seg = p1 - p0
    t = (((pix - p0) * seg).sum(-1) / (seg * seg).sum(-1).clamp_min(1e-6)).clamp(0, 1)
    dist = (pix - p0 - t[..., None] * seg).norm(dim=-1)
    width = 0.6 + 0.8 * torch.rand(n, count, 1, generator=g)
    mask = (1 - (dist - width).clamp_min(0)).clamp(0, 1).amax(1)
    return mask.reshape(n, 1, IMAGE_SIZE, IMAGE_SIZE)


def render_scenes(glyphs: Tensor, difficulty: float | Tensor, palette: str, seed: int) -> Tensor:
    """Paste 8x8 glyph maps in [0, 1] into 32x32 RGB scenes, deterministically from ``seed``.

    Args:
        glyphs: [N, 8, 8] ink maps in [0, 1].
        difficulty: 0 (big, centred, white on black, clean) .. 1 (full nuisance); a float or an [N] tensor.
        palette: ``"any"``, ``"paper"`` or ``"mono"``.
        seed: seeds every random draw (size, position, rotation, colours, noise, clutter).

    Returns:
        [N, 3, 32, 32] float images in [0, 1].
    """
    n = glyphs.shape[0]
    g = torch.Generator().manual_seed(seed)
    d = torch.as_tensor(difficulty, dtype=torch.float32).expand(n).reshape(n, 1)
    u = lambda *shape: torch.rand(*shape, generator=g)  # noqa: E731
    # Geometry: the glyph covers a fraction `size` of the frame, shifted within the room left, rotated.
    size = 0.95 - d * 0.45 * u(n, 1)  # 0.95 at d=0, 0.5..0.95 at d=1
    shift = (1 - size) * d * (2 * u(n, 2) - 1)
    angle = d * math.radians(15) * (2 * u(n, 1) - 1)
    cos, sin = torch.cos(angle) / size, torch.sin(angle) / size
    theta = torch.stack([torch.cat([cos, -sin], 1), torch.cat([sin, cos], 1)], 1)  # [N, 2, 2] output -> glyph
    theta = torch.cat([theta, -(theta @ shift[..., None])], 2)
    grid = F.affine_grid(theta, [n, 1, IMAGE_SIZE, IMAGE_SIZE], align_corners=False)
    mask = F.grid_sample(glyphs[:, None].float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    # Colours: each scene is white-on-black with probability 1 - 2d (so only while d < 0.5), else the palette.
    # (Blending the colours instead would pass through grey-on-grey, with no contrast at all.)
    ink, bg, bg2 = _colours(n, palette, g)
    mono = u(n, 1) >= 2 * d
    ink, bg, bg2 = torch.where(mono, 1.0, ink), torch.where(mono, 0.0, bg), torch.where(mono, 0.0, bg2)
    direction = 2 * math.pi * u(n)
    ramp = torch.linspace(-1, 1, IMAGE_SIZE)
    along = (
        torch.cos(direction)[:, None, None] * ramp[None, None, :]
        + torch.sin(direction)[:, None, None] * ramp[None, :, None]
    )
    along = ((along + 1) / 2)[:, None]  # [N, 1, 32, 32] in [0, 1]
    image = bg[..., None, None] + along * (bg2 - bg)[..., None, None]
    # Clutter strokes behind the glyph, in a colour between ink and background, up to 3 at d=1.
    clutter = _strokes(n, 3, g) * (u(n, 3) < d).float().amax(1, keepdim=True)[..., None, None]
    clutter = clutter * (u(n, 1, 1, 1) * 0.6 + 0.2)
    image = image + clutter * (ink[..., None, None] - image) * d[..., None, None]
    image = image + mask * (ink[..., None, None] - image)
    image = image + 0.08 * d[..., None, None] * torch.randn(n, 3, IMAGE_SIZE, IMAGE_SIZE, generator=g)
    return image.clamp(0, 1)


# --------------------------------------------------------------------------------------------------------- datasets
class SceneDataset(Dataset):
    """Images [N, 3, 32, 32] and labels [N] held in memory; ``transform`` is applied per image on access.

    Not ``torch.utils.data.TensorDataset`` (which :func:`transferlab.features.extract_features` returns): a scene
    dataset also knows its ``classes`` and, per sample, the ``source_index`` of the glyph or digit it shows.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        classes: Sequence[str],
        transform: Callable | None = None,
        source_index: Tensor | None = None,
    ) -> None:
        self.images, self.labels, self.classes, self.transform = images, labels, tuple(classes), transform
        self.source_index = source_index  # index of the underlying glyph/digit image of every sample

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        image = self.images[i]
        return (self.transform(image) if self.transform else image), int(self.labels[i])


def source_batch(
    n: int,
    difficulty: float,
    seed: int,
    classes: Sequence[str] = SOURCE_CLASSES,
    glyphs: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """A fresh batch of ``n`` source scenes from the train renderings: ``(images [n,3,32,32], labels [n])``.

    ``classes`` restricts the letters (labels are then indices into ``classes``). Used by pretraining, which draws
    a new batch every step, so the source is effectively unlimited.
    """
    all_glyphs, all_labels = glyphs or source_glyphs("train")
    keep = _class_subset(classes, all_labels)
    g = torch.Generator().manual_seed(seed)
    pick = keep[torch.randint(len(keep), (n,), generator=g)]
    labels = _relabel(all_labels[pick], classes)
    return render_scenes(all_glyphs[pick], difficulty, "any", seed + 1), labels


def _class_subset(classes: Sequence[str], labels: Tensor) -> Tensor:
    unknown = set(classes) - set(SOURCE_CLASSES)
    if unknown:
        raise ValueError(f"unknown source classes {sorted(unknown)}; pick from SOURCE_CLASSES (letters A-Z, a-z)")
    wanted = torch.tensor([SOURCE_CLASSES.index(c) for c in classes])
    return torch.nonzero(torch.isin(labels, wanted)).flatten()


def _relabel(labels: Tensor, classes: Sequence[str]) -> Tensor:
    mapping = torch.full((len(SOURCE_CLASSES),), -1, dtype=torch.long)
    mapping[torch.tensor([SOURCE_CLASSES.index(c) for c in classes])] = torch.arange(len(classes))
    return mapping[labels]


def source_dataset(
    split: str = "train",
    size: int | None = None,
    difficulty: float = 1.0,
    seed: int = 0,
    classes: Sequence[str] = SOURCE_CLASSES,
    transform: Callable | None = None,
) -> SceneDataset:
    """The source task: 52-way classification of printed letters in 32x32 RGB scenes.

    Args:
        split: ``"train"`` (renderings and scenes drawn from ``seed``) or ``"test"`` (a fixed set: 30 held-out
            renderings per letter at full difficulty; ``size``, ``difficulty`` and ``seed`` must stay default).
        size: number of train images (default 100 per class).
        difficulty: nuisance level in [0, 1] of the train scenes.
        seed: picks the train glyphs and scenes.
        classes: a subset of ``SOURCE_CLASSES`` (labels become indices into it).
        transform: applied to every image tensor on access (e.g. ``TinyResNet_Weights.DEFAULT.transforms()``).

    Returns:
        A dataset of ``(float tensor [3, 32, 32] in [0, 1], int label)``.

    Example:
        >>> len(source_dataset("test")), source_dataset("test").classes[:3]
        (1560, ('A', 'B', 'C'))
    """
    if split == "train":
        images, labels = source_batch(size or 100 * len(classes), difficulty, seed, classes)
        return SceneDataset(images, labels, classes, transform)
    if split != "test":
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if size is not None or difficulty != 1.0 or seed != 0:
        raise ValueError("the source test set is fixed: leave size, difficulty and seed at their defaults")
    _glyphs, labels = source_glyphs("test", SOURCE_TEST_PER_CLASS)
    keep = _class_subset(classes, labels)
    images = _source_test_images()[keep]
    return SceneDataset(images, _relabel(labels[keep], classes), classes, transform, keep)


@lru_cache(maxsize=1)
def _source_test_images() -> Tensor:
    glyphs, _ = source_glyphs("test", SOURCE_TEST_PER_CLASS)
    return render_scenes(glyphs, 1.0, "any", _SOURCE_TEST_SEED)


@lru_cache(maxsize=1)
def target_split_indices() -> tuple[Tensor, Tensor]:
    """Indices into ``load_digits()`` of the fixed split: ``(train_pool, test)``; they never overlap.

    The test indices are ``TARGET_TEST_PER_CLASS`` images per class drawn once with a fixed seed.
    """
    _, labels = _digits()
    rng = np.random.default_rng(_SPLIT_SEED)
    test = np.concatenate(
        [
            rng.permutation(np.flatnonzero(labels.numpy() == c))[:TARGET_TEST_PER_CLASS]
            for c in range(len(TARGET_CLASSES))
        ]
    )
    pool = np.setdiff1d(np.arange(len(labels)), test)
    return torch.from_numpy(pool), torch.from_numpy(np.sort(test))


def few_shot_indices(labels: Tensor, k: int | None, seed: int) -> Tensor:
    """Indices of ``k`` samples per class of ``labels`` (all of them, shuffled, if ``k`` is None), drawn without
    replacement by ``seed``, class by class: the course's one k-per-class sampler.

    Example:
        >>> few_shot_indices(torch.tensor([0, 0, 1, 1, 1]), k=1, seed=0).shape
        torch.Size([2])
    """
    g = torch.Generator().manual_seed(seed)
    classes = labels.unique().tolist()
    counts = {c: int((labels == c).sum()) for c in classes}
    chosen = []
    for c in classes:
        members = torch.nonzero(labels == c).flatten()
        if k is not None and not 1 <= k <= len(members):
            raise ValueError(
                f"k={k} per class is not available: class {c} has {len(members)} samples; "
                f"use 1 <= k <= {min(counts.values())} or k=None"
            )
        chosen.append(members[torch.randperm(len(members), generator=g)[:k]])
    return torch.cat(chosen)


def target_dataset(
    split: str = "train",
    k: int | None = None,
    seed: int = 0,
    transform: Callable | None = None,
    difficulty: float = TARGET_DIFFICULTY,
    palette: str = TARGET_PALETTE,
) -> SceneDataset:
    """The target task: 10-way classification of real handwritten digits in 32x32 RGB scenes.

    Args:
        split: ``"train"`` (``k`` images per class from the training pool) or ``"test"`` (the fixed held-out set:
            50 digit images per class that no training set ever contains, two scenes each).
        k: labelled images per class (``None``: the whole pool, about 130 per class). Train only.
        seed: picks the ``k`` images and their scenes. Train only.
        transform: applied to every image tensor on access.
        difficulty, palette: scene settings; keep the defaults unless an experiment studies them.

    Returns:
        A dataset of ``(float tensor [3, 32, 32] in [0, 1], int label)``; ``.source_index`` holds the index of
        each sample's digit image in ``sklearn.datasets.load_digits()``.

    Example:
        >>> train = target_dataset("train", k=5, seed=0)
        >>> len(train), sorted(set(train.labels.tolist())) == list(range(10))
        (50, True)
    """
    digits, labels = _digits()
    pool, test = target_split_indices()
    if split == "train":
        index = pool[few_shot_indices(labels[pool], k, seed)]
        scene_seed = 7919 * seed + 1
    elif split == "test":
        if k is not None or seed != 0:
            raise ValueError("the target test set is fixed: leave k=None and seed=0 (k and seed pick training images)")
        index, scene_seed = test.repeat(TARGET_TEST_SCENES), 424_242
    else:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    images = render_scenes(digits[index], difficulty, palette, scene_seed)
    return SceneDataset(images, labels[index], TARGET_CLASSES, transform, index)
