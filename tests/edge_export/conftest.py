"""A hand-built ONNX graph for the int8 tests: small enough to quantise in a second, with the op mix
(Conv, PRelu, Conv, a global mean) whose quantisation the export has to get right."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture
def write_conv_prelu_onnx() -> Callable[..., None]:
    """Writes Conv -> PRelu -> Conv -> global mean (8x8 RGB in, 4 out, no biases, as the exporter writes
    all-zero ones) to ``path``; ``batch`` is the batch dimension (a name makes it dynamic)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    from nptface.edge_export import onnx_export

    def write(path: Path, batch: int | str = "batch") -> None:
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
            [helper.make_tensor_value_info(onnx_export.INPUT_NAME, TensorProto.FLOAT, [batch, 3, 8, 8])],
            [helper.make_tensor_value_info(onnx_export.OUTPUT_NAME, TensorProto.FLOAT, [batch, 4])],
            [numpy_helper.from_array(v, k) for k, v in weights.items()],
        )
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))

    return write
