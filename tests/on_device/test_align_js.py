"""The page's face detection and alignment maths (static/detect.js, align.js) against Python's, in Node.

The model itself runs in the browser tests; here the steps around it get the same numbers as
:mod:`nptface.on_device.face_detection` and :mod:`nptface.core.alignment`: the letterbox byte for
byte, the decoding and weighted NMS and the similarity transform to 1e-9, and the warp byte for
byte given the same matrix.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nptface.core.alignment import similarity_transform, template_points, warp_face
from nptface.on_device.face_detection import INPUT_SIZE, MIN_SCORE, NMS_IOU, decode, letterbox, weighted_nms

STATIC = Path(__file__).resolve().parents[2] / "nptface" / "on_device" / "static"
DRIVER = """
import { similarityTransform, warpFace } from %(align)s;
import { decode, letterbox, weightedNms } from %(detect)s;
import { readFileSync } from "node:fs";
const bytes = (b64) => new Uint8ClampedArray(Buffer.from(b64, "base64"));
const b64 = (array) => Buffer.from(array).toString("base64");
const run = {
  similarity: ({ src, dst }) => similarityTransform(src, dst),
  warp: ({ pixels, w, h, matrix, size }) => b64(warpFace(bytes(pixels), w, h, matrix, size)),
  letterbox: ({ pixels, w, h, size }) => {
    const { square, box } = letterbox(bytes(pixels), w, h, size);
    return { square: b64(square), box };
  },
  nms: ({ boxes, scores, size, minScore, iou }) => {
    const decoded = decode(Float32Array.from(boxes), Float32Array.from(scores), size);
    return weightedNms(decoded.scores, decoded.points, minScore, iou).map((d) => [d.score, Array.from(d.points)]);
  },
};
const cases = JSON.parse(readFileSync(0, "utf8"));
process.stdout.write(JSON.stringify(cases.map(({ op, args }) => run[op](args))));
"""

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed (./dev setup needs it)")


def _run_js(tmp_path: Path, cases: list[dict]) -> list:
    driver = tmp_path / "driver.mjs"
    paths = {name: json.dumps((STATIC / f"{name}.js").as_uri()) for name in ("align", "detect")}
    driver.write_text(DRIVER % paths)
    result = subprocess.run(
        ["node", str(driver)], input=json.dumps(cases), capture_output=True, text=True, timeout=60, check=True
    )
    return json.loads(result.stdout)


def _b64(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array, np.uint8).tobytes()).decode()


def test_similarity_transform_equals_umeyama_in_python(tmp_path):
    rng = np.random.default_rng(1)
    template = template_points(112, mouth="centre")
    sources = [template * 2.5 + [40, 10], rng.uniform(0, 300, (4, 2)), rng.uniform(0, 300, (5, 2))]
    sources.append(sources[1][:, ::-1])  # mirrored points: the best rotation, never a reflection
    targets = [template, template, template_points(112), template]
    js = _run_js(
        tmp_path,
        [
            {"op": "similarity", "args": {"src": s.tolist(), "dst": t.tolist()}}
            for s, t in zip(sources, targets, strict=True)
        ],
    )
    for source, target, matrix in zip(sources, targets, js, strict=True):
        np.testing.assert_allclose(matrix, similarity_transform(source, target), atol=1e-9)


def test_warp_equals_pillows_affine_transform_byte_for_byte(tmp_path):
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)
    template = template_points(32, mouth="centre")
    landmarks = [
        [[40.3, 35.1], [70.8, 33.9], [55.2, 52.7], [56.0, 70.4]],  # upright, inside the image
        [[5.5, 60.2], [28.1, 75.9], [10.0, 85.0], [2.0, 95.0]],  # tilted, the crop leaves the image
        [[60.0, 20.0], [90.0, 24.0], [74.0, 40.0], [73.0, 55.0]],
    ]
    matrices = [similarity_transform(np.array(points), template) for points in landmarks]
    cases = [
        {"op": "warp", "args": {"pixels": _b64(image), "w": 120, "h": 90, "matrix": m.tolist(), "size": 32}}
        for m in matrices
    ]
    for matrix, encoded in zip(matrices, _run_js(tmp_path, cases), strict=True):
        js = np.frombuffer(base64.b64decode(encoded), np.uint8).reshape(32, 32, 3)
        python = np.asarray(warp_face(Image.fromarray(image), matrix, 32))
        assert np.array_equal(js, python), f"{int((js != python).sum())} values differ"


def test_letterbox_equals_python_byte_for_byte(tmp_path):
    rng = np.random.default_rng(3)
    sizes = [
        (320, 240),
        (240, 320),
        (92, 112),
        (400, 267),
        (184, 224),
        (384, 5),
    ]  # 384x5: 2.5 rows, which round() takes to 2
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for w, h in sizes]
    cases = [
        {"op": "letterbox", "args": {"pixels": _b64(img), "w": w, "h": h, "size": INPUT_SIZE}}
        for (w, h), img in zip(sizes, images, strict=True)
    ]
    for image, result in zip(images, _run_js(tmp_path, cases), strict=True):
        square, box = letterbox(Image.fromarray(image), INPUT_SIZE)
        js = np.frombuffer(base64.b64decode(result["square"]), np.uint8).reshape(square.shape)
        assert np.array_equal(js, square), f"{image.shape}: {int((js != square).sum())} values differ"
        assert [result["box"][k] for k in ("scaleX", "scaleY", "padX", "padY")] == pytest.approx(
            [box.scale_x, box.scale_y, box.pad_x, box.pad_y], abs=1e-12
        )


def test_decoding_and_weighted_nms_equal_python(tmp_path):
    rng = np.random.default_rng(4)
    anchors = (INPUT_SIZE // 4) ** 2
    boxes = rng.normal(0, 4, (anchors, 16)).astype(np.float32)
    boxes[:, 2:4] = np.abs(boxes[:, 2:4]) + 30  # boxes of ~30 px, so neighbouring anchors overlap
    scores = rng.normal(-6, 2, anchors).astype(np.float32)
    scores[[100, 101, 148, 1500, 1501]] = [4.0, 2.5, 1.0, 3.0, 95.0]  # two clusters, one logit past the clip
    js = _run_js(
        tmp_path,
        [
            {
                "op": "nms",
                "args": {
                    "boxes": boxes.ravel().tolist(),
                    "scores": scores.tolist(),
                    "size": INPUT_SIZE,
                    "minScore": MIN_SCORE,
                    "iou": NMS_IOU,
                },
            }
        ],
    )[0]
    python = weighted_nms(*decode(boxes, scores))
    assert len(js) == len(python) >= 2
    for (js_score, js_points), (score, points) in zip(js, python, strict=True):
        assert js_score == pytest.approx(score, abs=1e-12)
        np.testing.assert_allclose(np.reshape(js_points, (8, 2)), points, atol=1e-9)
