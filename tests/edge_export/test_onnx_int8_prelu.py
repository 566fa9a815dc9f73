"""An 8-bit-activation ONNX graph quantises PReLU: int8 slope, the node in a complete DequantizeLinear -> QuantizeLinear
unit (what NPU execution providers need); the int16-activation graph keeps the float slope it was gated with."""

from __future__ import annotations

import numpy as np
import pytest

from nptface.edge_export import onnx_export

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def _quantised(write_conv_prelu_onnx, tmp_path, recipe: onnx_export.Int8Recipe) -> onnx.ModelProto:
    source, out = tmp_path / "tiny.onnx", tmp_path / f"{recipe.label}.onnx"
    write_conv_prelu_onnx(source, batch=1)
    images = np.random.default_rng(1).integers(0, 256, (16, 8, 8, 3), dtype=np.uint8)
    onnx_export.quantize_int8(source, out, images, recipe)
    return onnx.load(str(out))


def _prelu_neighbours(model: onnx.ModelProto) -> tuple[list[str], list[str]]:
    """Op types feeding the PRelu (data, slope) and consuming its output."""
    producers = {output: node.op_type for node in model.graph.node for output in node.output}
    (prelu,) = [node for node in model.graph.node if node.op_type == "PRelu"]
    consumers = [node.op_type for node in model.graph.node if prelu.output[0] in node.input]
    return [producers.get(name, "initializer") for name in prelu.input], consumers


def test_int8_activations_put_prelu_and_its_slope_between_quantise_and_dequantise(write_conv_prelu_onnx, tmp_path):
    recipe = onnx_export.Int8Recipe("minmax", "MinMax")
    model = _quantised(write_conv_prelu_onnx, tmp_path, recipe)
    inputs, consumers = _prelu_neighbours(model)

    assert inputs == ["DequantizeLinear", "DequantizeLinear"]
    assert consumers == ["QuantizeLinear"]
    assert "PReLU quantised" in recipe.describe()
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert session.run(None, {onnx_export.INPUT_NAME: np.ones((1, 3, 8, 8), np.float32)})[0].shape == (1, 4)


def test_int16_activations_leave_the_prelu_slope_float(write_conv_prelu_onnx, tmp_path):
    recipe = onnx_export.Int8Recipe("minmax-int16", "MinMax", activation_bits=16)
    inputs, _ = _prelu_neighbours(_quantised(write_conv_prelu_onnx, tmp_path, recipe))

    assert inputs == ["DequantizeLinear", "initializer"]
    assert "PReLU" not in recipe.describe()
