"""The exact size trims of exported files: a trimmed file computes bit-identical outputs and is smaller.

Each file is built twice from the same tiny MobileFaceNet (non-zero BatchNorm statistics, so the
folded biases are real): once with the export's trim replaced by a no-op, once as the export
writes it; both run on the same input in the runtime that ships them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from nptface.core.mobilefacenet import MobileFaceNet, fuse_bn

SIZE = 32


@pytest.fixture(scope="module")
def fused() -> torch.nn.Module:
    torch.manual_seed(0)
    model = MobileFaceNet(width=0.25, input_size=SIZE, embedding_dim=16).eval()
    for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.normal_(0, 0.1)
        bn.running_mean.normal_(0, 0.1)
        bn.running_var.uniform_(0.5, 1.5)
    return fuse_bn(model)


@pytest.fixture(scope="module")
def faces() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (8, SIZE, SIZE, 3), dtype=np.uint8)


def test_onnx_fp32_and_int8_trims_keep_outputs_identical_and_drop_debug_metadata_and_copies(
    fused, faces, tmp_path, monkeypatch
):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx.numpy_helper import to_array

    from nptface.edge_export import onnx_export

    recipe = onnx_export.INT8_RECIPES[0]
    with monkeypatch.context() as patch:
        patch.setattr(onnx_export, "trim", lambda model: None)
        onnx_export.export_fp32(fused, tmp_path / "plain-fp32.onnx", SIZE, {"k": "v"})
        onnx_export.quantize_int8(tmp_path / "plain-fp32.onnx", tmp_path / "plain-int8.onnx", faces, recipe)
    onnx_export.export_fp32(fused, tmp_path / "fp32.onnx", SIZE, {"k": "v"})
    onnx_export.quantize_int8(tmp_path / "fp32.onnx", tmp_path / "int8.onnx", faces, recipe)

    x = np.random.default_rng(1).normal(size=(3, 3, SIZE, SIZE)).astype(np.float32)
    for kind in ("fp32", "int8"):
        plain, trimmed = tmp_path / f"plain-{kind}.onnx", tmp_path / f"{kind}.onnx"
        before, after = (
            ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {onnx_export.INPUT_NAME: x})[0]
            for p in (plain, trimmed)
        )
        np.testing.assert_array_equal(after, before)
        assert trimmed.stat().st_size < plain.stat().st_size
        assert any(node.metadata_props for node in onnx.load(str(plain)).graph.node)
        model = onnx.load(str(trimmed))
        assert not any(node.metadata_props for node in model.graph.node)
        assert {p.key: p.value for p in model.metadata_props}["k"] == "v"  # the model card stays
        payloads = [(i.data_type, tuple(i.dims), to_array(i).tobytes()) for i in model.graph.initializer]
        assert len(set(payloads)) == len(payloads), f"{kind}: an initializer is stored twice"
    plain_int8 = onnx.load(str(tmp_path / "plain-int8.onnx")).graph.initializer
    assert len(onnx.load(str(tmp_path / "int8.onnx")).graph.initializer) < len(plain_int8)


@pytest.fixture(scope="module")
def tflite_fp32(fused, tmp_path_factory) -> Path:
    pytest.importorskip("litert_torch")
    from nptface.edge_export import tflite_export

    path = tmp_path_factory.mktemp("tflite") / "fp32.tflite"
    tflite_export.export_fp32(fused, path, SIZE)
    return path


@pytest.mark.parametrize("label", ["fp16", "dynamic-range", "int8", "int8-int16-activations"])
def test_tflite_trim_keeps_outputs_identical_shares_copies_and_keeps_signature_names(
    tflite_fp32, faces, tmp_path, monkeypatch, label
):
    from ai_edge_litert.interpreter import Interpreter

    from nptface.edge_export import tflite_export

    fp32 = tflite_fp32
    recipe = {r.label: r for r in (tflite_export.FP16, tflite_export.DYNAMIC_RANGE, *tflite_export.INT8_RECIPES)}[label]
    plain, trimmed = tmp_path / "plain.tflite", tmp_path / "trimmed.tflite"
    with monkeypatch.context() as patch:
        patch.setattr(tflite_export, "trim", lambda path: None)
        tflite_export.quantize(fp32, plain, recipe, faces)
    tflite_export.quantize(fp32, trimmed, recipe, faces)

    outputs, names = [], []
    for path in (plain, trimmed):
        interpreter = Interpreter(model_path=str(path), num_threads=1)
        interpreter.allocate_tensors()
        source, sink = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
        rng = np.random.default_rng(1)
        x = (
            rng.normal(size=source["shape"]).astype(np.float32)
            if source["dtype"] == np.float32
            else rng.integers(-100, 100, source["shape"]).astype(source["dtype"])
        )
        interpreter.set_tensor(source["index"], x)
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(sink["index"]))
        names.append((source["name"], sink["name"], interpreter.get_signature_list()))
    np.testing.assert_array_equal(outputs[1], outputs[0])
    assert names[1] == names[0]
    assert trimmed.stat().st_size < plain.stat().st_size
    shutil.copy(trimmed, tmp_path / "again.tflite")
    tflite_export.trim(tmp_path / "again.tflite")
    assert (tmp_path / "again.tflite").read_bytes() == trimmed.read_bytes()  # nothing left to share
