"""Variant names and fields tell the truth about precision: "int8" always means 8-bit activations."""

from __future__ import annotations

import pytest

from nptface.edge_export import coreml_export, onnx_export, tflite_export
from nptface.edge_export.model_card import _variant_rows
from nptface.edge_export.numerics import (
    FP16,
    FP32,
    RENAMED_VARIANTS,
    W8_DYNAMIC,
    W8_FP16,
    W8A8,
    W8A16,
    Numerics,
    precision_label,
    upgrade_variant,
    variant_name,
)
from nptface.edge_export.parity import DEFAULT_LIMITS

OLD_ONNX_INT8 = {
    "name": "onnx-int8",
    "format": "onnx",
    "precision": "int8",
    "file": "models/onnx-int8.onnx",
    "recipe": "static QDQ, MinMax calibration, per-channel, reduce_range, int16 activations",
}
# As the exporter wrote them before the renames: with weights/activations (the version just before) ...
OLD_TFLITE_DYNAMIC = {
    "name": "tflite-int8-dynamic",
    "format": "tflite",
    "precision": "int8",
    "weights": "int8",
    "activations": "fp32 (int8 at run time)",
    "file": "models/tflite-int8-dynamic.tflite",
    "recipe": "int8 per-channel weights, activations quantised at run time (dynamic range)",
}
OLD_COREML_INT8 = {
    "name": "coreml-int8",
    "format": "coreml",
    "precision": "int8",
    "weights": "int8",
    "activations": "fp16",
    "file": "models/coreml-int8.mlpackage",
    "recipe": "ML Program, int8 linear (symmetric) weights",
}
# ... and without them (the version before that), read from the recipe text.
FIELDLESS = ("weights", "activations")


def _without_fields(variant: dict) -> dict:
    return {k: v for k, v in variant.items() if k not in FIELDLESS}


def test_every_recipe_names_its_weight_and_activation_precision():
    onnx = {r.label: r.numerics.to_dict() for r in onnx_export.INT8_RECIPES}
    assert onnx["minmax"] == {"weights": "int8", "activations": "int8"}
    assert onnx["minmax-int16-activations"] == {"weights": "int8", "activations": "int16"}
    assert onnx["minmax-float-ends"]["activations"] == "int8, first/last conv fp32"
    tflite = {r.label: r.numerics.to_dict() for r in tflite_export.INT8_RECIPES}
    assert tflite["int8"] == {"weights": "int8", "activations": "int8"}
    assert tflite["int8-int16-activations"]["activations"] == "int16"
    assert tflite_export.DYNAMIC_RANGE.numerics.activations.startswith("fp32")
    assert {r.label: r.numerics.weights for r in coreml_export.RECIPES} == {
        "fp16": "fp16",
        "linear8": "int8",
        "palette6": "palette6",
    }
    assert DEFAULT_LIMITS["w8a16"] == DEFAULT_LIMITS["int8"], "the fallback is judged by the same gate"


@pytest.mark.parametrize(
    ("fmt", "numerics", "name"),
    [
        ("onnx", FP32, "onnx-fp32"),
        ("onnx", FP16, "onnx-fp16"),
        ("onnx", W8A8, "onnx-int8"),
        ("onnx", Numerics("int8", "int8, first/last conv fp32"), "onnx-int8"),
        ("onnx", W8A16, "onnx-w8a16"),
        ("tflite", W8A8, "tflite-int8"),
        ("tflite", W8A16, "tflite-w8a16"),
        ("tflite", W8_DYNAMIC, "tflite-w8-dynamic"),
        ("coreml", FP16, "coreml-fp16"),
        ("coreml", W8_FP16, "coreml-w8"),
        ("coreml", Numerics("palette6", "fp16"), "coreml-palette6"),
    ],
)
def test_a_variant_is_named_int8_only_with_int8_weights_and_8_bit_activations(fmt, numerics, name):
    assert variant_name(fmt, numerics) == name
    assert ("int8" in name) == (numerics.weights == "int8" and numerics.activations.startswith("int8"))


def test_every_precision_label_has_a_gate_and_an_unknown_pair_has_no_name():
    recipes = [*onnx_export.INT8_RECIPES, *tflite_export.INT8_RECIPES, tflite_export.DYNAMIC_RANGE, tflite_export.FP16]
    labels = {precision_label(r.numerics) for r in [*recipes, *coreml_export.RECIPES]}
    assert labels == {"fp16", "int8", "w8a16", "w8-dynamic", "w8", "palette6"}
    assert labels <= set(DEFAULT_LIMITS), "every label the exporter writes is looked up in the gate's limits"
    with pytest.raises(ValueError, match="weights 'int4' with activations 'fp16'"):
        precision_label(Numerics("int4", "fp16"))


def test_an_old_bundles_int16_activation_int8_variant_is_read_as_w8a16():
    upgraded = upgrade_variant(OLD_ONNX_INT8)
    assert upgraded["name"] == "onnx-w8a16" and upgraded["precision"] == "w8a16"
    assert (upgraded["weights"], upgraded["activations"]) == ("int8", "int16")
    assert upgraded["file"] == OLD_ONNX_INT8["file"], "the file on disk keeps its hashed name"


@pytest.mark.parametrize("with_fields", [True, False], ids=["with-fields", "fieldless"])
@pytest.mark.parametrize(
    ("old", "name", "precision", "numerics"),
    [
        (OLD_TFLITE_DYNAMIC, "tflite-w8-dynamic", "w8-dynamic", W8_DYNAMIC),
        (OLD_COREML_INT8, "coreml-w8", "w8", W8_FP16),
    ],
    ids=["tflite-int8-dynamic", "coreml-int8"],
)
def test_an_old_bundles_int8_named_float_activation_variant_gets_its_truthful_name(
    old, name, precision, numerics, with_fields
):
    upgraded = upgrade_variant(old if with_fields else _without_fields(old))
    assert (upgraded["name"], upgraded["precision"]) == (name, precision)
    assert (upgraded["weights"], upgraded["activations"]) == (numerics.weights, numerics.activations)
    assert upgraded["file"] == old["file"], "the file on disk keeps its hashed name"
    assert RENAMED_VARIANTS[old["name"]] == name, "the CLI accepts the old name for the same variant"


def test_an_old_palettised_variant_keeps_its_name_and_loses_the_int8_label():
    old = {**OLD_COREML_INT8, "name": "coreml-palette6", "recipe": "ML Program, 6-bit k-means palettised weights"}
    upgraded = upgrade_variant(_without_fields(old))
    assert (upgraded["name"], upgraded["precision"], upgraded["weights"]) == ("coreml-palette6", "palette6", "palette6")


def test_old_variants_without_precision_fields_get_them_from_their_recipe():
    true_int8 = upgrade_variant({**OLD_ONNX_INT8, "recipe": "static QDQ, MinMax calibration, per-channel"})
    assert (true_int8["name"], true_int8["precision"], true_int8["activations"]) == ("onnx-int8", "int8", "int8")
    assert upgrade_variant({"name": "x", "precision": "fp16", "recipe": "fp16"})["activations"] == "fp16"


@pytest.mark.parametrize(
    "current",
    [
        {**OLD_ONNX_INT8, "name": "onnx-w8a16", "precision": "w8a16", "weights": "int8", "activations": "int16"},
        {**OLD_ONNX_INT8, "weights": "int8", "activations": "int8"},
        {**OLD_TFLITE_DYNAMIC, "name": "tflite-w8-dynamic", "precision": "w8-dynamic"},
        {**OLD_COREML_INT8, "name": "coreml-w8", "precision": "w8"},
    ],
    ids=lambda v: v["name"],
)
def test_a_current_variant_is_read_as_written(current):
    assert upgrade_variant(current) is current


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


def test_an_old_bundles_rejected_variants_are_listed_under_their_truthful_names():
    from nptface.edge_export.model_card import render_model_card

    from .test_model_card import SYNTHETIC, _manifest

    manifest = _manifest(SYNTHETIC)
    manifest["rejected"] = [{**OLD_ONNX_INT8, "failures": ["flips 1.4 % > 1 %"]}]
    card = render_model_card(manifest)
    assert "onnx-w8a16 (flips 1.4 % > 1 %)" in card
    assert "onnx-int8 (" not in card, "an int16-activation model is never labelled int8"
