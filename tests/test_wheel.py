"""The wheel pip users install carries the web demo's runtime: every vendored file, byte for byte, and its licence.

The wheel is built the way ``./dev wheel`` builds it (pip, no build isolation) from a copy of the
package, so the check leaves no build folders in the checkout. Without npm the runtime was never
vendored and there is nothing to check, which is a skip on a developer's machine but a failure in
CI (``.ci/run`` sets ``CI``), where the wheel must be complete.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from nptface.on_device.server import VENDOR, VENDOR_FILES

ROOT = Path(__file__).resolve().parents[1]
SUMS = VENDOR / "SHA256SUMS"
pytestmark = pytest.mark.slow


def _expected() -> dict[str, str]:
    """name -> sha256 from the committed SHA256SUMS (``sha256sum`` format)."""
    digests = {}
    for line in SUMS.read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        digests[name.lstrip("*")] = digest
    return digests


def test_the_checksums_cover_the_runtime_files_the_server_needs_and_the_licence():
    assert set(VENDOR_FILES) | {"package.json", "LICENSE"} <= set(_expected())
    assert "MIT License" in (VENDOR / "LICENSE").read_text()


def test_the_wheel_contains_the_web_runtime_with_its_checksums_and_licence(tmp_path):
    vendored = all((VENDOR / name).is_file() for name in _expected())
    if not vendored and not os.environ.get("CI"):
        pytest.skip("onnxruntime-web is not vendored: run ./dev setup with npm installed")
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "nptface", source / "nptface", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation"]
        + ["--disable-pip-version-check", "--wheel-dir", str(tmp_path / "dist"), str(source)],
        check=True,
        timeout=300,
    )
    [wheel] = (tmp_path / "dist").glob("nptface-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        inside = {
            info.filename.removeprefix("nptface/on_device/static/vendor/"): archive.read(info)
            for info in archive.infolist()
            if info.filename.startswith("nptface/on_device/static/vendor/")
        }
    for name, digest in _expected().items():
        assert name in inside, f"{wheel.name} lacks vendor/{name}"
        assert hashlib.sha256(inside[name]).hexdigest() == digest, f"{wheel.name}: vendor/{name} differs"
    assert inside["SHA256SUMS"] == SUMS.read_bytes()
