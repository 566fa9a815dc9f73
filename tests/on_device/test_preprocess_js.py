"""The page's preprocessing (static/preprocess.js) against Python's on the same pixels, run in Node.

Tolerance: none. The JS port follows Pillow's fixed-point resampler, so every crop must equal
``nptface.core.preprocess.to_rgb_array`` byte for byte — shrinking, enlarging, non-square images
and both of Pillow's pass orders (it runs the vertical pass first when the height shrinks more).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nptface.core.preprocess import to_rgb_array

PREPROCESS_JS = Path(__file__).resolve().parents[2] / "nptface" / "on_device" / "static" / "preprocess.js"
DRIVER = """
import { toRgbCrop } from %s;
import { readFileSync } from "node:fs";
const cases = JSON.parse(readFileSync(0, "utf8"));
const out = cases.map(({ w, h, size, pixels }) => {
  const rgb = Buffer.from(pixels, "base64");
  const rgba = new Uint8ClampedArray(w * h * 4);
  for (let p = 0; p < w * h; p++) rgba.set([rgb[3 * p], rgb[3 * p + 1], rgb[3 * p + 2], 255], 4 * p);
  return Buffer.from(toRgbCrop(rgba, w, h, size)).toString("base64");
});
process.stdout.write(JSON.stringify(out));
"""
SIZES = [(96, 96, 32), (50, 70, 32), (31, 200, 32), (120, 130, 64), (20, 17, 64), (333, 250, 112), (64, 64, 64)]


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed (./dev setup needs it for the demo)")
def test_js_crop_equals_python_crop_exactly(tmp_path):
    import base64
    import json

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for w, h, _ in SIZES]
    cases = [
        {"w": w, "h": h, "size": s, "pixels": base64.b64encode(img.tobytes()).decode()}
        for (w, h, s), img in zip(SIZES, images, strict=True)
    ]
    driver = tmp_path / "driver.mjs"
    driver.write_text(DRIVER % json.dumps(PREPROCESS_JS.as_uri()))
    result = subprocess.run(
        ["node", str(driver)], input=json.dumps(cases), capture_output=True, text=True, timeout=60, check=True
    )
    for (w, h, s), image, encoded in zip(SIZES, images, json.loads(result.stdout), strict=True):
        js = np.frombuffer(base64.b64decode(encoded), np.uint8).reshape(s, s, 3)
        python = to_rgb_array(Image.fromarray(image), s)
        assert np.array_equal(js, python), f"{w}x{h} -> {s}: {int((js != python).sum())} values differ"
