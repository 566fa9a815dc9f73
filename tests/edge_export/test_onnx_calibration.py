"""The calibration method chosen for ONNX int8 is the one applied: Entropy and Percentile set other ranges than MinMax."""

from __future__ import annotations

import numpy as np
import pytest

from nptface.edge_export import onnx_export

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


def _activation_scales(path) -> dict[str, float]:
    from onnx import numpy_helper

    model = onnx.load(str(path))
    return {
        i.name: float(numpy_helper.to_array(i))
        for i in model.graph.initializer
        if i.name.endswith("_scale") and numpy_helper.to_array(i).size == 1 and not i.name.startswith("w")
    }


def test_entropy_and_percentile_calibration_give_other_activation_scales_than_minmax(write_conv_prelu_onnx, tmp_path):
    source = tmp_path / "tiny.onnx"
    write_conv_prelu_onnx(source, batch=1)
    images = np.random.default_rng(1).integers(0, 256, (64, 8, 8, 3), dtype=np.uint8)
    scales = {}
    for method in onnx_export.CALIBRATION_METHODS:
        out = tmp_path / f"{method}.onnx"
        onnx_export.quantize_int8(source, out, images, onnx_export.Int8Recipe(method.lower(), method))
        scales[method] = _activation_scales(out)
    assert scales["MinMax"] and set(scales["Entropy"]) == set(scales["MinMax"])
    for method in ("Entropy", "Percentile"):
        differing = [k for k in scales["MinMax"] if not np.isclose(scales[method][k], scales["MinMax"][k], rtol=1e-3)]
        assert differing, f"{method} calibration gave MinMax's activation scales: {scales[method]}"
    clipped = [k for k in scales["MinMax"] if scales["Entropy"][k] < scales["MinMax"][k] * 0.999]
    assert clipped, "Entropy clips some tensor's outliers, so some scale is smaller than MinMax's"


def test_an_unknown_calibration_method_is_refused_by_name(write_conv_prelu_onnx, tmp_path):
    source = tmp_path / "tiny.onnx"
    write_conv_prelu_onnx(source, batch=1)
    with pytest.raises(ValueError, match="'Median'"):
        onnx_export.calibrate(source, np.zeros((2, 8, 8, 3), np.uint8), "Median", tmp_path / "ranges.json")
