"""Specification of nptface.on_device.face_detection: BlazeFace's decoding, NMS and coordinates."""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pytest
from PIL import Image

from nptface.on_device.face_detection import (
    ANCHOR_GRID,
    INPUT_SIZE,
    FaceDetector,
    anchors,
    decode,
    model_path,
    weighted_nms,
)


def _photo(face: Image.Image, size: tuple[int, int], at: tuple[int, int]) -> Image.Image:
    photo = Image.new("RGB", size, (70, 90, 100))
    photo.paste(face, at)
    return photo


def test_shipped_model_files_match_the_hashes_on_their_card():
    card = (model_path("onnxruntime").parent / "README.md").read_text()
    for runtime in ("onnxruntime", "litert"):
        path = model_path(runtime)
        listed = re.search(rf"`{re.escape(path.name)}` \| `([0-9a-f]{{64}})`", card)
        assert listed, f"{path.name} is not on the card"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == listed.group(1)


def test_anchors_are_cell_centres_row_by_row():
    centres = anchors()
    assert centres.shape == (ANCHOR_GRID * ANCHOR_GRID, 2)
    assert np.allclose(centres[0], [0.5 / ANCHOR_GRID] * 2)
    assert np.allclose(centres[1], [1.5 / ANCHOR_GRID, 0.5 / ANCHOR_GRID])
    assert np.allclose(centres[ANCHOR_GRID], [0.5 / ANCHOR_GRID, 1.5 / ANCHOR_GRID])


def test_decode_places_boxes_and_keypoints_relative_to_their_anchor():
    raw = np.zeros((ANCHOR_GRID * ANCHOR_GRID, 16))
    raw[5] = [0, 0, 48, 24, -10, -5, 10, -5, 0, 0, 0, 8, -20, 0, 20, 0]
    logits = np.full(len(raw), -20.0)
    logits[5] = 3.0
    scores, points = decode(raw, logits)
    anchor = anchors()[5]
    assert np.allclose(points[5, 0], anchor - [24 / INPUT_SIZE, 12 / INPUT_SIZE])
    assert np.allclose(points[5, 1], anchor + [24 / INPUT_SIZE, 12 / INPUT_SIZE])
    assert np.allclose(points[5, 2], anchor + [-10 / INPUT_SIZE, -5 / INPUT_SIZE])
    assert scores[5] == pytest.approx(1 / (1 + np.exp(-3.0)))


def test_weighted_nms_merges_overlapping_detections_by_score_and_keeps_separate_ones():
    box = np.array([[0.1, 0.1], [0.3, 0.3]])
    points = np.stack([np.vstack([box, np.zeros((6, 2))]), np.vstack([box + 0.02, np.ones((6, 2))])])
    points = np.concatenate([points, np.vstack([box + 0.5, np.zeros((6, 2))])[None], points[:1]])
    scores = np.array([0.9, 0.6, 0.8, 0.1])
    kept = weighted_nms(scores, points, min_score=0.5, iou=0.3)
    assert [score for score, _ in kept] == [0.9, 0.8]
    assert np.allclose(kept[0][1][2:], 0.6 / 1.5)  # keypoints: (0.9 * 0 + 0.6 * 1) / (0.9 + 0.6)
    assert np.allclose(kept[1][1][:2], box + 0.5)


def test_a_photo_without_a_face_gives_no_detection(detector):
    rng = np.random.default_rng(0)
    clutter = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((240, 180))
    assert detector.detect(clutter) == []


def test_keypoints_follow_the_face_across_the_photo_in_pixels(detector, synthetic_portraits):
    face = synthetic_portraits[0]
    first = detector.detect(_photo(face, (320, 240), (20, 30)))
    moved = detector.detect(_photo(face, (320, 240), (180, 100)))
    big = detector.detect(_photo(face.resize((224, 224), Image.Resampling.BICUBIC), (640, 480), (40, 60)))
    assert len(first) == len(moved) == len(big) == 1
    eyes = first[0].keypoints[:2]
    assert eyes[0, 0] < eyes[1, 0], "the subject's right eye is on the image's left"
    assert np.abs(moved[0].keypoints[:4] - (first[0].keypoints[:4] + [160, 70])).max() < 2.0
    # twice the size, pasted at twice the offset: pixel (i, j) of the face lands at (2i + 0.5, 2j + 0.5)
    assert np.abs(big[0].keypoints[:4] - (2 * first[0].keypoints[:4] + 0.5)).max() < 3.0


def test_onnxruntime_and_litert_find_the_same_landmarks(synthetic_portraits):
    pytest.importorskip("ai_edge_litert")
    photo = _photo(synthetic_portraits[1], (300, 260), (90, 70))
    onnx, litert = FaceDetector("onnxruntime").detect(photo), FaceDetector("litert").detect(photo)
    assert len(onnx) == len(litert) == 1
    assert np.abs(onnx[0].keypoints - litert[0].keypoints).max() < 0.05


def test_a_face_filling_the_whole_image_is_found_in_place(detector, synthetic_portraits):
    face = synthetic_portraits[0]
    in_photo = detector.detect(_photo(face, (320, 240), (100, 60)))
    alone = detector.detect(face)
    assert len(alone) == 1
    assert np.abs(alone[0].alignment_points - (in_photo[0].alignment_points - [100, 60])).max() < 5.0
