"""Running an exported model: one ``Embedder`` interface over PyTorch, onnxruntime and LiteRT.

Every runtime receives its input from :func:`nptface.core.preprocess.normalize` — the function
training used — so a parity gap can only come from the model file, never from a second,
slightly different preprocessing. Embedders take uint8 ``(N, S, S, 3)`` RGB crops and return
unit-length float32 embeddings (through :func:`nptface.core.verification.unit_rows`, so a dead,
zero or non-finite, embedding raises naming the model file); a wrong image shape is refused with
the shape the model expects.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn

from nptface.core.preprocess import normalize
from nptface.core.verification import unit_rows

# device runtime -> the model format it runs (the bundle's ``variants[].format`` and ``detector.files`` keys)
RUNTIME_FORMATS = {"onnxruntime": "onnx", "litert": "tflite"}


class InputShapeError(ValueError):
    """Images whose shape or type does not match what the exported model was built for."""


class Embedder(Protocol):
    input_size: int

    def embed(self, images: np.ndarray) -> np.ndarray:
        """Unit-length float32 embeddings ``(N, d)`` of uint8 ``(N, S, S, 3)`` RGB crops."""
        ...


def checked_images(images: np.ndarray, input_size: int, where: str) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    expected = f"uint8 RGB images of shape (N, {input_size}, {input_size}, 3)"
    if images.dtype != np.uint8:
        raise InputShapeError(f"{where}: expected {expected}, got dtype {images.dtype}")
    if images.ndim != 4 or images.shape[1:] != (input_size, input_size, 3):
        raise InputShapeError(f"{where}: expected {expected}, got shape {images.shape}")
    return images


class TorchEmbedder:
    """A PyTorch module in eval mode, on the CPU with the given number of threads."""

    def __init__(self, model: nn.Module, input_size: int, threads: int | None = None, batch_size: int = 64) -> None:
        self.model = model.eval()
        self.input_size = input_size
        self.threads = threads
        self.batch_size = batch_size

    @torch.no_grad()
    def embed(self, images: np.ndarray) -> np.ndarray:
        images = checked_images(images, self.input_size, "torch model")
        previous = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            chunks = [
                self.model(normalize(images[i : i + self.batch_size])).numpy()
                for i in range(0, len(images), self.batch_size)
            ]
        finally:
            torch.set_num_threads(previous)
        return unit_rows(np.concatenate(chunks), name="torch model embeddings")


class OnnxEmbedder:
    """An ONNX file on onnxruntime's CPU provider (NCHW float32 input, dynamic batch).

    The graph is loaded with its PReLUs decomposed (:mod:`nptface.edge_export.onnx_prelu`) and
    optimised at ``ORT_ENABLE_ALL`` (onnxruntime's default, stated so nobody lowers it for a faster
    session start): together they keep the network in onnxruntime's NCHWc layout on x86, several
    times faster than the file as shipped.
    """

    def __init__(self, path: Path, input_size: int, threads: int | None = None, batch_size: int = 64) -> None:
        import onnx
        import onnxruntime as ort

        from nptface.edge_export.onnx_prelu import decompose_prelu

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        graph = decompose_prelu(onnx.load(str(path))).SerializeToString()
        self.path = Path(path)
        self.session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.input_size = input_size
        self.batch_size = batch_size

    def embed(self, images: np.ndarray) -> np.ndarray:
        images = checked_images(images, self.input_size, str(self.path))
        chunks = [
            self.session.run(None, {self.input_name: normalize(images[i : i + self.batch_size]).numpy()})[0]
            for i in range(0, len(images), self.batch_size)
        ]
        return unit_rows(np.concatenate(chunks), name=f"{self.path} embeddings")


class LiteRTEmbedder:
    """A .tflite file on the LiteRT interpreter (XNNPACK), one image per invocation.

    Handles both layouts (NHWC is detected from a last input dimension of 3) and full-integer
    models, whose int8 input and output are (de)quantised with the scale and zero point stored
    in the file, exactly as an app has to do.
    """

    def __init__(self, path: Path, input_size: int, threads: int | None = None) -> None:
        from ai_edge_litert.interpreter import Interpreter

        from nptface.edge_export.quiet import quiet

        self.path = Path(path)
        with quiet():  # the interpreter announces its XNNPACK delegate on fd 2
            self.interpreter = Interpreter(model_path=str(path), num_threads=threads or 1)
            self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        shape = tuple(int(v) for v in self.input["shape"])
        self.nhwc = shape[-1] == 3
        expected = (1, input_size, input_size, 3) if self.nhwc else (1, 3, input_size, input_size)
        if shape != expected:
            raise InputShapeError(
                f"{path}: model input has shape {shape}, expected {expected} for {input_size}x{input_size} crops"
            )
        self.input_size = input_size

    def _quantize(self, x: np.ndarray) -> np.ndarray:
        dtype = self.input["dtype"]
        if dtype == np.float32:
            return x
        scale, zero_point = self.input["quantization"]
        info = np.iinfo(dtype)
        return np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(dtype)

    def _dequantize(self, y: np.ndarray) -> np.ndarray:
        if self.output["dtype"] == np.float32:
            return y
        scale, zero_point = self.output["quantization"]
        return (y.astype(np.float32) - zero_point) * scale

    def embed(self, images: np.ndarray) -> np.ndarray:
        images = checked_images(images, self.input_size, str(self.path))
        out = []
        for image in images:
            x = normalize(image[None]).numpy()
            if self.nhwc:
                x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
            self.interpreter.set_tensor(self.input["index"], self._quantize(x))
            self.interpreter.invoke()
            out.append(self._dequantize(self.interpreter.get_tensor(self.output["index"]))[0].copy())
        return unit_rows(np.stack(out), name=f"{self.path} embeddings")
