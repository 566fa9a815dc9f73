"""Which rejected variants make ``nptface export`` fail: those whose format and precision nothing else delivers."""

from __future__ import annotations

from pathlib import Path

from nptface.edge_export.parity import DEFAULT_LIMITS, EvalScores, ParityReport
from nptface.edge_export.pipeline import Attempt, ExportResult, VariantResult, _table

REPORT = ParityReport(0.99, 0.96, 0.9, 0.9, 0.1, 0.5, 0.2, 0.004, 1.0, 0.6)


def _variant(name: str, fmt: str, precision: str, passed: bool, size_bytes: int = 0) -> VariantResult:
    failures = [] if passed else ["flips 1.2 % > 1 %"]
    attempt = Attempt("minmax", "static QDQ", REPORT, failures)
    return VariantResult(
        name,
        fmt,
        precision,
        f"models/{name}",
        "minmax",
        "onnxruntime",
        [attempt],
        DEFAULT_LIMITS["int8"],
        passed,
        size_bytes=size_bytes,
        recipe_label="minmax",
    )


def _result(*variants: VariantResult) -> ExportResult:
    return ExportResult(Path("bundle"), list(variants), reference_scores=None, table="", torch_ms=0.0)


def test_a_rejected_post_training_int8_is_met_by_a_passing_qat_int8_of_the_same_format():
    result = _result(_variant("onnx-int8", "onnx", "int8", False), _variant("onnx-int8-qat", "onnx", "int8", True))
    assert [v.name for v in result.rejected] == ["onnx-int8"], "still reported, and kept in rejected/"
    assert result.unmet == []


def test_an_int16_activation_fallback_does_not_meet_an_int8_request():
    result = _result(_variant("onnx-int8", "onnx", "int8", False), _variant("onnx-w8a16", "onnx", "w8a16", True))
    assert [v.name for v in result.unmet] == ["onnx-int8"]


def test_a_passing_int8_of_another_format_does_not_meet_it_either():
    result = _result(_variant("onnx-int8", "onnx", "int8", False), _variant("tflite-int8", "tflite", "int8", True))
    assert [v.name for v in result.unmet] == ["onnx-int8"]
    both_rejected = _result(
        _variant("onnx-int8", "onnx", "int8", False), _variant("onnx-int8-qat", "onnx", "int8", False)
    )
    assert [v.name for v in both_rejected.unmet] == ["onnx-int8", "onnx-int8-qat"]


def test_the_table_gives_each_file_s_size_against_its_own_format_s_fp32_file():
    variants = [
        _variant("onnx-fp32", "onnx", "fp32", True, 4_000_000),
        _variant("onnx-int8", "onnx", "int8", True, 1_100_000),
        _variant("tflite-int8", "tflite", "int8", True, 1_000_000),  # no tflite-fp32 here: no ratio
    ]
    rows = {line.split("|")[1].strip(): line for line in _table(variants, EvalScores(0.9, 0.5, {}), 1.0).splitlines()}
    assert "| x fp32 size |" in rows["variant"]
    assert "| 1.00x |" in rows["onnx-fp32"] and "| 0.28x |" in rows["onnx-int8"]
    assert "| 977 KiB | - |" in rows["tflite-int8"]
