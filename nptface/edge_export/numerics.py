"""What a variant computes in: its weight and activation precision, named so that "int8" tells the truth.

Phone NPUs and DSPs (NNAPI/Hexagon, Edge TPU, MediaTek APU) run a model only when its
activations are 8-bit integers; int8 weights alone shrink the file but leave the compute in float
(dynamic range, Core ML's weight compression) or in int16 (the "w8a16" fallback most NPUs cannot
run). So every variant in the manifest carries ``weights`` and ``activations``, and its precision
label and name come from them in one place, :func:`precision_label`: ``int8`` only for int8
weights *and* 8-bit activations; otherwise ``w8`` names the weight bits and ``a16`` integer
activation bits, with no ``a`` part for float activations (``w8``: Core ML's int8 weights, fp16
compute; ``w8-dynamic``: float activations quantised at run time). Manifests written under older
names are read by :func:`upgrade_variant`: precision inferred from the recipe text where the
fields are missing, and a variant whose old name or label claimed "int8" without 8-bit
activations renamed to the name it would get today (:data:`RENAMED_VARIANTS` for the names that
map one to one).
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
W8_FP16 = Numerics("int8", "fp16")

# Old name -> today's, for the variants whose old name claimed int8 without 8-bit activations and
# always meant one thing. (An old "onnx-int8" is not here: it was w8a16 or true int8 by its recipe.)
RENAMED_VARIANTS = {"coreml-int8": "coreml-w8", "tflite-int8-dynamic": "tflite-w8-dynamic"}


def precision_label(numerics: Numerics) -> str:
    """The precision part of a variant's name and its ``precision`` field: "int8" only with 8-bit activations.

    Activations "int8, first/last conv fp32" count as int8: every layer between the ends runs in 8 bits.
    """
    weights, activations = numerics.weights, numerics.activations
    if weights == activations or weights.startswith("palette"):
        return weights
    if weights == "int8":
        if activations.startswith("int8"):
            return "int8"
        if activations == W8A16.activations:
            return "w8a16"
        if activations == W8_DYNAMIC.activations:
            return "w8-dynamic"
        if activations in ("fp16", "fp32"):
            return "w8"
    raise ValueError(f"no precision label for weights {weights!r} with activations {activations!r}")


def variant_name(fmt: str, numerics: Numerics) -> str:
    """The variant's name in the manifest and its file's stem, e.g. ``tflite-w8-dynamic``."""
    return f"{fmt}-{precision_label(numerics)}"


def _numerics_from_recipe(variant: dict[str, Any]) -> Numerics:
    """What a variant written before ``weights``/``activations`` existed computes in, from its recipe text."""
    recipe = str(variant.get("recipe", ""))
    precision = variant.get("precision")
    if "int16 activations" in recipe:
        return W8A16
    if "dynamic range" in recipe:
        return W8_DYNAMIC
    if precision == "int8" and variant.get("format") == "coreml":
        return Numerics("palette6", "fp16") if "palettised" in recipe else W8_FP16
    return {"fp32": FP32, "fp16": FP16, "int8": W8A8}.get(str(precision), Numerics("unknown", "unknown"))


def upgrade_variant(variant: dict[str, Any]) -> dict[str, Any]:
    """A manifest variant as written today: with ``weights``/``activations``, and named and labelled by them.

    Only what older exporters wrote changes: the fields are inferred where missing, an "int8" precision
    label without 8-bit activations is replaced by :func:`precision_label`'s, and an int16-activation
    ``*-int8`` name or a name in :data:`RENAMED_VARIANTS` is renamed. The ``file`` keeps its (hashed)
    name. A current variant is returned as it is.
    """
    if "weights" in variant and "activations" in variant:
        numerics = Numerics(str(variant["weights"]), str(variant["activations"]))
    else:
        numerics = _numerics_from_recipe(variant)
    upgraded = {**variant, **numerics.to_dict()}
    name = str(variant.get("name", ""))
    try:
        label: str | None = precision_label(numerics)
    except ValueError:
        label = None
    if label is not None and variant.get("precision") == "int8":
        upgraded["precision"] = label
    if name in RENAMED_VARIANTS:
        upgraded["name"] = RENAMED_VARIANTS[name]
    elif label == "w8a16" and name.endswith("-int8"):
        upgraded["name"] = name.removesuffix("-int8") + "-w8a16"
    return variant if upgraded == variant else upgraded
