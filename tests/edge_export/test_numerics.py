"""Variant names and fields tell the truth about precision: "int8" always means 8-bit activations."""

from __future__ import annotations

from nptface.edge_export import coreml_export, onnx_export, tflite_export
from nptface.edge_export.model_card import _variant_rows
from nptface.edge_export.numerics import upgrade_variant
from nptface.edge_export.parity import DEFAULT_LIMITS

OLD_ONNX_INT8 = {
    "name": "onnx-int8",
    "format": "onnx",
    "precision": "int8",
    "file": "models/onnx-int8.onnx",
    "recipe": "static QDQ, MinMax calibration, per-channel, reduce_range, int16 activations",
}


def test_every_recipe_names_its_weight_and_activation_precision():
    onnx = {r.label: r.numerics.to_dict() for r in onnx_export.INT8_RECIPES}
    assert onnx["minmax"] == {"weights": "int8", "activations": "int8"}
    assert onnx["minmax-int16-activations"] == {"weights": "int8", "activations": "int16"}
    assert onnx["minmax-float-ends"]["activations"] == "int8, first/last conv fp32"
    tflite = {r.label: r.numerics.to_dict() for r in tflite_export.INT8_RECIPES}
    assert tflite["int8"] == {"weights": "int8", "activations": "int8"}
    assert tflite["int8-int16-activations"]["activations"] == "int16"
    assert tflite_export.INT8_DYNAMIC.numerics.activations.startswith("fp32")
    assert {r.label: r.numerics.weights for r in coreml_export.RECIPES} == {
        "fp16": "fp16",
        "int8": "int8",
        "palette6": "palette6",
    }
    assert DEFAULT_LIMITS["w8a16"] == DEFAULT_LIMITS["int8"], "the fallback is judged by the same gate"


def test_an_old_bundles_int16_activation_int8_variant_is_read_as_w8a16():
    upgraded = upgrade_variant(OLD_ONNX_INT8)
    assert upgraded["name"] == "onnx-w8a16" and upgraded["precision"] == "w8a16"
    assert (upgraded["weights"], upgraded["activations"]) == ("int8", "int16")
    assert upgraded["file"] == OLD_ONNX_INT8["file"], "the file on disk keeps its hashed name"


def test_old_variants_without_precision_fields_get_them_from_their_recipe():
    true_int8 = upgrade_variant({**OLD_ONNX_INT8, "recipe": "static QDQ, MinMax calibration, per-channel"})
    assert true_int8["name"] == "onnx-int8" and true_int8["activations"] == "int8"
    dynamic = upgrade_variant(
        {
            "name": "tflite-int8-dynamic",
            "format": "tflite",
            "precision": "int8",
            "recipe": "int8 per-channel weights, activations quantised at run time (dynamic range)",
        }
    )
    assert dynamic["activations"] == "fp32 (int8 at run time)"
    assert upgrade_variant({"name": "x", "precision": "fp16", "recipe": "fp16"})["activations"] == "fp16"
    current = {**OLD_ONNX_INT8, "weights": "int8", "activations": "int16"}
    assert upgrade_variant(current) is current, "a current manifest is read as written"


def test_model_card_shows_weights_and_activations_per_file():
    variant = {
        **OLD_ONNX_INT8,
        "size_bytes": 2048,
        "latency_ms_1thread_batch1": None,
        "parity": {"mean_cos": 0.999, "accuracy_drop": 0.0},
        "layout": "NCHW",
        "batch": "dynamic",
    }
    header, _, row = _variant_rows({"variants": [variant]})
    assert "| weights | activations |" in header
    assert "| int8 | int16 |" in row
