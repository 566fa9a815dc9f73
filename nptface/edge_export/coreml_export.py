"""Core ML variants: an fp16 ML Program, int8 linear weights (``coreml-w8``: fp16 compute), 6-bit palettised weights.

Core ML runs models only on Apple systems, so on Linux a variant is scored by reading its stored
weights back (decompressed) into a BN-folded PyTorch copy and running that. This measures the
error of weight compression alone — not fp16 activations or the Neural Engine's arithmetic —
and the report says so. On macOS :class:`CoreMLEmbedder` runs ``predict`` as well.
"""

from __future__ import annotations

import copy
import platform
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nptface.core.preprocess import normalize
from nptface.core.verification import unit_rows
from nptface.edge_export.numerics import Numerics
from nptface.edge_export.quiet import quiet
from nptface.edge_export.runtimes import checked_images

INPUT_NAME = "input"
OUTPUT_NAME = "embedding"


@dataclass(frozen=True)
class CoreMLRecipe:
    label: str
    precision: str  # fp16 | int8: the --precisions class that builds it; the variant is named by its numerics
    compression: str  # none | linear8 | palette6

    @property
    def numerics(self) -> Numerics:
        weights = {"none": "fp16", "linear8": "int8", "palette6": "palette6"}[self.compression]
        return Numerics(weights, "fp16")

    def describe(self) -> str:
        return {
            "none": "ML Program, fp16 weights and compute",
            "linear8": "ML Program, int8 linear (symmetric) weights",
            "palette6": "ML Program, 6-bit k-means palettised weights",
        }[self.compression]


RECIPES = (
    CoreMLRecipe("fp16", "fp16", "none"),
    CoreMLRecipe("linear8", "int8", "linear8"),
    CoreMLRecipe("palette6", "int8", "palette6"),
)


def export(
    fused_model: nn.Module,
    path: Path,
    input_size: int,
    recipe: CoreMLRecipe,
    metadata: dict[str, str],
    max_batch: int = 64,
) -> None:
    import coremltools as ct
    import coremltools.optimize.coreml as cto

    example = torch.zeros(1, 3, input_size, input_size)
    traced = torch.jit.trace(fused_model.eval(), example)
    with quiet():
        model = ct.convert(
            traced,
            inputs=[
                ct.TensorType(name=INPUT_NAME, shape=(ct.RangeDim(1, max_batch, default=1), 3, input_size, input_size))
            ],
            outputs=[ct.TensorType(name=OUTPUT_NAME)],
            convert_to="mlprogram",
            compute_precision=ct.precision.FLOAT16,
            minimum_deployment_target=ct.target.iOS16,
        )
        if recipe.compression == "linear8":
            config = cto.OpLinearQuantizerConfig(mode="linear_symmetric", weight_threshold=0)
            model = cto.linear_quantize_weights(model, cto.OptimizationConfig(global_config=config))
        elif recipe.compression == "palette6":
            config = cto.OpPalettizerConfig(mode="kmeans", nbits=6, weight_threshold=0)
            model = cto.palettize_weights(model, cto.OptimizationConfig(global_config=config))
    model.short_description = metadata.get("description", "")
    for key, value in metadata.items():
        model.user_defined_metadata[key] = str(value)
    model.save(str(path))


class CoreMLFormatError(ValueError):
    """A Core ML package whose weights do not line up with the architecture it claims."""


def weights_model(path: Path, fused_template: nn.Module) -> nn.Module:
    """A copy of ``fused_template`` carrying the (decompressed) weights stored in ``path``.

    The MIL program lists conv and prelu ops in execution order, which for MobileFaceNet is the
    order of the template's modules; shapes are checked one by one so a mismatch cannot pass.
    """
    import coremltools as ct
    import coremltools.optimize.coreml as cto

    with quiet():
        program = cto.decompress_weights(ct.models.MLModel(str(path), skip_model_load=True))._mil_program
    ops = program.functions["main"].operations
    convs = [op for op in ops if op.op_type == "conv"]
    prelus = [op for op in ops if op.op_type == "prelu"]
    model = copy.deepcopy(fused_template).eval()
    torch_convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    torch_prelus = [m for m in model.modules() if isinstance(m, nn.PReLU)]
    if len(convs) != len(torch_convs) or len(prelus) != len(torch_prelus):
        raise CoreMLFormatError(
            f"{path}: {len(convs)} conv / {len(prelus)} prelu ops, the architecture has "
            f"{len(torch_convs)} / {len(torch_prelus)}"
        )
    with torch.no_grad():
        for index, (op, conv) in enumerate(zip(convs, torch_convs, strict=True)):
            _load(conv.weight, op.weight.val, path, f"conv {index} weight")
            if op.bias is None or conv.bias is None:
                raise CoreMLFormatError(f"{path}: conv {index} has no bias; expected a BN-folded model")
            _load(conv.bias, op.bias.val, path, f"conv {index} bias")
        for index, (op, prelu) in enumerate(zip(prelus, torch_prelus, strict=True)):
            _load(prelu.weight, op.alpha.val, path, f"prelu {index} alpha")
    return model


def _load(target: torch.Tensor, value: np.ndarray, path: Path, what: str) -> None:
    value = np.asarray(value, dtype=np.float32)
    if tuple(value.shape) != tuple(target.shape):
        raise CoreMLFormatError(f"{path}: {what} has shape {value.shape}, expected {tuple(target.shape)}")
    target.copy_(torch.from_numpy(value))


def can_predict() -> bool:
    """Core ML's runtime exists only on macOS; elsewhere ``predict`` cannot run at all."""
    return platform.system() == "Darwin"


class CoreMLEmbedder:
    """``MLModel.predict`` on macOS (the real Core ML runtime, compute units = all)."""

    def __init__(self, path: Path, input_size: int) -> None:
        import coremltools as ct

        if not can_predict():
            raise RuntimeError("Core ML predict needs macOS; on Linux score the stored weights with weights_model()")
        self.path = Path(path)
        self.model = ct.models.MLModel(str(path))
        self.input_size = input_size

    def embed(self, images: np.ndarray) -> np.ndarray:
        images = checked_images(images, self.input_size, str(self.path))
        out = [self.model.predict({INPUT_NAME: normalize(image[None]).numpy()})[OUTPUT_NAME][0] for image in images]
        return unit_rows(np.stack(out), name=f"{self.path} embeddings")
