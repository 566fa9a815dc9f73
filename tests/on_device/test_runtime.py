"""Which shipped variant a runtime runs: the same one under today's truthful names as under the old ones."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from nptface.cli import main
from nptface.edge_export.bundle import Bundle
from nptface.edge_export.numerics import upgrade_variant
from nptface.on_device.runtime import default_variant, open_model

EXTENSIONS = {"onnx": "onnx", "tflite": "tflite", "coreml": "mlpackage"}
DYNAMIC = "fp32 (int8 at run time)"


def _entry(name: str, precision: str, weights: str, activations: str) -> dict[str, str]:
    fmt = name.split("-")[0]
    return {
        "name": name,
        "format": fmt,
        "precision": precision,
        "weights": weights,
        "activations": activations,
        "file": f"models/{name}.{EXTENSIONS[fmt]}",
    }


# Each variant as the exporter wrote it before the renames (key) and as it writes it today.
OLD_AND_TODAY = {
    "onnx-fp32": (_entry("onnx-fp32", "fp32", "fp32", "fp32"),) * 2,
    "onnx-fp16": (_entry("onnx-fp16", "fp16", "fp16", "fp16"),) * 2,
    "onnx-int8": (_entry("onnx-int8", "int8", "int8", "int8"),) * 2,
    "onnx-w8a16": (_entry("onnx-w8a16", "w8a16", "int8", "int16"),) * 2,
    "tflite-fp32": (_entry("tflite-fp32", "fp32", "fp32", "fp32"),) * 2,
    "tflite-fp16": (_entry("tflite-fp16", "fp16", "fp16", "fp16"),) * 2,
    "tflite-int8": (_entry("tflite-int8", "int8", "int8", "int8"),) * 2,
    "tflite-w8a16": (_entry("tflite-w8a16", "w8a16", "int8", "int16"),) * 2,
    "tflite-int8-dynamic": (
        _entry("tflite-int8-dynamic", "int8", "int8", DYNAMIC),
        _entry("tflite-w8-dynamic", "w8-dynamic", "int8", DYNAMIC),
    ),
    "coreml-fp16": (_entry("coreml-fp16", "fp16", "fp16", "fp16"),) * 2,
    "coreml-int8": (_entry("coreml-int8", "int8", "int8", "fp16"), _entry("coreml-w8", "w8", "int8", "fp16")),
}


def _bundles(shipped: list[str]) -> tuple[Bundle, Bundle]:
    """The same shipped set as an old manifest (read as load_bundle reads it) and as today's export writes it."""
    every = [*shipped, "coreml-fp16", "coreml-int8"]
    old = Bundle(Path("old"), {"variants": [upgrade_variant(OLD_AND_TODAY[n][0]) for n in every]})
    today = Bundle(Path("today"), {"variants": [OLD_AND_TODAY[n][1] for n in every]})
    return old, today


# ``chosen`` (old names) is what the CLI and the page picked before the renames, when tflite-int8-dynamic was
# labelled "int8" and so won over w8a16, fp16 and fp32 but, listed after tflite-int8, never over it.
@pytest.mark.parametrize(
    ("runtime", "shipped", "chosen"),
    [
        ("litert", ["tflite-fp32", "tflite-fp16", "tflite-int8", "tflite-int8-dynamic"], "tflite-int8"),
        ("litert", ["tflite-fp32", "tflite-fp16", "tflite-w8a16", "tflite-int8-dynamic"], "tflite-int8-dynamic"),
        ("litert", ["tflite-fp32", "tflite-fp16", "tflite-int8-dynamic"], "tflite-int8-dynamic"),
        ("litert", ["tflite-fp32", "tflite-fp16", "tflite-w8a16"], "tflite-w8a16"),
        ("litert", ["tflite-fp32", "tflite-fp16"], "tflite-fp16"),
        ("litert", ["tflite-fp32"], "tflite-fp32"),
        ("onnxruntime", ["onnx-fp32", "onnx-fp16", "onnx-int8", "tflite-int8-dynamic"], "onnx-int8"),
        ("onnxruntime", ["onnx-fp32", "onnx-fp16", "onnx-w8a16"], "onnx-w8a16"),
        ("onnxruntime", ["onnx-fp32", "onnx-fp16"], "onnx-fp16"),
    ],
)
def test_the_default_variant_is_the_one_chosen_before_the_renames(runtime, shipped, chosen):
    old, today = _bundles(shipped)
    name = OLD_AND_TODAY[chosen][1]["name"]
    assert default_variant(old, runtime) == default_variant(today, runtime) == name
    assert old.variants[name]["file"] == OLD_AND_TODAY[chosen][0]["file"], "an old bundle runs the same file"


def test_only_a_variant_with_8_bit_activations_is_chosen_as_int8():
    _, today = _bundles(["tflite-fp32", "tflite-int8-dynamic", "tflite-int8"])
    assert default_variant(today, "litert") == "tflite-int8", "manifest order no longer decides between them"


def test_the_old_name_of_a_renamed_variant_still_runs_it_with_a_warning(fp32_bundle, faces, tmp_path, capsys, caplog):
    """A bundle from before the renames, its TFLite variant written as ``tflite-int8-dynamic`` (the file is fp32:
    only the name is under test)."""
    old = tmp_path / "old"
    shutil.copytree(fp32_bundle, old)
    manifest = json.loads((old / "manifest.json").read_text())
    tflite = next(v for v in manifest["variants"] if v["name"] == "tflite-fp32")
    tflite.update(name="tflite-int8-dynamic", precision="int8", weights="int8", activations=DYNAMIC)
    (old / "manifest.json").write_text(json.dumps(manifest))

    assert open_model(old, "litert").variant == "tflite-w8-dynamic", "the default under its new name"
    with caplog.at_level(logging.WARNING):
        assert open_model(old, "litert", "tflite-int8-dynamic").variant == "tflite-w8-dynamic"
    assert "'tflite-int8-dynamic' is now called 'tflite-w8-dynamic'" in caplog.text
    pair = [str(faces["a"][0]), str(faces["b"][1])]
    args = ["verify", "--bundle", str(old), "--runtime", "litert", "--variant", "tflite-int8-dynamic", "--no-align"]
    assert main([*args, *pair]) in (0, 1)  # match, no match
    assert "variant tflite-w8-dynamic on litert" in capsys.readouterr().out
