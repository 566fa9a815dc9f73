"""The parity gate on real faces: ORL as the evaluation set, Georgia Tech crops as calibration (skipped without them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nptface.edge_export.bundle import load_bundle
from nptface.edge_export.onnx_export import INT8_RECIPES
from nptface.edge_export.pipeline import ExportOptions, export_run

DATA = Path(__file__).resolve().parents[2].parent / "shared/data"
EVALUATION = DATA / "orl_faces"  # 40 people x 10 images
CALIBRATION = DATA / "lowres/gt"  # 50 other people x 15 images

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (EVALUATION.is_dir() and CALIBRATION.is_dir()),
        reason="real faces not present under ../shared/data (orl_faces, lowres/gt)",
    ),
]


def test_export_judges_int8_on_held_out_real_faces(tiny_run, tmp_path):
    options = ExportOptions(
        formats=("onnx",),
        precisions=("fp32", "int8"),
        latency_repeats=1,
        allow_partial=True,
        onnx_int8_recipes=INT8_RECIPES[:1],
    )
    result = export_run(
        tiny_run, tmp_path / "b", calibration=str(CALIBRATION), evaluation=str(EVALUATION), options=options
    )
    by_name = {v.name: v for v in result.variants}
    assert by_name["onnx-fp32"].passed, "fp32 ONNX makes the PyTorch model's decisions on real faces too"
    int8 = by_name["onnx-int8"]
    assert int8.final.numerics.activations == "int8"
    assert 0 < int8.final.report.mean_cos <= 1 and 0 <= int8.final.report.flip_share <= 1
    manifest = load_bundle(result.bundle_dir).manifest
    assert manifest["evaluation"]["source"] == str(EVALUATION) and manifest["evaluation"]["images"] == 400
    assert manifest["calibration"]["images"] == 750
