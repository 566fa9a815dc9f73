"""Bias correction moves each quantised conv's int32 bias so that its output mean matches the float model's."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nptface.edge_export import onnx_export
from nptface.edge_export.bias_correction import output_means

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


def _mean_shift(float_path, quantised_path, images) -> float:
    """Largest |per-channel mean difference| of the last conv's output, quantised vs float."""
    feeds = onnx_export._calibration_batches(images, batch_size=16)
    reference = output_means(onnx.load(str(float_path)), ["c2"], feeds)["c2"]
    return float(np.abs(output_means(onnx.load(str(quantised_path)), ["c2"], feeds)["c2"] - reference).max())


def test_the_bias_corrected_onnx_int8_recipe_corrects_biases_and_says_so(write_conv_prelu_onnx, tmp_path):
    recipe = {r.label: r for r in onnx_export.INT8_RECIPES}["percentile-bias-corrected"]
    assert recipe.bias_correction and recipe.activation_bits == 8
    source = tmp_path / "tiny.onnx"
    write_conv_prelu_onnx(source)
    images = np.random.default_rng(1).integers(0, 256, (64, 8, 8, 3), dtype=np.uint8)
    plain, corrected = tmp_path / "plain.onnx", tmp_path / "corrected.onnx"
    onnx_export.quantize_int8(source, plain, images, onnx_export.Int8Recipe("percentile", "Percentile"))
    onnx_export.quantize_int8(source, corrected, images, recipe)

    from onnx import numpy_helper

    written = {p.key: p.value for p in onnx.load(str(corrected)).metadata_props}["nptface_quantization"]
    assert "bias correction" in json.loads(written)["recipe"]
    biases = [i for i in onnx.load(str(corrected)).graph.initializer if i.name.endswith("_bias_quantized")]
    assert len(biases) == 2, "both bias-less convs got an int32 bias to correct"
    assert all(numpy_helper.to_array(b).any() for b in biases), "the zero biases were moved"
    assert _mean_shift(source, corrected, images) < 0.5 * _mean_shift(source, plain, images)
