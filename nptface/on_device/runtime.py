"""The bundle's model on a device runtime: which shipped variant to run, and embedding files.

"Precision from the bundle": for a runtime (onnxruntime or the LiteRT interpreter) the smallest
shipped variant of its format wins — int8 (8-bit activations only), then w8-dynamic, then w8a16,
then fp16, then fp32 — since every shipped variant passed the bundle's parity gate; ``variant``
overrides the choice (an old name of a renamed variant is still accepted, with a warning). The
page uses the same rule for its default (``default_variant`` is served to it). w8-dynamic (int8
weights, float activations) keeps the rank it had when it was labelled "int8", above w8a16, whose
int16-activation kernels TFLite documents as slower than 8-bit ones (not yet optimised).

With ``align`` the files are photos: each goes through the face detector and is aligned to the
template at the bundle's input size (:mod:`nptface.on_device.face_crops`), on the same runtime as
the embedder; without it they are taken as ready-aligned crops and only resized. The detector is
the bundle's own when it ships one (so the CLI finds faces as the page does), else this package's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nptface.edge_export.bundle import MANIFEST, Bundle, BundleError, load_bundle
from nptface.edge_export.runtimes import RUNTIME_FORMATS, Embedder
from nptface.on_device.face_crops import FaceCropper
from nptface.on_device.face_detection import INPUT_SIZE as DETECTOR_INPUT_SIZE
from nptface.on_device.face_detection import NAME as DETECTOR_NAME
from nptface.on_device.face_detection import Face, FaceDetector
from nptface.on_device.images import load_face

PRECISION_PREFERENCE = ("int8", "w8-dynamic", "w8a16", "fp16", "fp32")


def default_variant(bundle: Bundle, runtime: str) -> str:
    """The shipped variant ``runtime`` runs by default (``PRECISION_PREFERENCE``, manifest order within)."""
    if runtime not in RUNTIME_FORMATS:
        raise ValueError(f"runtime {runtime!r}: expected one of {sorted(RUNTIME_FORMATS)}")
    fmt = RUNTIME_FORMATS[runtime]
    candidates = [v for v in bundle.manifest["variants"] if v["format"] == fmt]
    for precision in PRECISION_PREFERENCE:
        for variant in candidates:
            if variant["precision"] == precision:
                return str(variant["name"])
    raise BundleError(f"{bundle.root}: ships no {fmt} variant for {runtime}; shipped: {sorted(bundle.variants)}")


@dataclass
class DeviceModel:
    bundle: Bundle
    runtime: str
    variant: str
    embedder: Embedder
    cropper: FaceCropper | None = None

    @property
    def model_sha256(self) -> str:
        """The trained checkpoint's hash: templates from the same checkpoint are comparable."""
        return str(self.bundle.manifest["source"]["checkpoint_sha256"])

    def embed_files(self, paths: Sequence[str | Path]) -> np.ndarray:
        if self.cropper is None:
            faces = np.stack([load_face(p, self.bundle.input_size) for p in paths])
        else:
            faces = np.stack([np.asarray(self.cropper.crop_file(p).image) for p in paths])
        return self.embedder.embed(faces)

    def embed_every_face(self, path: str | Path) -> tuple[list[Face], np.ndarray]:
        """Every face detected in the photo at ``path`` (largest first) and their embeddings."""
        if self.cropper is None:
            raise ValueError(f"{path}: finding every face needs the face detector (opened with align=False)")
        crops = self.cropper.crop_file_all(path)
        return [c.face for c in crops], self.embedder.embed(np.stack([np.asarray(c.image) for c in crops]))


def face_detector(bundle: Bundle, runtime: str) -> FaceDetector:
    """The detector the bundle ships (its files verified with the bundle), else this package's own.

    Older bundles carry no detector; their photos are searched with the one installed here.
    """
    entry = bundle.detector
    if entry is None:
        return FaceDetector(runtime)
    where = bundle.root / MANIFEST
    if entry["name"] != DETECTOR_NAME or entry["input_size"] != DETECTOR_INPUT_SIZE:
        raise BundleError(
            f"{where}: field 'detector' names {entry['name']!r} at {entry['input_size']} px; this nptface "
            f"runs {DETECTOR_NAME!r} at {DETECTOR_INPUT_SIZE} px"
        )
    fmt = RUNTIME_FORMATS[runtime]
    if fmt not in entry["files"]:
        raise BundleError(
            f"{where}: field 'detector.files' has no {fmt} model for --runtime {runtime}; "
            f"it has {sorted(entry['files'])}"
        )
    return FaceDetector(runtime, entry["min_score"], bundle.root / entry["files"][fmt], entry["nms_iou"])


def open_model(
    bundle_dir: str | Path, runtime: str = "onnxruntime", variant: str | None = None, align: bool = False
) -> DeviceModel:
    """Load and verify the bundle, then start ``variant`` (default: the runtime's preferred one).

    ``align``: detect and align the face in each file (photos) instead of reading it as a crop.
    """
    bundle = load_bundle(bundle_dir)
    name = bundle.shipped_variant(variant or default_variant(bundle, runtime))
    fmt = bundle.variants[name]["format"]
    if fmt != RUNTIME_FORMATS[runtime]:
        raise BundleError(
            f"{bundle.root}: variant {name!r} is {fmt}; --runtime {runtime} runs {RUNTIME_FORMATS[runtime]} variants"
        )
    cropper = FaceCropper(face_detector(bundle, runtime), bundle.input_size) if align else None
    return DeviceModel(bundle, runtime, name, bundle.embedder(name, threads=1), cropper)
