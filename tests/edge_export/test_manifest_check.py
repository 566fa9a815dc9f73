"""A bundle's manifest values are checked before use: types, ranges, and thresholds ordered over FAR."""

from __future__ import annotations

import copy
import json
import re

import pytest

from nptface.core.alignment import template_points
from nptface.edge_export.bundle import FORMAT, MANIFEST, VERSION, BundleError, load_bundle

VALID = {
    "format": FORMAT,
    "version": VERSION,
    "input": {"size": [112, 112], "normalization": {"mean": 127.5, "std": 127.5}},
    "embedding": {"size": 256, "metric": "cosine"},
    "thresholds": {"cosine": {"1e-04": 0.45, "1e-03": 0.38, "1e-02": 0.30}},
    "variants": [{"name": "onnx-fp32", "file": "models/onnx-fp32.onnx", "format": "onnx"}],
    "files": {},
    "source": {"checkpoint_sha256": "0" * 64},
}


def _bundle(tmp_path, edit=None):
    manifest = copy.deepcopy(VALID)
    if edit is not None:
        edit(manifest)
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    return tmp_path


def test_a_valid_manifest_loads_and_gives_its_thresholds(tmp_path):
    bundle = load_bundle(_bundle(tmp_path))
    assert bundle.threshold(1e-3) == 0.38 and bundle.input_size == 112


@pytest.mark.parametrize(
    "edit,field",
    [
        (lambda m: m["thresholds"]["cosine"].update({"1e-03": -1.5}), "thresholds.cosine['1e-03']"),
        (lambda m: m["thresholds"]["cosine"].update({"1e-03": float("nan")}), "thresholds.cosine['1e-03']"),
        (lambda m: m["thresholds"]["cosine"].update({"1e-03": "0.4"}), "thresholds.cosine['1e-03']"),
        (lambda m: m["thresholds"]["cosine"].update({"1e-03": True}), "thresholds.cosine['1e-03']"),
        (lambda m: m["thresholds"]["cosine"].update({"1e-03": 0.5}), "thresholds.cosine['1e-04']"),  # out of order
        (lambda m: m["thresholds"]["cosine"].update({"often": 0.1}), "thresholds.cosine['often']"),
        (lambda m: m["thresholds"].update({"cosine": {}}), "thresholds.cosine"),
        (lambda m: m["input"].update({"size": [112, 96]}), "input.size"),
        (lambda m: m["input"].update({"size": ["112", "112"]}), "input.size"),
        (lambda m: m["input"]["normalization"].update({"std": 0}), "input.normalization.std"),
        (lambda m: m["embedding"].update({"size": 0}), "embedding.size"),
        (lambda m: m["embedding"].update({"metric": "euclidean"}), "embedding.metric"),
        (lambda m: m["variants"][0].update({"format": "tensorrt"}), "variants[0].format"),
        (lambda m: m["variants"][0].update({"file": 3}), "variants[0].file"),
        (lambda m: m["variants"].append(dict(m["variants"][0])), "variants[1].name"),
        (lambda m: m["files"].update({"x": {"sha256": "abc", "size": 1}}), "files['x'].sha256"),
        (lambda m: m["source"].update({"checkpoint_sha256": None}), "source.checkpoint_sha256"),
    ],
)
def test_untrustworthy_manifest_values_are_refused_naming_the_field(tmp_path, edit, field):
    with pytest.raises(BundleError, match=f"field {__import__('re').escape(repr(field))} must be"):
        load_bundle(_bundle(tmp_path, edit))


DETECTOR = {
    "name": "blazeface-full-range",
    "files": {"onnx": "detector/d.onnx"},
    "input_size": 192,
    "min_score": 0.5,
    "nms_iou": 0.3,
    "keypoints": ["right_eye", "left_eye", "nose_tip", "mouth_centre"],
    "alignment": {"template": template_points(112, mouth="centre").tolist(), "size": 112, "mouth": "centre"},
    "licence": "Apache-2.0",
    "source": "MediaPipe",
}


def _with_detector(edit=None):
    def apply(manifest):
        manifest["detector"] = copy.deepcopy(DETECTOR)
        manifest["files"]["detector/d.onnx"] = {"sha256": "2" * 64, "size": 10}
        if edit is not None:
            edit(manifest["detector"])

    return apply


def test_a_valid_detector_entry_loads(tmp_path):
    assert load_bundle(_bundle(tmp_path, _with_detector()), verify=False).detector["name"] == "blazeface-full-range"


@pytest.mark.parametrize(
    "edit,field",
    [
        (lambda d: d["files"].update({"tflite": "detector/unlisted.tflite"}), "detector.files['tflite']"),
        (lambda d: d.update({"files": {}}), "detector.files"),
        (lambda d: d.update({"min_score": 1.5}), "detector.min_score"),
        (lambda d: d.update({"nms_iou": "0.3"}), "detector.nms_iou"),
        (lambda d: d.update({"input_size": 0}), "detector.input_size"),
        (lambda d: d.update({"licence": ""}), "detector.licence"),
        (lambda d: d.update({"keypoints": "eyes"}), "detector.keypoints"),
        (lambda d: d["alignment"].update({"size": 96}), "detector.alignment.size"),
        (lambda d: d["alignment"].update({"mouth": "open"}), "detector.alignment.mouth"),
        (lambda d: d["alignment"]["template"].pop(), "detector.alignment.template"),
        (lambda d: d["alignment"]["template"][0].__setitem__(0, 40.0), "detector.alignment.template"),
        (lambda d: d["alignment"]["template"][0].__setitem__(0, None), "detector.alignment.template"),
    ],
)
def test_untrustworthy_detector_values_are_refused_naming_the_field(tmp_path, edit, field):
    with pytest.raises(BundleError, match=f"field {re.escape(repr(field))} must be"):
        load_bundle(_bundle(tmp_path, _with_detector(edit)))


POINT = {
    "cosine": {"1e-03": 0.6, "1e-02": 0.5},
    "identities": 20,
    "images": 200,
    "pairs": {"genuine": 900, "impostor": 19_000},
    "data_sha256": "1" * 64,
    "checkpoint_sha256": "0" * 64,
    "created": "2026-01-01T00:00:00+00:00",
}


def _with_point(edit=None):
    def apply(manifest):
        manifest["operating_points"] = {"mine": copy.deepcopy(POINT)}
        if edit is not None:
            edit(manifest["operating_points"]["mine"], manifest)

    return apply


def test_a_calibrated_operating_point_is_the_default_and_export_stays_available(tmp_path):
    bundle = load_bundle(_bundle(tmp_path, _with_point()))
    assert list(bundle.operating_points) == ["export", "mine"] and bundle.default_operating_point == "mine"
    assert bundle.threshold(1e-3) == 0.6 and bundle.threshold(1e-3, "export") == 0.38


@pytest.mark.parametrize(
    "edit,field",
    [
        (lambda p, m: p["cosine"].update({"1e-03": 0.4}), "operating_points['mine'].cosine['1e-03']"),  # out of order
        (lambda p, m: p["cosine"].update({"1e-02": float("inf")}), "operating_points['mine'].cosine['1e-02']"),
        (lambda p, m: p["pairs"].update({"impostor": 999}), "operating_points['mine'].pairs.impostor"),  # < 1/FAR
        (lambda p, m: p.update({"data_sha256": "abc"}), "operating_points['mine'].data_sha256"),
        (lambda p, m: p.update({"checkpoint_sha256": "f" * 64}), "operating_points['mine'].checkpoint_sha256"),
        (lambda p, m: p.update({"identities": 0}), "operating_points['mine'].identities"),
        (lambda p, m: m["operating_points"].update({"export": p}), "operating_points['export']"),
        (lambda p, m: m["operating_points"].update({"../x": p}), "operating_points['../x']"),
    ],
)
def test_untrustworthy_operating_points_are_refused_naming_the_field(tmp_path, edit, field):
    with pytest.raises(BundleError, match=f"field {__import__('re').escape(repr(field))} must be"):
        load_bundle(_bundle(tmp_path, _with_point(edit)))
