"""Face images and photos from files for the device commands, under the one image policy.

Sizes are checked against :data:`nptface.core.image_policy.LIMITS` (the limits training, evaluation
and the demo page use too) from the header, before any pixel is decoded. A photo's EXIF
orientation is applied (a phone stores a portrait selfie as a landscape frame plus a rotation tag;
the page applies it too, with ``createImageBitmap``'s ``imageOrientation: "from-image"``); pixels
then go through :func:`nptface.core.preprocess.to_rgb_array`, the one preprocessing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from nptface.core.image_policy import LIMITS, ImageInputError, ImageLimits
from nptface.core.preprocess import UnsupportedImageModeError, to_rgb_array


def _upright(path: Path, limits: ImageLimits) -> Image.Image:
    """The decoded image at ``path``, turned upright by its EXIF orientation, in its own mode."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such image file")
    if path.stat().st_size > limits.max_bytes:
        raise ImageInputError(f"{path}: {path.stat().st_size} bytes; expected at most {limits.max_bytes} bytes")
    try:
        with Image.open(path) as image:
            limits.check(*image.size, str(path))  # from the header, before decoding the pixels
            image.load()
            return ImageOps.exif_transpose(image)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as error:
        raise ImageInputError(
            f"{path}: not a decodable image (PNG, JPEG, WebP, BMP, GIF, PGM, PPM): {error}"
        ) from error


def load_face(path: str | Path, size: int, limits: ImageLimits = LIMITS) -> np.ndarray:
    """The uint8 RGB ``(size, size, 3)`` crop a model sees for the aligned face image at ``path``."""
    path = Path(path)
    try:
        return to_rgb_array(_upright(path, limits), size)
    except UnsupportedImageModeError as error:
        raise ImageInputError(f"{path}: {error}") from error


def load_photo(path: str | Path, limits: ImageLimits = LIMITS) -> Image.Image:
    """The RGB photo at ``path``, upright by its EXIF orientation, at its own size."""
    path = Path(path)
    image = _upright(path, limits)
    try:
        return Image.fromarray(to_rgb_array(image, (image.height, image.width)))
    except UnsupportedImageModeError as error:
        raise ImageInputError(f"{path}: {error}") from error
