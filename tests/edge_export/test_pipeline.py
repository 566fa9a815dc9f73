"""End to end: a tiny trained model through ONNX, TFLite and Core ML into a verified bundle."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nptface.core.datasets import InMemoryFaceDataset
from nptface.edge_export.bundle import load_bundle
from nptface.edge_export.evalset import REFERENCE_FILE, load_reference
from nptface.edge_export.onnx_export import Int8Recipe
from nptface.edge_export.pipeline import ExportOptions, export_bundle

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def full_bundle(tiny_run, tiny_sets, tmp_path_factory):
    evaluation, calibration = tiny_sets
    out = tmp_path_factory.mktemp("bundles") / "tiny"
    result = export_bundle(tiny_run, out, evaluation, calibration, ExportOptions(allow_partial=True, latency_repeats=3))
    return result


def test_every_format_and_precision_is_built_and_judged(full_bundle):
    by_name = {v.name: v for v in full_bundle.variants}
    fallbacks = {f"{fmt}-w8a16" for fmt in ("onnx", "tflite") if not by_name[f"{fmt}-int8"].passed}
    assert set(by_name) == {
        "onnx-fp32",
        "onnx-fp16",
        "onnx-int8",
        "tflite-fp32",
        "tflite-fp16",
        "tflite-int8",
        "tflite-w8-dynamic",
        "coreml-fp16",
        "coreml-w8",
        "coreml-palette6",
        *fallbacks,
    }, "a w8a16 fallback is built exactly when the true int8 variant of its format fails"
    for variant in full_bundle.variants:
        if variant.precision in ("fp32", "fp16"):
            assert variant.passed, (variant.name, variant.final.failures)
    onnx_int8 = next(v for v in full_bundle.variants if v.name == "onnx-int8")
    tried = [a.label for a in onnx_int8.attempts]
    assert tried[:3] == ["minmax", "entropy", "percentile"], "all three calibration methods are tried"
    methods_missed = all(a.failures for a in onnx_int8.attempts[:3])
    assert ("percentile-bias-corrected" in tried) == methods_missed, "bias correction is a remedy for a miss only"


def test_shipped_variants_reproduce_the_stored_reference_with_their_own_runtime(full_bundle, tiny_sets):
    bundle = load_bundle(full_bundle.bundle_dir)  # verifies every hash
    evaluation, _ = tiny_sets
    reference = load_reference(bundle.root / REFERENCE_FILE)
    reference.check_matches(evaluation)
    shipped = [v for v in bundle.manifest["variants"] if v["format"] != "coreml"]
    assert {v["name"] for v in shipped} >= {"onnx-fp32", "onnx-fp16", "tflite-fp32", "tflite-fp16"}
    for variant in shipped:
        embeddings = bundle.embedder(variant["name"]).embed(evaluation.images)
        cos = np.sum(embeddings * reference.embeddings, axis=1)
        assert cos.mean() == pytest.approx(variant["parity"]["mean_cos"], abs=1e-5), variant["name"]
        assert cos.mean() >= variant["limits"]["min_mean_cos"]
        assert (bundle.root / variant["file"]).exists()
        assert variant["latency_ms_1thread_batch1"] > 0


def test_manifest_is_a_model_card(full_bundle):
    manifest = load_bundle(full_bundle.bundle_dir).manifest
    assert manifest["input"]["size"] == [32, 32] and manifest["input"]["channels"] == "RGB"
    assert manifest["input"]["normalization"] == {
        "mean": 127.5,
        "std": 127.5,
        "formula": "(x - 127.5) / 127.5",
        "range": [-1, 1],
    }
    assert manifest["embedding"] == {"size": 32, "metric": "cosine", "comparison": manifest["embedding"]["comparison"]}
    thresholds = manifest["thresholds"]["cosine"]
    assert set(thresholds) == {"1e-03", "1e-04"} and thresholds["1e-04"] >= thresholds["1e-03"]
    assert len(manifest["source"]["checkpoint_sha256"]) == 64
    assert manifest["latency"]["cpu"]
    for name, entry in manifest["files"].items():
        assert len(entry["sha256"]) == 64 and entry["size"] > 0, name
    for rejected in manifest["rejected"]:
        assert rejected["failures"] and rejected["file"].startswith("rejected/")
        assert (full_bundle.bundle_dir / rejected["file"]).exists()
        assert json.loads((full_bundle.bundle_dir / "rejected" / rejected["name"] / "report.json").read_text())
    tflite = {v["name"]: v for v in manifest["variants"] if v["format"] == "tflite"}
    assert tflite["tflite-fp32"]["layout"] == "NHWC" and tflite["tflite-fp32"]["batch"] == 1
    report = (full_bundle.bundle_dir / "report.md").read_text()
    assert "onnx-int8" in report and "attempts" in report


def test_every_variant_names_its_weight_and_activation_precision_and_int8_means_8_bit_activations(full_bundle):
    manifest = load_bundle(full_bundle.bundle_dir).manifest
    for variant in manifest["variants"] + manifest["rejected"]:
        assert variant["weights"] and variant["activations"], variant["name"]
        if variant["format"] in ("onnx", "tflite") and variant["name"].endswith("-int8"):
            assert variant["weights"] == "int8" and variant["activations"].startswith("int8"), variant
        if variant["name"].endswith("-w8a16"):
            assert (variant["weights"], variant["activations"]) == ("int8", "int16"), variant
        assert "int8" not in variant["name"] or variant["activations"].startswith("int8"), variant
        assert variant["name"] == f"{variant['format']}-{variant['precision']}", "the name says the precision"
    dynamic = next(v for v in manifest["variants"] + manifest["rejected"] if v["name"] == "tflite-w8-dynamic")
    assert dynamic["activations"].startswith("fp32") and dynamic["file"].endswith("/tflite-w8-dynamic.tflite")
    coreml = next(v for v in manifest["variants"] + manifest["rejected"] if v["name"] == "coreml-w8")
    assert (coreml["weights"], coreml["activations"]) == ("int8", "fp16"), "Core ML w8 compresses weights only"
    card = (full_bundle.bundle_dir / "README.md").read_text()
    assert "| weights | activations |" in card


def test_coreml_variants_are_scored_from_their_stored_weights(full_bundle):
    coreml = [v for v in full_bundle.variants if v.format == "coreml"]
    assert [v.name for v in coreml] == ["coreml-fp16", "coreml-w8", "coreml-palette6"]
    fp16, int8, palette = (v.final.report.mean_cos for v in coreml)
    assert fp16 > 0.9999 and fp16 >= int8 >= palette, "more compression, more weight error"
    if sys.platform != "darwin":
        assert "weight compression only" in coreml[0].scored_by


@pytest.mark.skipif(
    sys.platform != "darwin",
    reason="Core ML predict exists only on macOS (coremltools has no "
    "Linux runtime); on Linux the stored weights are scored instead",
)
def test_coreml_predict_matches_reference_on_macos(full_bundle, tiny_sets):
    bundle = load_bundle(full_bundle.bundle_dir)
    embeddings = bundle.embedder("coreml-fp16").embed(tiny_sets[0].images)
    reference = load_reference(bundle.root / REFERENCE_FILE)
    assert np.sum(embeddings * reference.embeddings, axis=1).mean() > 0.999


def test_model_card_python_snippet_runs_and_matches_the_runtime(full_bundle, tiny_sets, tmp_path):
    bundle_dir = full_bundle.bundle_dir
    card = (bundle_dir / "README.md").read_text()
    snippet = re.search(r"```python\n(.*?)```", card, re.S).group(1)
    work = tmp_path / "app"
    shutil.copytree(bundle_dir, work)
    images = tiny_sets[0].images
    Image.fromarray(images[0]).save(work / "a.jpg", quality=95)
    Image.fromarray(images[1]).save(work / "b.jpg", quality=95)
    code = snippet + "\nprint(repr(score), same_person)\n"
    out = subprocess.run([sys.executable, "-c", code], cwd=work, capture_output=True, text=True, check=True).stdout
    score = float(out.split()[0])
    bundle = load_bundle(bundle_dir)
    name = Path(re.search(r"InferenceSession\('([^']+)'", snippet).group(1)).stem
    decoded = np.stack([np.asarray(Image.open(work / f).convert("RGB")) for f in ("a.jpg", "b.jpg")])
    a, b = bundle.embedder(name).embed(decoded)
    assert score == pytest.approx(float(a @ b), abs=1e-3)


def test_gate_rejects_a_miscalibrated_int8_model(tiny_run, tiny_sets, tmp_path):
    """Calibrating on black frames sets every activation range near zero: real faces saturate."""
    evaluation, calibration = tiny_sets
    black = InMemoryFaceDataset(
        np.zeros_like(calibration.images),
        calibration.labels,
        calibration.class_names,
        calibration.names,
        "black frames",
    )
    options = ExportOptions(
        formats=("onnx",),
        precisions=("int8",),
        latency_repeats=1,
        onnx_int8_recipes=(
            Int8Recipe("minmax"),
            Int8Recipe("percentile", "Percentile"),
            Int8Recipe("percentile-bias-corrected", "Percentile", bias_correction=True),
        ),
    )
    result = export_bundle(tiny_run, tmp_path / "b", evaluation, black, options)
    [variant] = result.variants
    assert variant.name == "onnx-int8" and not variant.passed and not variant.shipped
    assert [a.label for a in variant.attempts] == ["minmax", "percentile", "percentile-bias-corrected"]
    assert all(a.failures for a in variant.attempts)
    assert not (tmp_path / "b" / "models" / "onnx-int8.onnx").exists()
    assert (tmp_path / "b" / "rejected" / "onnx-int8" / "onnx-int8.onnx").exists()
    manifest = load_bundle(tmp_path / "b").manifest
    assert manifest["variants"] == [] and manifest["rejected"][0]["name"] == "onnx-int8"


def test_cli_exits_nonzero_when_a_variant_is_rejected_unless_partial_is_allowed(tiny_run, tmp_path):
    from nptface import cli

    black = tmp_path / "black"
    for person in ("a", "b"):
        (black / person).mkdir(parents=True)
        for i in range(100):
            Image.new("RGB", (32, 32)).save(black / person / f"{i:03d}.png")
    args = [
        "export",
        "--run",
        str(tiny_run),
        "--formats",
        "onnx",
        "--precisions",
        "int8",
        "--latency-repeats",
        "1",
        "--calibration",
        str(black),
        "--onnx-int8-recipes",
        "minmax,entropy",
    ]
    assert cli.main([*args, "--out", str(tmp_path / "strict")]) == 1
    assert (tmp_path / "strict" / "rejected" / "onnx-int8" / "report.json").exists()
    assert cli.main([*args, "--out", str(tmp_path / "partial"), "--allow-partial"]) == 0
    assert cli.main([*args, "--out", str(tmp_path / "partial")]) == 2, "an existing bundle is not overwritten"


def test_export_reports_each_variant_as_it_is_built_gated_and_judged(tiny_run, tiny_sets, tmp_path):
    evaluation, calibration = tiny_sets
    lines: list[str] = []
    export_bundle(
        tiny_run,
        tmp_path / "b",
        evaluation,
        calibration,
        ExportOptions(formats=("onnx",), precisions=("fp32", "fp16"), latency_repeats=1),
        progress=lines.append,
    )
    for name in ("onnx-fp32", "onnx-fp16"):
        mine = [line for line in lines if line.startswith(name)]
        assert "building" in mine[0] and "gating on 200 images" in mine[1] and mine[2].split(": ")[1].startswith("pass")
        assert "timing" in mine[3]


def test_a_converter_that_raises_costs_its_recipe_not_the_export(tiny_run, tiny_sets, tmp_path, monkeypatch):
    """A quantiser crash is a failed attempt: the next recipe is tried, and a variant none builds is rejected
    with the error, while the other variants ship."""
    from nptface.edge_export import onnx_export

    real = onnx_export.quantize_int8

    def flaky(source, path, images, recipe, *args, **kwargs):
        if recipe.label != "percentile":
            raise RuntimeError(f"quantiser crashed on {recipe.label}\nsecond line of the trace")
        return real(source, path, images, recipe, *args, **kwargs)

    monkeypatch.setattr(onnx_export, "quantize_int8", flaky)
    evaluation, calibration = tiny_sets
    lines: list[str] = []
    options = ExportOptions(
        formats=("onnx",),
        precisions=("fp32", "int8"),
        latency_repeats=1,
        allow_partial=True,
        onnx_int8_recipes=(Int8Recipe("minmax"), Int8Recipe("percentile", "Percentile")),
    )
    result = export_bundle(tiny_run, tmp_path / "b", evaluation, calibration, options, progress=lines.append)
    by_name = {v.name: v for v in result.variants}
    assert by_name["onnx-fp32"].shipped
    eight = by_name["onnx-int8"]
    crashed, built = eight.attempts
    assert crashed.report is None and crashed.failures == [
        "could not be built or run: RuntimeError: quantiser crashed on minmax"
    ]
    assert built.report is not None and eight.recipe_label == "percentile" and eight.built
    assert "onnx-int8 [minmax]: could not be built or run: RuntimeError: quantiser crashed on minmax" in lines

    monkeypatch.setattr(onnx_export, "quantize_int8", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    options.onnx_int8_recipes = (Int8Recipe("minmax"),)
    result = export_bundle(tiny_run, tmp_path / "c", evaluation, calibration, options)
    by_name = {v.name: v for v in result.variants}
    assert by_name["onnx-fp32"].shipped, "the other variants still ship"
    nothing = by_name["onnx-int8"]
    assert not nothing.built and not nothing.passed and not nothing.shipped
    assert nothing.to_dict()["parity"] is None and nothing.to_dict()["attempts"][0]["error"] == "OSError: disk full"
    report = json.loads((tmp_path / "c" / "rejected" / "onnx-int8" / "report.json").read_text())
    assert report["failures"] == ["could not be built or run: OSError: disk full"]
    manifest = load_bundle(tmp_path / "c").manifest
    assert [v["name"] for v in manifest["rejected"]] == ["onnx-int8"]
    assert "onnx-int8 | int8 | minmax | - | - | n/a" in (tmp_path / "c" / "report.md").read_text()
    assert "NOT BUILT" in (tmp_path / "c" / "report.md").read_text()
    assert "onnx-int8 (could not be built or run: OSError: disk full)" in (tmp_path / "c" / "README.md").read_text()
