"""The course's source and target datasets: the split, k per class, determinism, shapes and ranges."""

import pytest
import torch

from transferlab.data import (
    DIGIT_LIKE_LETTERS,
    SOURCE_CLASSES,
    TARGET_CLASSES,
    _digits,
    render_scenes,
    source_batch,
    source_dataset,
    target_dataset,
    target_split_indices,
)


@pytest.fixture(scope="module")
def test_set():
    return target_dataset("test")


def test_classes():
    assert len(SOURCE_CLASSES) == 52 and len(set(SOURCE_CLASSES)) == 52
    assert TARGET_CLASSES == tuple("0123456789")
    assert not set(SOURCE_CLASSES) & set(TARGET_CLASSES)
    assert set(DIGIT_LIKE_LETTERS) <= set(SOURCE_CLASSES)


def test_split_indices_are_disjoint_and_cover_the_digits():
    pool, test = target_split_indices()
    assert not set(pool.tolist()) & set(test.tolist())
    assert len(pool) + len(test) == len(_digits()[1])


@pytest.mark.parametrize("k", [1, 5, 20, None])
def test_no_test_digit_in_any_training_subset(test_set, k):
    digits, _ = _digits()
    test_pixels = {tuple(x.flatten().tolist()) for x in digits[test_set.source_index]}
    for seed in range(3):
        train = target_dataset("train", k=k, seed=seed)
        assert not set(train.source_index.tolist()) & set(test_set.source_index.tolist())
        # pixel content too: sklearn's digits hold a few exact duplicates, none may straddle the split
        train_pixels = {tuple(x.flatten().tolist()) for x in digits[train.source_index]}
        assert not train_pixels & test_pixels


@pytest.mark.parametrize("k", [1, 5, 10])
def test_exactly_k_per_class(k):
    train = target_dataset("train", k=k, seed=3)
    assert torch.equal(torch.bincount(train.labels, minlength=10), torch.full((10,), k))
    assert len(set(train.source_index.tolist())) == 10 * k  # k distinct images, not repeats


def test_all_labels_and_k_too_large():
    pool, _ = target_split_indices()
    assert len(target_dataset("train", k=None)) == len(pool)
    with pytest.raises(ValueError, match="k=500"):
        target_dataset("train", k=500)


def test_seed_picks_different_images_deterministically():
    a, b, c = (target_dataset("train", k=5, seed=s) for s in (0, 0, 1))
    assert torch.equal(a.images, b.images) and torch.equal(a.source_index, b.source_index)
    assert not torch.equal(a.source_index, c.source_index)


def test_test_set_is_fixed_and_balanced(test_set):
    again = target_dataset("test")
    assert torch.equal(test_set.images, again.images)
    assert torch.equal(torch.bincount(test_set.labels), torch.full((10,), len(test_set) // 10))
    with pytest.raises(ValueError, match="fixed"):
        target_dataset("test", k=5)


def test_shapes_ranges_and_labels(test_set):
    image, label = test_set[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert 0.0 <= float(test_set.images.min()) and float(test_set.images.max()) <= 1.0
    assert isinstance(label, int) and 0 <= label < 10


def test_transform_is_applied():
    train = target_dataset("train", k=1, transform=lambda x: x * 0 - 1)
    assert torch.all(train[0][0] == -1)


def test_source_test_set():
    test = source_dataset("test")
    assert len(test) == 52 * 30
    assert torch.equal(torch.bincount(test.labels), torch.full((52,), 30))
    assert test.images.shape[1:] == (3, 32, 32) and 0 <= test.images.min() and test.images.max() <= 1


def test_source_subset_relabels():
    keep = [c for c in SOURCE_CLASSES if c not in DIGIT_LIKE_LETTERS]
    test = source_dataset("test", classes=keep)
    assert test.classes == tuple(keep) and int(test.labels.max()) == len(keep) - 1
    with pytest.raises(ValueError, match="unknown source classes"):
        source_dataset("test", classes=["A", "7"])


def test_source_batch_deterministic_and_difficulty_zero_is_white_on_black():
    x1, y1 = source_batch(16, 0.0, seed=5)
    x2, y2 = source_batch(16, 0.0, seed=5)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    # at difficulty 0 every scene is a white glyph on a black background: grey levels, black somewhere
    assert torch.equal(x1[:, 0], x1[:, 1]) and torch.equal(x1[:, 1], x1[:, 2])
    assert float(x1.amin(dim=(1, 2, 3)).max()) == 0.0
    x3, _ = source_batch(16, 1.0, seed=5)
    assert float(x3[:, :, 0, 0].std()) > 0.05  # coloured, noisy backgrounds


def test_render_scenes_puts_ink_where_the_glyph_is():
    glyph = torch.zeros(1, 8, 8)
    glyph[0, :, 3:5] = 1.0  # a vertical bar in the middle
    scene = render_scenes(glyph, 0.0, "mono", seed=0)[0, 0]
    assert scene[:, 14:18].mean() > 0.5 and scene[:, :4].max() == 0.0
