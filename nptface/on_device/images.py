"""Face images from files, with the limits the demo page enforces too.

An image far smaller than the model's input carries no face worth matching, and a huge one is
either a mistake or a decompression bomb; both are refused by name before any pixel is used.
The limits are served to the page (``/config.json``) so the browser and the CLI refuse the same
files. Pixels then go through :func:`nptface.core.preprocess.to_rgb_array`, the one preprocessing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from nptface.core.preprocess import to_rgb_array


class ImageInputError(ValueError):
    """A file that is not a decodable image, or one outside the size limits."""


@dataclass(frozen=True)
class ImageLimits:
    min_side: int = 16
    max_side: int = 8192
    max_pixels: int = 40_000_000
    max_bytes: int = 50 * 1024 * 1024

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    def check(self, width: int, height: int, where: str) -> None:
        if min(width, height) < self.min_side:
            raise ImageInputError(f"{where}: {width}x{height} px is too small for a face; "
                                  f"expected at least {self.min_side} px on each side")
        if max(width, height) > self.max_side or width * height > self.max_pixels:
            raise ImageInputError(f"{where}: {width}x{height} px is too large; expected at most {self.max_side} px "
                                  f"on a side and {self.max_pixels / 1e6:.0f} megapixels")


LIMITS = ImageLimits()


def load_face(path: str | Path, size: int, limits: ImageLimits = LIMITS) -> np.ndarray:
    """The uint8 RGB ``(size, size, 3)`` crop a model sees for the aligned face image at ``path``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such image file")
    if path.stat().st_size > limits.max_bytes:
        raise ImageInputError(f"{path}: {path.stat().st_size} bytes; expected at most {limits.max_bytes} bytes")
    try:
        with Image.open(path) as image:
            limits.check(*image.size, str(path))  # from the header, before decoding the pixels
            image.load()
            return to_rgb_array(image, size)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as error:
        raise ImageInputError(f"{path}: not a decodable image (PNG, JPEG, WebP, BMP, GIF): {error}") from error
