"""TFLite (LiteRT) variants: fp32 by litert-torch, then fp16 and int8 by ai-edge-quantizer.

litert-torch cannot keep a dynamic batch (a reshape freezes the example's), so every .tflite has
batch 1 — the shape a phone runs anyway. The input is NHWC by default, the layout Android camera
pipelines and LiteRT's GPU/NPU delegates prefer; NCHW is an option. Quantisation works on the
fp32 flatbuffer: fp16 casts weights (FLOAT_CASTING), "dynamic-range" keeps float activations and
int8 weights (the ``tflite-w8-dynamic`` variant), "int8" is full-integer with activation ranges
the min/max over all calibration face crops (not ai-edge-quantizer's running average), its input
and output int8 with the scale and zero point stored in the file. The
8-bit-activation recipe first quantises a flatbuffer whose PReLUs are written so that every op is
integer (``tflite_prelu``: one XNNPACK partition instead of 34); the exporter's PReLU form is the
next attempt, since it measured slightly closer to fp32 on the quickstart model. Each quantised
file is then trimmed exactly (``tflite_trim``: equal vectors and buffers stored once, internal
tensor names shortened); the fp32 file keeps its names, which the float-ends recipe matches.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nptface.core.preprocess import normalize
from nptface.edge_export.numerics import FP16 as FP16_NUMERICS
from nptface.edge_export.numerics import W8_DYNAMIC, Numerics
from nptface.edge_export.quiet import quiet
from nptface.edge_export.tflite_prelu import with_integer_friendly_prelu
from nptface.edge_export.tflite_trim import trim

logger = logging.getLogger(__name__)


def export_fp32(
    fused_model: nn.Module, path: Path, input_size: int, nhwc: bool = True, integer_prelu: bool = False
) -> None:
    """``fused_model`` as a float .tflite; ``integer_prelu`` writes PReLU for full-integer quantisation (tflite_prelu)."""
    with quiet():
        import litert_torch  # its import logs torchao/absl warnings

    example = torch.zeros(1, 3, input_size, input_size)
    model: nn.Module = with_integer_friendly_prelu(fused_model) if integer_prelu else fused_model.eval()
    if nhwc:
        model = litert_torch.to_channel_last_io(model, args=[0])
        example = example.permute(0, 2, 3, 1).contiguous()
    with quiet():
        litert_torch.convert(model, (example,)).export(str(path))


@dataclass(frozen=True)
class TFLiteRecipe:
    label: str
    precision: str  # fp16 | int8: the --precisions class that builds it; the variant is named by its numerics
    kind: str  # float-cast | dynamic | static
    activation_bits: int = 8
    float_ends: bool = False  # first conv and the GDC/embedding convs left in float
    integer_prelu: bool = False  # quantise the flatbuffer exported with tflite_prelu's PReLU form

    @property
    def numerics(self) -> Numerics:
        if self.kind == "float-cast":
            return FP16_NUMERICS
        if self.kind == "dynamic":
            return W8_DYNAMIC
        return Numerics("int8", f"int{self.activation_bits}" + (", first/last conv fp32" if self.float_ends else ""))

    def describe(self) -> str:
        suffix = ", first and last convs in float" if self.float_ends else ""
        if self.integer_prelu:
            suffix += ", PReLU as a*x + s*relu(|1-a|*x), s the sign of 1-a, ReLU fused (every op integer, one XNNPACK partition)"
        return {
            "float-cast": "fp16 weights (FLOAT_CASTING), fp32 compute",
            "dynamic": "int8 per-channel weights, activations quantised at run time (dynamic range)",
            "static": f"full integer: int8 per-channel weights, int{self.activation_bits} activations "
            "calibrated (min/max)",
        }[self.kind] + suffix


# Tensor names carry litert-torch's module path, so the ends of MobileFaceNet can be matched by name.
FLOAT_ENDS_REGEX = r".*(Sequential_stem/nptface\.core\.mobilefacenet\.ConvBN_0/|ConvBN_gdc/|ConvBN_embedding/).*"


FP16 = TFLiteRecipe("fp16", "fp16", "float-cast")
DYNAMIC_RANGE = TFLiteRecipe("dynamic-range", "int8", "dynamic")
INT8_RECIPES = (
    TFLiteRecipe("int8-integer-prelu", "int8", "static", integer_prelu=True),
    TFLiteRecipe("int8", "int8", "static"),
    TFLiteRecipe("int8-int16-activations", "int8", "static", activation_bits=16),
)
# Leaving the ends in float is available (and was measured: on the quickstart model it moved the
# 1st-percentile cosine from 0.9911 to 0.9907, flips from 1.43 % to 1.39 %, and made calibration
# 4x slower), but is not in the default remedy list for that reason.
INT8_FLOAT_ENDS = TFLiteRecipe("int8-float-ends", "int8", "static", float_ends=True)


def quantize(source: Path, path: Path, recipe: TFLiteRecipe, calibration_images: np.ndarray | None = None) -> None:
    from ai_edge_litert.interpreter import Interpreter

    with quiet():
        from ai_edge_quantizer import quantizer
        from ai_edge_quantizer import recipe as recipes
        from ai_edge_quantizer.algorithm_manager import AlgorithmName

    q = quantizer.Quantizer(str(source))
    if recipe.kind == "float-cast":
        q.add_weight_only_config(
            regex=".*",
            operation_name=recipes.TFLOperationName.ALL_SUPPORTED,
            num_bits=16,
            algorithm_key=AlgorithmName.FLOAT_CASTING,
        )
    elif recipe.kind == "dynamic":
        q.load_quantization_recipe(recipes.dynamic_wi8_afp32())
    else:
        q.load_quantization_recipe(
            recipes.static_wi8_ai16() if recipe.activation_bits == 16 else recipes.static_wi8_ai8()
        )
        if recipe.float_ends:
            q.update_quantization_recipe(
                FLOAT_ENDS_REGEX, recipes.TFLOperationName.ALL_SUPPORTED, algorithm_key=AlgorithmName.NO_QUANTIZE
            )
    calibration = None
    if q.need_calibration:
        if calibration_images is None or len(calibration_images) == 0:
            raise ValueError(f"TFLite recipe {recipe.label!r} needs calibration images")
        with quiet():
            signatures = Interpreter(model_path=str(source)).get_signature_list()
        signature = next(iter(signatures))
        input_name = signatures[signature]["inputs"][0]
        nhwc = _is_nhwc(source)
        feeds = []
        for image in calibration_images:
            x = normalize(image[None]).numpy()
            feeds.append({input_name: np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if nhwc else x})
        calibration = _min_max_ranges(source, q.get_quantization_recipe(), {signature: feeds})
    with quiet():
        q.quantize(calibration, enable_progress_report=False).export_model(str(path), overwrite=True)
    trim(path)


def _min_max_ranges(source: Path, recipe: list[dict], data: dict[str, list[dict[str, np.ndarray]]]) -> dict:
    """Each tensor's range over every calibration image (what onnxruntime's MinMax takes too).

    ``Quantizer.calibrate`` keeps a moving average of the per-image min/max instead (weight 0.95
    on the past), so every range is about a typical face's, dominated by the last ~20 images: on
    the quickstart model the ranges came out half as wide, every activation tensor clipped some
    gate face, and the 1st-percentile cosine to fp32 was 0.928 against 0.991 with these ranges.
    """
    with quiet():
        from ai_edge_quantizer import calibrator, recipe_manager
        from ai_edge_quantizer.utils import qsv_utils

        manager = recipe_manager.RecipeManager()
        manager.load_quantization_recipe(recipe)
        calib = calibrator.Calibrator(str(source), num_threads=1, qsv_update_func=qsv_utils.min_max_update)
        calib.calibrate(data, manager)
    return calib.get_model_qsvs()


def _is_nhwc(path: Path) -> bool:
    from ai_edge_litert.interpreter import Interpreter

    with quiet():
        return int(Interpreter(model_path=str(path)).get_input_details()[0]["shape"][-1]) == 3
