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

from PIL import Image

__all__ = ["PHOTOS", "load_photo", "photo_path"]

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
            f"{path} is missing from the installed scikit-image; reinstall it: pip install --force-reinstall scikit-image"
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
