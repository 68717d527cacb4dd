"""Real photos from scikit-image's wheel: RGB PIL images, clear errors for unknown names."""

import numpy as np
import pytest
import torch
from PIL import Image

from transferlab.photos import (
    PHOTOS,
    TEXTURES,
    few_shot_indices,
    load_photo,
    patch_positions,
    photo_patches,
    photo_path,
)


@pytest.mark.parametrize("name", PHOTOS)
def test_every_photo_loads_as_rgb(name):
    image = load_photo(name)
    assert isinstance(image, Image.Image) and image.mode == "RGB"
    assert min(image.size) >= 100


def test_grey_photo_has_equal_channels():
    pixels = np.asarray(load_photo("camera"))
    assert pixels.shape == (512, 512, 3)
    assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()
    assert np.array_equal(pixels[..., 0], np.asarray(Image.open(photo_path("camera"))))


def test_colour_photo_matches_the_file():
    assert np.array_equal(np.asarray(load_photo("chelsea")), np.asarray(Image.open(photo_path("chelsea"))))


def test_unknown_name_lists_the_choices():
    with pytest.raises(ValueError, match=r"no photo called 'cat'.*chelsea.*coffee"):
        load_photo("cat")


def test_patches_come_from_disjoint_halves():
    train_x, train_y = photo_patches("train", layout="halves").tensors
    test_x, test_y = photo_patches("test", layout="halves").tensors
    assert train_x.shape == test_x.shape == (32 * len(TEXTURES), 3, 64, 64)
    assert train_y.bincount().tolist() == test_y.bincount().tolist() == [32] * len(TEXTURES)
    assert 0.0 <= float(train_x.min()) and float(train_x.max()) <= 1.0
    # plain slicing as the reference: brick's first train patch is the top-left 64x64 of the left half,
    # its first test patch the top-left 64x64 of the right half
    brick = np.asarray(load_photo("brick").convert("L"), dtype=np.float32) / 255
    half = brick.shape[1] // 2
    assert np.array_equal(train_x[0, 0].numpy(), brick[:64, :64])
    assert np.array_equal(test_x[0, 0].numpy(), brick[:64, half : half + 64])
    assert np.array_equal(train_x[1, 0].numpy(), brick[:64, 64:128])  # row by row, no overlap
    assert torch.equal(train_x[:, 0], train_x[:, 2])  # grey in all three channels


def test_halves_of_a_photo_wider_than_the_grid_start_at_the_middle():
    cell = np.asarray(load_photo("cell").convert("L"), dtype=np.float32) / 255  # 660 x 550: half = 275
    test_x = photo_patches("test", names=("cell",), layout="halves").tensors[0]
    assert np.array_equal(test_x[0, 0].numpy(), cell[:64, 275:339])


@pytest.mark.parametrize("name", TEXTURES)
def test_checkerboard_splits_share_no_pixel_and_cover_the_photo(name):
    width, height = load_photo(name).size
    owner = np.zeros((height, width), dtype=int)  # 1: train pixel, 2: test pixel
    for mark, split in ((1, "train"), (2, "test")):
        corners = patch_positions(name, split)
        assert len(corners) == 32 and len({tuple(c) for c in corners.tolist()}) == 32
        for top, left in corners.tolist():
            assert (top // 64 + left // 64) % 2 == mark - 1  # the colour of its square
            assert (owner[top : top + 64, left : left + 64] == 0).all()  # no pixel used twice
            owner[top : top + 64, left : left + 64] = mark
    # both splits reach the top and bottom quarters and the left and right halves of the photo
    for mark in (1, 2):
        rows, cols = np.nonzero(owner == mark)
        assert rows.min() < height // 4 and rows.max() > 3 * height // 4
        assert cols.min() < width // 4 and cols.max() > 3 * width // 4


def test_checkerboard_patches_are_the_photo_at_their_corners():
    train_x, train_y = photo_patches("train").tensors
    assert train_x.shape == (32 * len(TEXTURES), 3, 64, 64) and train_y.bincount().tolist() == [32] * len(TEXTURES)
    brick = np.asarray(load_photo("brick").convert("L"), dtype=np.float32) / 255
    assert np.array_equal(train_x[0, 0].numpy(), brick[:64, :64])  # square (0, 0) is train
    assert np.array_equal(train_x[1, 0].numpy(), brick[:64, 128:192])  # (0, 1) is test, (0, 2) train
    test_x = photo_patches("test").tensors[0]
    assert np.array_equal(test_x[0, 0].numpy(), brick[:64, 64:128])


def test_patches_bad_input():
    with pytest.raises(ValueError, match="split must be"):
        photo_patches("val")
    with pytest.raises(ValueError, match="layout must be"):
        photo_patches("train", layout="stripes")
    with pytest.raises(ValueError, match="only 32 patches"):
        photo_patches("train", names=("brick",), per_class=33, layout="halves")
    with pytest.raises(ValueError, match="hold only 32 patches"):
        photo_patches("train", names=("brick",), per_class=33)


def test_few_shot_indices():
    labels = torch.tensor([0] * 5 + [1] * 4 + [2] * 6)
    pick = few_shot_indices(labels, k=3, seed=1)
    assert labels[pick].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2] and len(set(pick.tolist())) == 9
    assert torch.equal(pick, few_shot_indices(labels, k=3, seed=1))
    assert not torch.equal(pick, few_shot_indices(labels, k=3, seed=2))
    with pytest.raises(ValueError, match="k=5 per class is not available: class 1 has 4"):
        few_shot_indices(labels, k=5, seed=0)
