"""The calibration method chosen for ONNX int8 is the one applied: Entropy and Percentile set other ranges than MinMax."""

from __future__ import annotations

import numpy as np
import pytest

from nptface.edge_export import onnx_export

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


def _tiny_model(path) -> None:
    """Conv -> PRelu -> Conv -> global mean, 8x8 RGB input: small enough to build by hand."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = {
        "w1": rng.normal(0, 0.5, (4, 3, 3, 3)).astype(np.float32),
        "slope": np.full((4, 1, 1), 0.25, np.float32),
        "w2": rng.normal(0, 0.5, (4, 4, 3, 3)).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["input", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("PRelu", ["c1", "slope"], ["p1"], name="prelu"),
        helper.make_node("Conv", ["p1", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("ReduceMean", ["c2"], [onnx_export.OUTPUT_NAME], name="pool", axes=[2, 3], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info(onnx_export.INPUT_NAME, TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info(onnx_export.OUTPUT_NAME, TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def _activation_scales(path) -> dict[str, float]:
    from onnx import numpy_helper

    model = onnx.load(str(path))
    return {
        i.name: float(numpy_helper.to_array(i))
        for i in model.graph.initializer
        if i.name.endswith("_scale") and numpy_helper.to_array(i).size == 1 and not i.name.startswith("w")
    }


def test_entropy_and_percentile_calibration_give_other_activation_scales_than_minmax(tmp_path):
    source = tmp_path / "tiny.onnx"
    _tiny_model(source)
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


def test_an_unknown_calibration_method_is_refused_by_name(tmp_path):
    source = tmp_path / "tiny.onnx"
    _tiny_model(source)
    with pytest.raises(ValueError, match="'Median'"):
        onnx_export.calibrate(source, np.zeros((2, 8, 8, 3), np.uint8), "Median", tmp_path / "ranges.json")
