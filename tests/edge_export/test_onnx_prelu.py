"""Native onnxruntime runs PReLU decomposed: same embeddings as the PRelu graph, which the shipped file keeps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nptface.core.mobilefacenet import MobileFaceNet, fuse_bn
from nptface.edge_export import onnx_export
from nptface.edge_export.onnx_prelu import decompose_prelu
from nptface.edge_export.runtimes import OnnxEmbedder, TorchEmbedder

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def _prelu_model(slope: np.ndarray) -> onnx.ModelProto:
    """Conv -> PRelu -> Conv on a 4-channel 6x6 map, the slope as the dynamo exporter stores it."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = {
        "w1": rng.normal(0, 0.5, (4, 3, 3, 3)).astype(np.float32),
        "slope": slope.astype(np.float32).reshape(1, 4, 1, 1),
        "w2": rng.normal(0, 0.5, (4, 4, 1, 1)).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["input", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("PRelu", ["c1", "slope"], ["p1"], name="prelu"),
        helper.make_node("Conv", ["p1", "w2"], [onnx_export.OUTPUT_NAME], name="conv2"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info(onnx_export.INPUT_NAME, TensorProto.FLOAT, ["batch", 3, 6, 6])],
        [helper.make_tensor_value_info(onnx_export.OUTPUT_NAME, TensorProto.FLOAT, ["batch", 4, 6, 6])],
        [numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _run(model: onnx.ModelProto, x: np.ndarray, level: str = "ORT_ENABLE_ALL") -> np.ndarray:
    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {onnx_export.INPUT_NAME: x})[0]


def _op_types(model: onnx.ModelProto) -> list[str]:
    return [node.op_type for node in model.graph.node]


@pytest.mark.parametrize(
    "slope",
    [np.array([0.25, 0.0, 0.9, -0.3]), np.array([0.25, 1.5, 0.9, -0.3])],
    ids=["slopes at most 1", "a slope above 1"],
)
@pytest.mark.parametrize("level", ["ORT_DISABLE_ALL", "ORT_ENABLE_ALL"])
def test_decomposed_prelu_computes_the_prelu_to_fp32_noise(slope, level):
    original = _prelu_model(slope)
    decomposed = decompose_prelu(original)
    onnx.checker.check_model(decomposed, full_check=True)
    x = np.random.default_rng(1).normal(0, 2, (3, 3, 6, 6)).astype(np.float32)

    assert "PRelu" not in _op_types(decomposed) and "PRelu" in _op_types(original)
    np.testing.assert_allclose(_run(decomposed, x, level), _run(original, x, level), rtol=1e-5, atol=1e-6)


def test_quantised_and_fp16_graphs_are_left_as_they_are():
    from onnx import numpy_helper

    fp16 = _prelu_model(np.array([0.25, 0.0, 0.9, -0.3]))
    slope = next(init for init in fp16.graph.initializer if init.name == "slope")
    slope.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(slope).astype(np.float16), "slope"))
    quantised = _prelu_model(np.array([0.25, 0.0, 0.9, -0.3]))
    quantised.graph.node.insert(0, onnx.helper.make_node("QuantizeLinear", ["input", "s"], ["q"]))

    assert decompose_prelu(fp16) == fp16
    assert decompose_prelu(quantised) == quantised


def test_onnx_embedder_runs_the_shipped_prelu_file_decomposed_and_matches_pytorch(tmp_path, monkeypatch):
    from nptface.edge_export import onnx_prelu

    ran: list[set[str]] = []

    def spy(model: onnx.ModelProto) -> onnx.ModelProto:
        out = decompose_prelu(model)
        ran.append({node.op_type for node in out.graph.node})
        return out

    monkeypatch.setattr(onnx_prelu, "decompose_prelu", spy)
    torch.manual_seed(0)
    model = MobileFaceNet(width=0.25, input_size=32, embedding_dim=16).eval()
    for module in model.modules():  # trained-looking slopes, one channel above 1
        if isinstance(module, torch.nn.PReLU):
            module.weight.data.uniform_(-0.2, 0.9)
    model.stem[0][2].weight.data[0] = 1.4
    fused = fuse_bn(model)
    path = tmp_path / "model.onnx"
    onnx_export.export_fp32(fused, path, 32, {})
    images = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)

    embedder = OnnxEmbedder(path, 32, threads=1)
    shipped = {node.op_type for node in onnx.load(str(path)).graph.node}
    expected = TorchEmbedder(fused, 32, threads=1).embed(images)

    assert "PRelu" in shipped and len(ran) == 1 and "PRelu" not in ran[0]
    np.testing.assert_allclose(embedder.embed(images), expected, atol=1e-5)
