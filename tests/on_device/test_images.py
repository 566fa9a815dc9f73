"""Specification of nptface.on_device.images: verify/enroll/identify read files as training does."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from nptface.core.image_policy import ImageInputError
from nptface.on_device.images import load_face, load_photo


def test_a_sixteen_bit_face_is_not_read_as_a_white_square(tmp_path):
    ramp = np.tile(np.arange(0, 256, 8, dtype=np.uint16), (32, 1))
    Image.fromarray(ramp * 257).save(tmp_path / "face16.png")
    assert np.array_equal(load_face(tmp_path / "face16.png", 32)[..., 1], ramp.astype(np.uint8))


def test_a_float_image_is_refused_naming_the_file(tmp_path):
    Image.new("F", (32, 32), 0.5).save(tmp_path / "float.tiff")
    with pytest.raises(ImageInputError, match="float.tiff.*mode F"):
        load_face(tmp_path / "float.tiff", 32)


def _upright_face() -> Image.Image:
    """An asymmetric test image (a ramp and one bright corner), so any rotation or mirror shows."""
    pixels = np.zeros((40, 30, 3), np.uint8)
    pixels[..., 0] = np.arange(30, dtype=np.uint8)[None, :] * 8
    pixels[..., 1] = np.arange(40, dtype=np.uint8)[:, None] * 6
    pixels[:8, :6] = 255
    return Image.fromarray(pixels)


def test_exif_orientation_is_applied_like_a_photo_viewer_does(tmp_path):
    """A phone stores a portrait shot sideways with Orientation=6 (rotate 90 degrees clockwise to view)."""
    upright = _upright_face()
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what the sensor wrote: the face lies on its side
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(tmp_path / "portrait.png", exif=exif)
    upright.save(tmp_path / "upright.png")
    assert np.array_equal(load_face(tmp_path / "portrait.png", 32), load_face(tmp_path / "upright.png", 32))


def test_a_photo_is_turned_upright_by_its_exif_orientation(tmp_path):
    upright = Image.new("RGB", (40, 24), (200, 0, 0))
    upright.paste((0, 0, 255), (0, 0, 10, 24))  # blue on the left when upright
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display": the camera stored it turned left
    upright.rotate(90, expand=True).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    photo = load_photo(tmp_path / "phone.jpg")
    assert photo.size == (40, 24) and photo.mode == "RGB"
    assert np.asarray(photo)[12, 3, 2] > 200 and np.asarray(photo)[12, 36, 0] > 150


def test_an_unreadable_photo_is_refused_naming_the_file(tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ImageInputError, match="broken.jpg.*not a decodable image"):
        load_photo(tmp_path / "broken.jpg")
