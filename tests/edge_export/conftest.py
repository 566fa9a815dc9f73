"""A bundle of the session's tiny model (ONNX + TFLite, fp32), shared by the export and demo tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def fp32_bundle(tiny_run, tiny_sets, tmp_path_factory) -> Path:
    from nptface.edge_export.pipeline import ExportOptions, export_bundle

    evaluation, calibration = tiny_sets
    out = tmp_path_factory.mktemp("fp32") / "bundle"
    export_bundle(tiny_run, out, evaluation, calibration,
                  ExportOptions(formats=("onnx", "tflite"), precisions=("fp32",), latency_repeats=1))
    return out
