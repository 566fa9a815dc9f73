"""The bundle on disk: models, the reference, a model card and a manifest that hashes them all.

``manifest.json`` is the contract an app or the demo reads: preprocessing (size, layout, channel
order, normalisation), embedding size, metric, calibrated thresholds, and every file with its
sha256 and size. Loading a bundle checks every value it reads (:mod:`nptface.edge_export.manifest_check`)
and re-hashes every file, so a truncated download or a swapped
model is refused by name before a single face is embedded. A bundle is built in a hidden staging
folder and renamed into place when complete: a crash never leaves a half-written bundle.

Thresholds come in named operating points: ``export`` (the manifest's ``thresholds``, calibrated
on the export's evaluation set) and any calibrated later on the user's own faces
(``operating_points``, added by :func:`add_operating_point` without touching a hashed file).
The newest calibrated point is the default, since it describes the faces the bundle now meets.

A bundle may also carry the face detector (``detector/``, hashed like the models, and the
manifest's ``detector`` entry with the alignment template at the bundle's input size), so that a
device finds and aligns faces exactly as the export's own tools do.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nptface.core.alignment import template_points
from nptface.core.atomic import atomic_write_json
from nptface.core.versioned_json import read_versioned_json
from nptface.edge_export.manifest_check import EXPORT_POINT, ManifestValueError, check_manifest
from nptface.edge_export.numerics import RENAMED_VARIANTS, upgrade_variant
from nptface.edge_export.runtimes import Embedder, LiteRTEmbedder, OnnxEmbedder

logger = logging.getLogger(__name__)

FORMAT = "nptface-bundle"
VERSION = 1
MANIFEST = "manifest.json"
DEFAULT_FAR = 1e-3
DETECTOR_DIR = "detector"


class BundleError(ValueError):
    """A bundle that is missing, tampered with, or not in the format this version reads."""


@dataclass(frozen=True)
class BundledDetector:
    """A face detector an export ships next to the embedder, so that a device finds faces as the CLI does.

    ``entry`` is its manifest entry without the alignment (which depends on the bundle's input
    size); its ``files`` map a format (``onnx``, ``tflite``) to a file name in ``folder``.
    ``documents`` (licence, source) are copied along.
    """

    folder: Path
    entry: dict[str, Any]
    documents: tuple[str, ...] = ()


def add_detector(root: Path, detector: BundledDetector, input_size: int) -> dict[str, Any]:
    """Copy ``detector``'s files into ``root/detector/`` and return its manifest entry for this input size.

    The entry's template is where the detected eyes, nose tip and mouth centre go in the
    ``input_size`` crop the embedder reads: the ArcFace template, aligned on the mouth's centre.
    """
    target = root / DETECTOR_DIR
    target.mkdir(parents=True, exist_ok=True)
    for name in (*detector.entry["files"].values(), *detector.documents):
        shutil.copyfile(detector.folder / name, target / name)
    template = template_points(input_size, mouth="centre")
    return {
        **detector.entry,
        "files": {fmt: f"{DETECTOR_DIR}/{name}" for fmt, name in detector.entry["files"].items()},
        "alignment": {"template": template.tolist(), "size": input_size, "mouth": "centre"},
    }


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _bundle_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.relative_to(root).as_posix() != MANIFEST)


def file_table(root: Path) -> dict[str, dict[str, Any]]:
    return {
        p.relative_to(root).as_posix(): {"sha256": sha256_file(p), "size": p.stat().st_size}
        for p in _bundle_files(root)
    }


def write_manifest(root: Path, manifest: dict[str, Any]) -> None:
    """Hash every file now in ``root`` into the manifest and write it (last: it commits the bundle)."""
    atomic_write_json(root / MANIFEST, {**manifest, "files": file_table(root)})


@dataclass(frozen=True)
class Bundle:
    root: Path
    manifest: dict[str, Any]

    @property
    def input_size(self) -> int:
        return int(self.manifest["input"]["size"][0])

    @property
    def detector(self) -> dict[str, Any] | None:
        """The shipped face detector's manifest entry; ``None`` for bundles exported without one."""
        return self.manifest.get("detector")

    @property
    def variants(self) -> dict[str, dict[str, Any]]:
        return {v["name"]: v for v in self.manifest["variants"]}

    def shipped_variant(self, name: str) -> str:
        """The shipped variant called ``name``, or by its name before the renames (with a warning: that will go)."""
        current = RENAMED_VARIANTS.get(name, name) if name not in self.variants else name
        if current not in self.variants:
            raise BundleError(f"{self.root}: no variant {name!r}; shipped: {sorted(self.variants)}")
        if current != name:
            logger.warning(
                "variant %r is now called %r (its activations are not int8); the old name will stop working",
                name,
                current,
            )
        return current

    @property
    def operating_points(self) -> dict[str, dict[str, float]]:
        """Operating point name -> {FAR key ('1e-03') -> cosine threshold}, ``export`` first."""
        points = {EXPORT_POINT: self.manifest["thresholds"]["cosine"]}
        return points | {name: p["cosine"] for name, p in self.manifest.get("operating_points", {}).items()}

    @property
    def default_operating_point(self) -> str:
        """The newest calibrated operating point, else ``export``."""
        calibrated = self.manifest.get("operating_points", {})
        return max(calibrated, key=lambda name: calibrated[name]["created"]) if calibrated else EXPORT_POINT

    def default_far(self, operating_point: str | None = None) -> float:
        """1e-3, the usual verification FAR, if the operating point has it, else its strictest FAR."""
        fars = [float(key) for key in self.operating_points.get(operating_point or self.default_operating_point, {})]
        return DEFAULT_FAR if DEFAULT_FAR in fars or not fars else min(fars)

    def threshold(self, far: float = 1e-3, operating_point: str | None = None) -> float:
        """The cosine threshold at ``far`` of ``operating_point`` (default: :attr:`default_operating_point`)."""
        name = operating_point or self.default_operating_point
        if name not in self.operating_points:
            raise BundleError(
                f"{self.root / MANIFEST}: no operating point {name!r}; available: {list(self.operating_points)}"
            )
        key = f"{far:.0e}"
        thresholds = self.operating_points[name]
        if key not in thresholds:
            raise BundleError(
                f"{self.root / MANIFEST}: operating point {name!r} has no threshold at FAR={key}; "
                f"available: {sorted(thresholds)}"
            )
        return float(thresholds[key])

    def embedder(self, name: str, threads: int | None = None) -> Embedder:
        """A runtime for the shipped variant ``name`` (ONNX or TFLite; Core ML needs macOS)."""
        if name not in self.variants:
            raise BundleError(f"{self.root}: no variant {name!r}; shipped: {sorted(self.variants)}")
        variant = self.variants[name]
        path = (self.root / variant["file"]).resolve()
        listed = self.manifest["files"]
        relative = (
            path.relative_to(self.root.resolve()).as_posix() if path.is_relative_to(self.root.resolve()) else None
        )
        if relative is None or not (relative in listed or any(f.startswith(relative + "/") for f in listed)):
            raise BundleError(
                f"{self.root / MANIFEST}: variant {name!r} points to {variant['file']!r}, "
                "which is not a hashed file of this bundle"
            )
        if variant["format"] == "onnx":
            return OnnxEmbedder(path, self.input_size, threads)
        if variant["format"] == "tflite":
            return LiteRTEmbedder(path, self.input_size, threads)
        if variant["format"] == "coreml":
            from nptface.edge_export.coreml_export import CoreMLEmbedder

            return CoreMLEmbedder(path, self.input_size)
        raise BundleError(f"{self.root / MANIFEST}: variant {name!r} has unknown format {variant['format']!r}")


def load_bundle(root: str | Path, verify: bool = True) -> Bundle:
    """Read and (by default) verify a bundle: format, version, and every file's size and sha256."""
    root = Path(root)
    path = root / MANIFEST
    manifest = read_versioned_json(path, FORMAT, VERSION, BundleError, f"{root} is not an nptface bundle")
    for key in ("input", "embedding", "thresholds", "variants", "files"):
        if key not in manifest:
            raise BundleError(f"{path}: required field {key!r} is missing")
    try:
        check_manifest(manifest, path)
    except ManifestValueError as error:
        raise BundleError(str(error)) from None
    manifest["variants"] = [upgrade_variant(v) for v in manifest["variants"]]
    if "rejected" in manifest:  # the card lists them by name: the same truthful names as the shipped ones
        manifest["rejected"] = [upgrade_variant(v) for v in manifest["rejected"]]
    if verify:
        verify_files(root, manifest["files"])
    return Bundle(root, manifest)


def add_operating_point(root: str | Path, name: str, point: dict[str, Any], overwrite: bool = False) -> Bundle:
    """Write ``point`` into the verified bundle's manifest as operating point ``name``; only the manifest changes.

    The new manifest is checked like any other before it replaces the old one atomically, so a
    reader sees either the old bundle or the new, never a half-written manifest.
    """
    bundle = load_bundle(root)
    points = dict(bundle.manifest.get("operating_points", {}))
    if name in points and not overwrite:
        raise BundleError(f"{bundle.root / MANIFEST}: operating point {name!r} exists; pass --overwrite to replace it")
    manifest = {**bundle.manifest, "operating_points": {**points, name: point}}
    try:
        check_manifest(manifest, bundle.root / MANIFEST)
    except ManifestValueError as error:
        raise BundleError(str(error)) from None
    atomic_write_json(bundle.root / MANIFEST, manifest)
    return Bundle(bundle.root, manifest)


def verify_files(root: Path, files: dict[str, dict[str, Any]]) -> None:
    for name, entry in files.items():
        file = root / name
        if not file.resolve().is_relative_to(root.resolve()):
            raise BundleError(f"{root / MANIFEST}: listed file {name!r} lies outside the bundle")
        if not file.is_file():
            raise BundleError(f"{file}: listed in {MANIFEST} but missing")
        if file.stat().st_size != entry["size"]:
            raise BundleError(f"{file}: size {file.stat().st_size} bytes, {MANIFEST} says {entry['size']}")
        actual = sha256_file(file)
        if actual != entry["sha256"]:
            raise BundleError(
                f"{file}: sha256 {actual[:16]}… does not match {MANIFEST} ({entry['sha256'][:16]}…); "
                "the file was modified or corrupted"
            )
    unlisted = [
        p.relative_to(root).as_posix() for p in _bundle_files(root) if p.relative_to(root).as_posix() not in files
    ]
    if unlisted:
        raise BundleError(f"{root}: files not listed in {MANIFEST}: {unlisted[:5]}")


def staging_dir(out: Path) -> Path:
    staging = out.parent / f".{out.name}.partial-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    return staging


def commit(staging: Path, out: Path, overwrite: bool) -> None:
    """Move a complete bundle into place; an existing one is replaced only with ``overwrite``."""
    if out.exists():
        if not overwrite:
            shutil.rmtree(staging)
            raise BundleError(f"{out} already exists; pass --overwrite to replace it")
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
        os.replace(staging, out)
        shutil.rmtree(old)
    else:
        os.replace(staging, out)
