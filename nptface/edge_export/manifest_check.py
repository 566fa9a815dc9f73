"""Every value a bundle's manifest hands to a reader, checked before it is used.

A manifest is data from disk: a threshold of -1 would make everyone match, NaN would make nobody
match, and a string would fail deep inside a comparison. So each field that :func:`load_bundle`
and the runtimes read is checked here for type and range, and the thresholds for order too: a
stricter operating point (a smaller FAR) can only ask for a higher cosine. Each error names the
manifest and the field. Operating points calibrated later on the user's own faces
(``operating_points``, written by ``nptface calibrate``) are held to the same rules, and must also
name the checkpoint they were calibrated with and count enough impostor pairs to observe each FAR.
A shipped face detector (``detector``, absent from older bundles) must name hashed files and align
onto the template the embedder was trained on, at the bundle's input size.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from nptface.core.alignment import template_points

FORMATS = ("onnx", "tflite", "coreml")
MOUTHS = ("corners", "centre")
# The operating point that ``thresholds`` holds (calibrated at export); calibrated ones may not take its name.
EXPORT_POINT = "export"
OPERATING_POINT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


class ManifestValueError(ValueError):
    """A manifest field with a value of the wrong type, out of range, or out of order."""


def check_manifest(manifest: dict[str, Any], path: Path) -> None:
    """Raise :class:`ManifestValueError` naming the first field of ``manifest`` a reader cannot trust."""

    def fail(field: str, expected: str, value: Any) -> None:
        raise ManifestValueError(f"{path}: field {field!r} must be {expected}, got {value!r}")

    def number(field: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            fail(field, "a finite number", value)
        return float(value)

    def positive_int(field: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            fail(field, "a positive integer", value)
        return value

    def table(field: str, value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            fail(field, "a JSON object", value)
        return value

    size = table("input", manifest["input"]).get("size")
    if not (isinstance(size, list) and len(size) == 2 and size[0] == size[1]):
        fail("input.size", "[side, side]", size)
    positive_int("input.size", size[0])
    normalization = manifest["input"].get("normalization")
    if normalization is not None:
        number("input.normalization.mean", table("input.normalization", normalization).get("mean"))
        if number("input.normalization.std", normalization.get("std")) <= 0:
            fail("input.normalization.std", "> 0", normalization.get("std"))
    embedding = table("embedding", manifest["embedding"])
    positive_int("embedding.size", embedding.get("size"))
    if embedding.get("metric", "cosine") != "cosine":
        fail("embedding.metric", '"cosine"', embedding.get("metric"))
    _check_thresholds(
        "thresholds.cosine",
        table("thresholds.cosine", table("thresholds", manifest["thresholds"]).get("cosine")),
        fail,
        number,
    )
    variants = manifest["variants"]
    if not isinstance(variants, list):
        fail("variants", "a list", variants)
    names = set()
    for i, variant in enumerate(variants):
        table(f"variants[{i}]", variant)
        for key in ("name", "file"):
            if not isinstance(variant.get(key), str) or not variant[key]:
                fail(f"variants[{i}].{key}", "a non-empty string", variant.get(key))
        if variant.get("format") not in FORMATS:
            fail(f"variants[{i}].format", f"one of {FORMATS}", variant.get("format"))
        if variant["name"] in names:
            fail(f"variants[{i}].name", "unique", variant["name"])
        names.add(variant["name"])
    for name, entry in table("files", manifest["files"]).items():
        table(f"files[{name!r}]", entry)
        if not isinstance(entry.get("sha256"), str) or not _SHA256.fullmatch(entry["sha256"]):
            fail(f"files[{name!r}].sha256", "64 lowercase hex digits", entry.get("sha256"))
        if isinstance(entry.get("size"), bool) or not isinstance(entry.get("size"), int) or entry["size"] < 0:
            fail(f"files[{name!r}].size", "a byte count (an integer >= 0)", entry.get("size"))
    detector = manifest.get("detector")
    if detector is not None:
        _check_detector(detector, size[0], manifest["files"], fail, number, positive_int, table)
    source = manifest.get("source")
    if source is not None and not isinstance(table("source", source).get("checkpoint_sha256"), str):
        fail("source.checkpoint_sha256", "a string", source.get("checkpoint_sha256"))
    points = manifest.get("operating_points")
    if points is not None:
        checkpoint = (source or {}).get("checkpoint_sha256")
        for name, point in table("operating_points", points).items():
            _check_operating_point(name, point, checkpoint, fail, number, positive_int, table)


def _check_detector(
    detector: Any, input_size: int, files: dict[str, Any], fail: Any, number: Any, positive_int: Any, table: Any
) -> None:
    table("detector", detector)
    for key in ("name", "licence", "source"):
        if not isinstance(detector.get(key), str) or not detector[key]:
            fail(f"detector.{key}", "a non-empty string", detector.get(key))
    models = table("detector.files", detector.get("files"))
    if not models:
        fail("detector.files", "at least one format -> file entry", models)
    for fmt, name in models.items():
        if name not in files:
            fail(f"detector.files[{fmt!r}]", "a file listed (and hashed) in the manifest's files", name)
    positive_int("detector.input_size", detector.get("input_size"))
    if not 0 < number("detector.min_score", detector.get("min_score")) < 1:
        fail("detector.min_score", "a score in (0, 1)", detector.get("min_score"))
    if not 0 < number("detector.nms_iou", detector.get("nms_iou")) <= 1:
        fail("detector.nms_iou", "an IoU in (0, 1]", detector.get("nms_iou"))
    keypoints = detector.get("keypoints")
    if not isinstance(keypoints, list) or not all(isinstance(k, str) and k for k in keypoints):
        fail("detector.keypoints", "a list of keypoint names", keypoints)
    alignment = table("detector.alignment", detector.get("alignment"))
    if alignment.get("size") != input_size:
        fail("detector.alignment.size", f"the bundle's input size {input_size}", alignment.get("size"))
    if alignment.get("mouth") not in MOUTHS:
        fail("detector.alignment.mouth", f"one of {MOUTHS}", alignment.get("mouth"))
    # The CLI and the page align onto this template; a bundle asking for another would be embedded misaligned.
    expected = template_points(input_size, mouth=alignment["mouth"])
    template = alignment.get("template")
    shaped = isinstance(template, list) and len(template) == len(expected)
    if not shaped or not all(isinstance(p, list) and len(p) == 2 for p in template):
        fail("detector.alignment.template", f"{len(expected)} [x, y] points", template)
    points = np.array([[number("detector.alignment.template", v) for v in point] for point in template])
    if np.abs(points - expected).max() > 1e-3:
        fail(
            "detector.alignment.template",
            f"template_points({input_size}, mouth={alignment['mouth']!r}) = {expected.round(4).tolist()}",
            template,
        )


def _check_operating_point(
    name: str, point: Any, checkpoint: str | None, fail: Any, number: Any, positive_int: Any, table: Any
) -> None:
    where = f"operating_points[{name!r}]"
    if name == EXPORT_POINT or not OPERATING_POINT_NAME.fullmatch(name):
        fail(where, f"named by 1-64 letters, digits, '.', '_' or '-' (not {EXPORT_POINT!r})", name)
    table(where, point)
    thresholds = table(f"{where}.cosine", point.get("cosine"))
    _check_thresholds(f"{where}.cosine", thresholds, fail, number)
    positive_int(f"{where}.identities", point.get("identities"))
    positive_int(f"{where}.images", point.get("images"))
    pairs = table(f"{where}.pairs", point.get("pairs"))
    positive_int(f"{where}.pairs.genuine", pairs.get("genuine"))
    impostor = positive_int(f"{where}.pairs.impostor", pairs.get("impostor"))
    for key in thresholds:
        if impostor * float(key) < 1:
            fail(f"{where}.pairs.impostor", f"at least {math.ceil(1 / float(key))} to calibrate FAR={key}", impostor)
    data_sha256 = point.get("data_sha256")
    if not isinstance(data_sha256, str) or not _SHA256.fullmatch(data_sha256):
        fail(f"{where}.data_sha256", "64 lowercase hex digits", data_sha256)
    if point.get("checkpoint_sha256") != checkpoint:
        fail(
            f"{where}.checkpoint_sha256",
            f"this bundle's source.checkpoint_sha256 ({checkpoint})",
            point.get("checkpoint_sha256"),
        )
    if not isinstance(point.get("created"), str):
        fail(f"{where}.created", "an ISO 8601 time", point.get("created"))


def _check_thresholds(field: str, thresholds: dict[str, Any], fail: Any, number: Any) -> None:
    if not thresholds:
        fail(field, "at least one FAR -> threshold entry", thresholds)
    by_far = []
    for key, value in thresholds.items():
        try:
            far = float(key)
        except ValueError:
            far = math.nan
        if not 0 < far < 1:
            fail(f"{field}[{key!r}]", "keyed by a false accept rate in (0, 1), like '1e-03'", key)
        threshold = number(f"{field}[{key!r}]", value)
        if not -1 <= threshold <= 1:
            fail(f"{field}[{key!r}]", "a cosine in [-1, 1]", value)
        by_far.append((far, key, threshold))
    by_far.sort()
    for (_, stricter, high), (_, looser, low) in zip(by_far, by_far[1:]):
        if high < low:
            fail(
                f"{field}[{stricter!r}]",
                f"at least the threshold at the looser FAR {looser} ({low}): a stricter FAR needs a higher cosine",
                high,
            )
