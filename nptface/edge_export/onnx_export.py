"""ONNX variants: fp32 (BN folded, dynamic batch), fp16, and static int8 QDQ via onnxruntime.

fp32 goes through the current (dynamo) exporter with the weights inside the file and a dynamic
batch dimension; the model card travels in ``metadata_props``. fp16 uses onnxruntime's own
converter with float32 inputs and outputs kept, so callers feed the same tensors as for fp32.
int8 is static QDQ with per-channel weights; ``reduce_range`` (7-bit weights) is on by default
because on AVX2 CPUs without VNNI — this machine — onnxruntime's int8 kernels saturate with full
8-bit ranges and the embeddings drift (cosine 0.965 instead of 0.993 in our toolchain notes).
Activation ranges are calibrated here, not inside ``quantize_static``: its Entropy calibrator
keeps a 128-bin histogram with 128 quantised bins, so it has a single candidate threshold — the
full range, MinMax's answer — and ``quantize_static`` does not pass the histogram size through.
The ranges go to ``quantize_static`` as a calibration cache. With 8-bit activations PReLU is quantised
too: onnxruntime's quantiser has no PRelu in its registry, so by default it leaves the slope float
and the node outside any QDQ unit, which phone NPU execution providers (QNN, NNAPI) cannot run in
int8; with ``PRelu`` among the op types its slope is stored int8 and the node sits in a complete
DequantizeLinear -> PRelu -> QuantizeLinear unit like every Conv and Add. Every file is trimmed
exactly (``onnx_trim``: the exporter's debug metadata dropped, equal initializers merged).
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nptface.core.preprocess import normalize
from nptface.edge_export.bias_correction import add_missing_biases, correct_biases
from nptface.edge_export.numerics import Numerics
from nptface.edge_export.onnx_trim import trim
from nptface.edge_export.quiet import quiet

logger = logging.getLogger(__name__)

INPUT_NAME = "input"
OUTPUT_NAME = "embedding"
OPSET = 18
CALIBRATION_METHODS = ("MinMax", "Entropy", "Percentile")
# Histogram settings per method (onnxruntime's create_calibrator options): Entropy searches
# thresholds between 128 quantised bins and the whole 1024-bin histogram; Percentile clips the
# top 0.01 % (onnxruntime's default, 99.999 %, is MinMax on a few hundred images).
CALIBRATOR_OPTIONS: dict[str, dict[str, object]] = {
    "MinMax": {},
    "Entropy": {"num_bins": 1024, "num_quantized_bins": 128},
    "Percentile": {"num_bins": 2048, "percentile": 99.99, "symmetric": True},
}


def export_fp32(fused_model: nn.Module, path: Path, input_size: int, metadata: dict[str, str]) -> None:
    import onnx

    example = torch.zeros(2, 3, input_size, input_size)
    batch = torch.export.Dim("batch", min=1, max=4096)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "model.onnx"
        with quiet():
            torch.onnx.export(
                fused_model.eval(),
                (example,),
                str(raw),
                dynamo=True,
                external_data=False,
                opset_version=OPSET,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes={"x": {0: batch}},
                verbose=False,
            )
        model = onnx.load(str(raw))
    trim(model)
    set_metadata(model, metadata)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))


def set_metadata(model: object, metadata: dict[str, str]) -> None:
    import onnx

    del model.metadata_props[:]  # type: ignore[attr-defined]
    onnx.helper.set_model_props(model, {key: str(value) for key, value in metadata.items()})


def convert_fp16(source: Path, path: Path) -> None:
    import onnx
    import onnx_ir
    from onnxruntime.transformers.float16 import convert_float_to_float16

    converted = onnx_ir.from_proto(convert_float_to_float16(onnx.load(str(source)), keep_io_types=True))
    converted.graph.sort()  # the converter appends its input casts after their consumers
    model = onnx_ir.to_proto(converted)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))


@dataclass(frozen=True)
class Int8Recipe:
    """One way of quantising to int8; the pipeline tries several and keeps one that passes."""

    label: str
    calibration: str = "MinMax"
    per_channel: bool = True
    reduce_range: bool = True
    keep_float: tuple[str, ...] = ()  # "first", "last": layers left in float (a classic remedy)
    activation_bits: int = 8
    bias_correction: bool = False  # move each int32 conv bias by its measured mean shift (bias_correction.py)

    @property
    def numerics(self) -> Numerics:
        activations = f"int{self.activation_bits}"
        if self.keep_float:
            activations += f", {'/'.join(self.keep_float)} conv fp32"
        return Numerics("int8", activations)

    def describe(self) -> str:
        parts = [f"static QDQ, {self.calibration} calibration", "per-channel" if self.per_channel else "per-tensor"]
        if self.reduce_range:
            parts.append("reduce_range")
        if self.keep_float:
            parts.append(f"{'/'.join(self.keep_float)} layer(s) in float")
        if self.activation_bits != 8:
            parts.append(f"int{self.activation_bits} activations")
        if self.bias_correction:
            parts.append("bias correction")
        if self.activation_bits == 8:
            parts.append("PReLU quantised (int8 slope)")
        return ", ".join(parts)


INT8_RECIPES = (
    Int8Recipe("minmax", "MinMax"),
    Int8Recipe("entropy", "Entropy"),
    Int8Recipe("percentile", "Percentile"),
    Int8Recipe("percentile-bias-corrected", "Percentile", bias_correction=True),
    Int8Recipe("minmax-float-ends", "MinMax", keep_float=("first", "last")),
    Int8Recipe("minmax-int16-activations", "MinMax", activation_bits=16),
)


def _op_types_to_quantize(activation_bits: int) -> list[str]:
    """onnxruntime's default op types (its QLinear and QDQ registries), plus PRelu when activations are 8-bit.

    Left out with int16 activations: that variant is for CPUs and DSPs that take int16, where the
    float PReLU between its quantised neighbours is the form it was tuned and gated on.
    """
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return sorted(set(QLinearOpsRegistry) | set(QDQRegistry) | ({"PRelu"} if activation_bits == 8 else set()))


def _calibration_batches(images: np.ndarray, batch_size: int = 1) -> list[dict[str, np.ndarray]]:
    """Calibration feeds, preprocessed exactly like training's inputs.

    One image per feed for calibration: onnxruntime's histogram calibrators (Entropy, Percentile)
    stack the collected activations and fail on a shorter last batch.
    """
    return [{INPUT_NAME: normalize(images[i : i + batch_size]).numpy()} for i in range(0, len(images), batch_size)]


def _conv_nodes(model_path: Path) -> list[str]:
    import onnx

    return [node.name for node in onnx.load(str(model_path)).graph.node if node.op_type == "Conv"]


def calibrate(model_path: Path, calibration_images: np.ndarray, method: str, cache: Path) -> None:
    """Activation ranges of every float tensor of ``model_path`` by ``method``, saved as an onnxruntime calibration cache."""
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data

    if method not in CALIBRATOR_OPTIONS:
        raise ValueError(f"calibration method {method!r}: expected one of {CALIBRATION_METHODS}")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds: Iterator[dict[str, np.ndarray]] = iter(_calibration_batches(calibration_images))

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.feeds, None)

    with tempfile.TemporaryDirectory() as tmp, quiet():
        calibrator = create_calibrator(
            model_path,
            augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=getattr(CalibrationMethod, method),
            extra_options=CALIBRATOR_OPTIONS[method],
        )
        calibrator.collect_data(Reader())
        save_tensors_data(calibrator.compute_data(), cache)


def quantize_int8(
    source: Path,
    path: Path,
    calibration_images: np.ndarray,
    recipe: Int8Recipe,
    ranges: dict[str, list[dict[str, object]]] | None = None,
) -> None:
    """Static QDQ int8 of ``source`` by ``recipe``; ``ranges`` (``TensorQuantOverrides``) replace calibrated ones."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        with quiet():
            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        convs = _conv_nodes(prepared)
        exclude = ([convs[0]] if "first" in recipe.keep_float else []) + (
            [convs[-1]] if "last" in recipe.keep_float else []
        )
        sixteen = recipe.activation_bits == 16
        if recipe.bias_correction:
            add_missing_biases(prepared)
        cache = Path(tmp) / "ranges.json"
        calibrate(prepared, calibration_images, recipe.calibration, cache)
        with quiet():
            quantize_static(
                str(prepared),
                str(path),
                None,
                quant_format=QuantFormat.QDQ,
                per_channel=recipe.per_channel,
                reduce_range=recipe.reduce_range,
                activation_type=QuantType.QInt16 if sixteen else QuantType.QInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=getattr(CalibrationMethod, recipe.calibration),
                nodes_to_exclude=exclude,
                op_types_to_quantize=_op_types_to_quantize(recipe.activation_bits),
                extra_options={"UseQDQContribOps": sixteen, "TensorQuantOverrides": ranges or {}},
                calibration_cache_path=cache,
            )
        if recipe.bias_correction:
            correct_biases(prepared, path, _calibration_batches(calibration_images, batch_size=32))
    model = onnx.load(str(path))
    metadata = {prop.key: prop.value for prop in onnx.load(str(source)).metadata_props}
    metadata["nptface_quantization"] = json.dumps({"label": recipe.label, "recipe": recipe.describe()})
    trim(model)
    set_metadata(model, metadata)
    onnx.save(model, str(path))
