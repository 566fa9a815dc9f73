"""The page's own PGM/PPM decoder and SHA-256 (static/netpbm.js, static/sha256.js) against Python, in Node.

Browsers decode neither PGM (ORL's format, which the CLI reads through Pillow) nor, on an insecure
origin, SHA-256 (``crypto.subtle`` is missing there), so the page carries both; every decoded pixel
must equal what ``nptface.on_device.images`` gives the model, and every digest ``hashlib``'s.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nptface.core.preprocess import to_rgb_array

STATIC = Path(__file__).resolve().parents[2] / "nptface" / "on_device" / "static"
DRIVER = """
import { decodeNetpbm } from %s;
import { sha256 } from %s;
import { readFileSync } from "node:fs";
const { images, blobs } = JSON.parse(readFileSync(0, "utf8"));
const decoded = images.map((b64) => {
  try {
    const { width, height, pixels } = decodeNetpbm(Buffer.from(b64, "base64"), () => {});
    const rgb = Buffer.alloc(width * height * 3);
    for (let p = 0; p < width * height; p++) rgb.set(pixels.subarray(4 * p, 4 * p + 3), 3 * p);
    return { width, height, rgb: rgb.toString("base64") };
  } catch (error) {
    return { error: error.message };
  }
});
const digests = blobs.map((b64) => Buffer.from(sha256(new Uint8Array(Buffer.from(b64, "base64")).buffer)).toString("hex"));
process.stdout.write(JSON.stringify({ decoded, digests }));
"""

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")


def _netpbm(magic: str, values: np.ndarray, maxval: int, comment: bool = False) -> bytes:
    height, width = values.shape[:2]
    header = f"{magic}\n{'# made by a test' + chr(10) if comment else ''}{width} {height}\n{maxval}\n".encode()
    if magic in ("P2", "P3"):
        return header + " ".join(str(int(v)) for v in values.ravel()).encode() + b"\n"
    return header + values.astype(">u2" if maxval > 255 else np.uint8).tobytes()


def _run(tmp_path: Path, images: list[bytes], blobs: list[bytes]) -> dict:
    driver = tmp_path / "driver.mjs"
    driver.write_text(
        DRIVER % (json.dumps((STATIC / "netpbm.js").as_uri()), json.dumps((STATIC / "sha256.js").as_uri()))
    )
    payload = {
        "images": [base64.b64encode(b).decode() for b in images],
        "blobs": [base64.b64encode(b).decode() for b in blobs],
    }
    done = subprocess.run(["node", str(driver)], input=json.dumps(payload), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_pgm_and_ppm_decode_to_the_pixels_the_cli_reads(tmp_path):
    rng = np.random.default_rng(0)
    cases = []
    for magic, channels in (("P5", 1), ("P2", 1), ("P6", 3), ("P3", 3)):
        for maxval in (255, 15, 100, 1000, 65535):
            shape = (7, 5) if channels == 1 else (7, 5, 3)
            cases.append(_netpbm(magic, rng.integers(0, maxval + 1, shape), maxval, comment=maxval == 100))
    orl = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "orl_faces" / "s1" / "1.pgm"
    if orl.is_file():
        cases.append(orl.read_bytes())
    result = _run(tmp_path, cases, [])
    for data, js in zip(cases, result["decoded"], strict=True):
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            expected = to_rgb_array(image, image.size[::-1])  # no resize: the decoded pixels themselves
        assert "error" not in js, (data[:12], js)
        got = np.frombuffer(base64.b64decode(js["rgb"]), np.uint8).reshape(js["height"], js["width"], 3)
        assert np.array_equal(got, expected), f"{data[:12]!r}: {int((got != expected).sum())} values differ"


def test_broken_netpbm_files_are_refused_with_a_reason(tmp_path):
    broken = [b"P5\n4 4\n255\n" + bytes(10), b"P2\n2 1\n10\n3 11\n", b"P5\n0 4\n255\n", b"P5\nfour 4\n255\n"]
    errors = [d.get("error", "") for d in _run(tmp_path, broken, [])["decoded"]]
    assert "truncated" in errors[0] and "exceeds maxval" in errors[1]
    assert "zero size" in errors[2] and "header" in errors[3]


def test_sha256_matches_hashlib_across_block_boundaries(tmp_path):
    rng = np.random.default_rng(1)
    blobs = [
        b"",
        b"abc",
        *(bytes(rng.integers(0, 256, n, dtype=np.uint8)) for n in (55, 56, 63, 64, 65, 1000, 200_001)),
    ]
    assert _run(tmp_path, [], blobs)["digests"] == [hashlib.sha256(b).hexdigest() for b in blobs]
