"""Specification of nptface.core.alignment: a face moved by a known similarity is brought back."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from nptface.core.alignment import (
    ARCFACE_TEMPLATE_112,
    align_face,
    apply_transform,
    similarity_transform,
    template_points,
    warp_face,
)


def _similarity(angle_deg: float, scale: float, tx: float, ty: float) -> np.ndarray:
    c, s = scale * math.cos(math.radians(angle_deg)), scale * math.sin(math.radians(angle_deg))
    return np.array([[c, -s, tx], [s, c, ty]])


def _dots(size: int, points: np.ndarray, sigma: float) -> Image.Image:
    """Gaussian blobs centred exactly on ``points`` (pixel (i, j)'s centre at (i, j))."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    blobs = sum(np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma**2)) for x, y in points)
    return Image.fromarray(np.round(255 * np.clip(blobs, 0, 1)).astype(np.uint8))


def _centroids(image: Image.Image, near: np.ndarray, window: int) -> np.ndarray:
    """Intensity-weighted centre of each dot, searched in a box around where it should be."""
    pixels = np.asarray(image, dtype=np.float64)
    found = []
    for x, y in near:
        x0, y0 = max(int(round(x)) - window, 0), max(int(round(y)) - window, 0)
        patch = pixels[y0 : int(round(y)) + window + 1, x0 : int(round(x)) + window + 1]
        ys, xs = np.mgrid[y0 : y0 + patch.shape[0], x0 : x0 + patch.shape[1]]
        found.append([(patch * xs).sum() / patch.sum(), (patch * ys).sum() / patch.sum()])
    return np.array(found)


def test_similarity_transform_recovers_a_known_similarity_exactly():
    truth = _similarity(23.0, 1.7, 40.0, -12.0)
    src = ARCFACE_TEMPLATE_112
    assert np.allclose(similarity_transform(src, apply_transform(truth, src)), truth, atol=1e-9)


def test_similarity_transform_never_mirrors():
    src = ARCFACE_TEMPLATE_112
    mirrored = src * np.array([-1.0, 1.0])
    matrix = similarity_transform(src, mirrored)
    assert np.linalg.det(matrix[:, :2]) > 0


def test_coincident_points_are_refused():
    with pytest.raises(ValueError, match="coincide"):
        similarity_transform(np.ones((5, 2)), ARCFACE_TEMPLATE_112)


def test_template_scales_with_the_crop_and_centres_the_mouth():
    assert np.allclose(template_points(224), 2 * ARCFACE_TEMPLATE_112)
    four = template_points(112, mouth="centre")
    assert four.shape == (4, 2)
    assert np.allclose(four[3], ARCFACE_TEMPLATE_112[3:].mean(axis=0))


@pytest.mark.parametrize("angle,scale", [(0.0, 2.0), (27.0, 2.6), (-30.0, 1.4)])
def test_a_face_warped_by_a_known_similarity_is_aligned_back_onto_the_template(angle, scale):
    size = 112
    face = _dots(size, ARCFACE_TEMPLATE_112, sigma=1.5)
    to_photo = _similarity(angle, scale, 150.0, 60.0)
    photo = warp_face(face, to_photo, 400)
    seen = _centroids(photo, apply_transform(to_photo, ARCFACE_TEMPLATE_112), window=int(6 * scale))
    aligned, matrix = align_face(photo, seen, size)
    assert np.allclose(matrix, np.linalg.inv(np.vstack([to_photo, [0, 0, 1]]))[:2], atol=0.02)
    back = _centroids(aligned, ARCFACE_TEMPLATE_112, window=6)
    assert np.abs(back - ARCFACE_TEMPLATE_112).max() < 0.5


def test_four_points_with_the_mouth_centre_align_like_five():
    to_photo = _similarity(12.0, 1.5, 30.0, 20.0)
    five = apply_transform(to_photo, ARCFACE_TEMPLATE_112)
    four = np.vstack([five[:3], five[3:].mean(axis=0, keepdims=True)])
    photo = Image.new("RGB", (300, 300))
    _, matrix_five = align_face(photo, five, 112)
    _, matrix_four = align_face(photo, four, 112, mouth="centre")
    assert np.allclose(matrix_four, matrix_five, atol=1e-9)
