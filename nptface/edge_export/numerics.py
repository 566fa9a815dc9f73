"""What a variant computes in: its weight and activation precision, named so that "int8" tells the truth.

Phone NPUs and DSPs (NNAPI/Hexagon, Edge TPU, MediaTek APU) run a model only when its
activations are 8-bit integers; int8 weights alone shrink the file but leave the compute in float
(dynamic range) or in int16 (the "w8a16" fallback most NPUs cannot run). So every variant in the
manifest carries ``weights`` and ``activations`` next to its gate class, and a variant named
``*-int8`` always has int8 weights *and* int8 activations (``*-int8-dynamic`` says what it does).
Manifests written before these fields existed are read by :func:`upgrade_variant`: their
precision is inferred from the recipe text, and an "int8" variant whose recipe had int16
activations is renamed to the ``w8a16`` name it would get today.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Numerics:
    weights: str  # fp32 | fp16 | int8 | palette6
    activations: str  # fp32 | fp16 | int8 | int16 | "int8, <layers> fp32" | "fp32 (int8 at run time)"

    def to_dict(self) -> dict[str, str]:
        return {"weights": self.weights, "activations": self.activations}


FP32 = Numerics("fp32", "fp32")
FP16 = Numerics("fp16", "fp16")
W8A8 = Numerics("int8", "int8")
W8A16 = Numerics("int8", "int16")
W8_DYNAMIC = Numerics("int8", "fp32 (int8 at run time)")


def upgrade_variant(variant: dict[str, Any]) -> dict[str, Any]:
    """A manifest variant with ``weights``/``activations``; an old int16-activation "int8" one renamed to w8a16."""
    if "weights" in variant and "activations" in variant:
        return variant
    recipe = str(variant.get("recipe", ""))
    precision = variant.get("precision")
    if "int16 activations" in recipe:
        numerics = W8A16
    elif "dynamic range" in recipe:
        numerics = W8_DYNAMIC
    elif precision == "int8" and variant.get("format") == "coreml":
        numerics = Numerics("palette6" if "palettised" in recipe else "int8", "fp16")
    else:
        numerics = {"fp32": FP32, "fp16": FP16, "int8": W8A8}.get(str(precision), Numerics("unknown", "unknown"))
    upgraded = {**variant, **numerics.to_dict()}
    name = str(variant.get("name", ""))
    if numerics == W8A16 and name.endswith("-int8"):
        upgraded["name"] = name.removesuffix("-int8") + "-w8a16"
        upgraded["precision"] = "w8a16"
    return upgraded
