"""Five-point face alignment: the similarity transform onto the ArcFace template, and the warp.

Recognition models are trained on crops whose eyes, nose and mouth sit at fixed places; the
insightface convention (shared by ArcFace, InspireFace and FaceX-Zoo) puts five points of a
112x112 crop at :data:`ARCFACE_TEMPLATE_112`. A face found anywhere in a photo is brought there
by the least-squares similarity transform (rotation, uniform scale, translation; Umeyama 1991,
"Least-squares estimation of transformation parameters between two point patterns") from its
detected points onto the template. Other square input sizes use the template scaled by
``size / 112``. Detectors that give the mouth centre instead of its two corners (MediaPipe's
BlazeFace) are aligned on four points: the two eyes, the nose tip and the midpoint of the
template's mouth corners (:func:`template_points` with ``mouth="centre"``).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from PIL import Image

# (x, y) of the subject's right eye, left eye, nose tip, right and left mouth corner in a 112x112
# crop (the subject's right eye is on the image's left).
ARCFACE_TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)


def template_points(size: int, mouth: Literal["corners", "centre"] = "corners") -> np.ndarray:
    """The template for a ``size`` x ``size`` crop: five points, or four with the mouth's centre."""
    if size <= 0:
        raise ValueError(f"crop size {size}: expected a positive number of pixels")
    points = ARCFACE_TEMPLATE_112 * (size / 112.0)
    if mouth == "corners":
        return points
    if mouth == "centre":
        return np.vstack([points[:3], points[3:].mean(axis=0, keepdims=True)])
    raise ValueError(f"mouth={mouth!r}: expected 'corners' or 'centre'")


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 matrix ``M`` of the similarity minimising ``sum |M [src; 1] - dst|^2`` (Umeyama).

    Reflections are excluded: a mirrored face is a different face to a recognition model.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"points of shape {src.shape} and {dst.shape}: expected the same (K, 2) with K >= 2")
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    src_var = (src_c**2).sum() / len(src)
    if src_var == 0:
        raise ValueError("all source points coincide: no transform maps them onto the template")
    covariance = dst_c.T @ src_c / len(src)
    u, singular, vt = np.linalg.svd(covariance)
    signs = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        signs[-1] = -1.0
    rotation = u @ np.diag(signs) @ vt
    scale = (singular * signs).sum() / src_var
    translation = dst_mean - scale * rotation @ src_mean
    return np.hstack([scale * rotation, translation[:, None]])


def apply_transform(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``points`` (K, 2) mapped by the 2x3 affine ``matrix``."""
    points = np.asarray(points, dtype=np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


def warp_face(image: Image.Image, matrix: np.ndarray, size: int) -> Image.Image:
    """The ``size`` x ``size`` crop of ``image`` under ``matrix`` (image -> crop), bilinear.

    Points follow the insightface convention: pixel ``(i, j)``'s centre is at ``(i, j)``. Pillow's
    affine transform asks, for each output pixel, where to sample the input, in coordinates whose
    pixel centres are at ``+0.5``; it is given the inverse of ``matrix`` in those coordinates.
    Pixels from outside the image are black.
    """
    full = np.vstack([np.asarray(matrix, dtype=np.float64), [0.0, 0.0, 1.0]])
    half = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]])
    inverse = (half @ np.linalg.inv(full) @ np.linalg.inv(half))[:2]
    return image.transform((size, size), Image.Transform.AFFINE, tuple(inverse.ravel()), Image.Resampling.BILINEAR)


def align_face(
    image: Image.Image, points: np.ndarray, size: int, mouth: Literal["corners", "centre"] = "corners"
) -> tuple[Image.Image, np.ndarray]:
    """The aligned ``size`` crop of the face whose landmarks are ``points``, and the matrix used."""
    matrix = similarity_transform(points, template_points(size, mouth))
    return warp_face(image, matrix, size), matrix
