"""Specification of nptface.on_device.images: verify/enroll/identify read files as training does."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from nptface.core.image_policy import ImageInputError
from nptface.on_device.images import load_face


def test_a_sixteen_bit_face_is_not_read_as_a_white_square(tmp_path):
    ramp = np.tile(np.arange(0, 256, 8, dtype=np.uint16), (32, 1))
    Image.fromarray(ramp * 257).save(tmp_path / "face16.png")
    assert np.array_equal(load_face(tmp_path / "face16.png", 32)[..., 1], ramp.astype(np.uint8))


def test_a_float_image_is_refused_naming_the_file(tmp_path):
    Image.new("F", (32, 32), 0.5).save(tmp_path / "float.tiff")
    with pytest.raises(ImageInputError, match="float.tiff.*mode F"):
        load_face(tmp_path / "float.tiff", 32)
