"""Specification of nptface.core.preprocess: every Pillow mode it accepts reads as the same face."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from nptface.core.preprocess import UnsupportedImageModeError, to_rgb_array

EIGHT_BIT_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "RGBa", "CMYK", "YCbCr", "LAB", "HSV")


def _grey_ramp() -> np.ndarray:
    return np.tile(np.arange(0, 256, 16, dtype=np.uint8), (16, 1))


@pytest.mark.parametrize("mode", EIGHT_BIT_MODES)
def test_every_eight_bit_mode_reads_as_pillows_rgb_conversion(mode):
    face = Image.fromarray(np.stack([_grey_ramp(), _grey_ramp()[::-1], np.full((16, 16), 90, np.uint8)], -1))
    image = face.convert(mode)
    assert np.array_equal(to_rgb_array(image, 16), np.asarray(image.convert("RGB")))


@pytest.mark.parametrize(
    "mode,dtype", [("I;16", "<u2"), ("I;16L", "<u2"), ("I;16B", ">u2"), ("I;16N", "=u2"), ("I", "=i4")]
)
def test_sixteen_bit_grey_is_scaled_to_eight_bits_not_clipped_to_white(mode, dtype):
    grey = _grey_ramp()
    sixteen = grey.astype(dtype) * 257  # 255 -> 65535: the same picture in 16 bits
    image = Image.frombytes(mode, (16, 16), sixteen.astype(dtype).tobytes())
    rgb = to_rgb_array(image, 16)
    assert np.array_equal(rgb, np.repeat(grey[..., None], 3, axis=-1))


def test_a_sixteen_bit_png_file_reads_as_its_picture(tmp_path):
    sixteen = _grey_ramp().astype(np.uint16) * 257
    Image.fromarray(sixteen).save(tmp_path / "face16.png")
    with Image.open(tmp_path / "face16.png") as image:
        rgb = to_rgb_array(image, 16)
    assert rgb.min() == 0 and np.array_equal(rgb[..., 0], _grey_ramp())


def test_float_images_are_refused_by_name():
    with pytest.raises(UnsupportedImageModeError, match="mode F"):
        to_rgb_array(Image.new("F", (16, 16), 0.5), 16)


def test_integer_images_beyond_sixteen_bits_are_refused():
    with pytest.raises(UnsupportedImageModeError, match="16-bit range"):
        to_rgb_array(Image.fromarray(np.full((16, 16), 70000, np.int32), mode="I"), 16)
