"""Real photos from scikit-image's wheel: RGB PIL images, clear errors for unknown names."""

import numpy as np
import pytest
from PIL import Image

from transferlab.photos import PHOTOS, load_photo, photo_path


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
    with pytest.raises(ValueError, match="no photo called 'cat'.*chelsea.*coffee"):
        load_photo("cat")
