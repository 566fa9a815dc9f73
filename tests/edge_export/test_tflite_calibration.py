"""Full-integer .tflite ranges span every calibration image, so no calibration face clips its input or output."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nptface.core.mobilefacenet import MobileFaceNet, fuse_bn
from nptface.core.preprocess import normalize


def _int8_span(details: dict) -> tuple[float, float, float]:
    """(lowest, highest, step) an int8 tensor can represent with its scale and zero point."""
    scale, zero_point = details["quantization"]
    return (-128 - zero_point) * scale, (127 - zero_point) * scale, scale


def test_an_early_extreme_face_still_sets_the_int8_input_and_output_ranges(tmp_path):
    """One full-contrast image followed by dull ones: a running average of per-image ranges would
    forget the first and clip it; the ranges must be the min/max over all of them."""
    pytest.importorskip("litert_torch")
    pytest.importorskip("ai_edge_quantizer")
    from ai_edge_litert.interpreter import Interpreter

    from nptface.edge_export import tflite_export

    torch.manual_seed(0)
    model = fuse_bn(MobileFaceNet(width=0.25, input_size=32, embedding_dim=16).eval())
    rng = np.random.default_rng(0)
    extreme = rng.integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
    extreme[0, 0, 0], extreme[0, 0, 1] = 0, 255
    dull = rng.integers(110, 146, (11, 32, 32, 3), dtype=np.uint8)
    images = np.concatenate([extreme, dull])
    recipe = next(r for r in tflite_export.INT8_RECIPES if r.label == "int8")
    fp32, int8 = tmp_path / "fp32.tflite", tmp_path / "int8.tflite"
    tflite_export.export_fp32(model, fp32, 32)
    tflite_export.quantize(fp32, int8, recipe, images)

    interpreter = Interpreter(model_path=str(int8))
    low, high, step = _int8_span(interpreter.get_input_details()[0])
    assert interpreter.get_input_details()[0]["dtype"] == np.int8
    assert low <= -1 + step / 2 and high >= 1 - step / 2  # every pixel value, 0 to 255, is representable

    with torch.no_grad():
        outputs = model(normalize(images)).numpy()
    low, high, step = _int8_span(interpreter.get_output_details()[0])
    assert interpreter.get_output_details()[0]["dtype"] == np.int8
    assert low - step <= outputs.min() and outputs.max() <= high + step
