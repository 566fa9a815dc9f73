"""Which image files every path accepts: one size policy for training, evaluation, the CLI and the page.

An image far smaller than the model's input carries no face worth matching, and a huge one is
either a mistake or a decompression bomb. ImageFolder training and evaluation, ``nptface
verify/enroll/identify`` and the demo page (served these limits as ``/config.json``) refuse the
same files, by name, from the header alone, before any pixel is decoded.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


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
            raise ImageInputError(
                f"{where}: {width}x{height} px is too small for a face; "
                f"expected at least {self.min_side} px on each side"
            )
        if max(width, height) > self.max_side or width * height > self.max_pixels:
            raise ImageInputError(
                f"{where}: {width}x{height} px is too large; expected at most {self.max_side} px "
                f"on a side and {self.max_pixels / 1e6:.0f} megapixels"
            )


LIMITS = ImageLimits()
