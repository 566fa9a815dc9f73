"""The bundle's model card: Hugging Face layout, honest about synthetic training, snippets only for what ships."""

from __future__ import annotations

import copy
import json
import shutil

import pytest

from nptface.core.checkpoint import load_meta
from nptface.edge_export.latency import cpu_name
from nptface.edge_export.model_card import render_model_card
from nptface.edge_export.provenance import ever_synthetic, only_synthetic, training_data

SYNTHETIC = {"kind": "synthetic", "path": "", "domain": "wild", "identities": 300, "images": 9000}
REAL = {"kind": "imagefolder", "path": "/data/faces", "domain": None, "identities": 120, "images": 4000}


def _variant(fmt: str, file: str) -> dict:
    return {
        "file": file,
        "format": fmt,
        "precision": "fp32",
        "recipe": "fp32",
        "size_bytes": 4096,
        "latency_ms_1thread_batch1": 1.5,
        "parity": {"mean_cos": 0.99999, "accuracy_drop": 0.0},
        "layout": "NCHW",
        "batch": 1,
    }


def _manifest(data: dict, formats: tuple[str, ...] = ("onnx", "tflite", "coreml")) -> dict:
    files = {
        "onnx": "models/onnx-fp32.onnx",
        "tflite": "models/tflite-fp32.tflite",
        "coreml": "models/coreml-fp16.mlpackage",
    }
    return {
        "created": "2025-01-01T00:00:00+00:00",
        "model": {"architecture": "MobileFaceNet", "width": 1.0, "parameters": 1_000_000},
        "source": {
            "head": "npt",
            "head_hparams": {"k": 6},
            "training_identities": data["identities"],
            "checkpoint_sha256": "a" * 64,
            "training_data": data,
        },
        "input": {"size": [112, 112], "normalization": {"formula": "(x - 127.5) / 127.5"}},
        "embedding": {"size": 256},
        "thresholds": {"cosine": {"1e-03": 0.41, "1e-04": 0.52}, "calibrated_on": "synthetic held-out"},
        "evaluation": {
            "source": "synthetic held-out (wild, 200 ids x 10, seed 2024)",
            "images": 2000,
            "identities": 200,
            "pairs": 6000,
            "reference_accuracy": 0.97,
            "reference_tar_at_far_1e-3": 0.8,
            "protocol": "10 LFW-style folds",
        },
        "latency": {"cpu": "AMD EPYC 7B13 64-Core Processor", "machine": "x86_64", "repeats": 30},
        "variants": [_variant(fmt, files[fmt]) for fmt in formats],
        "rejected": [],
    }


def _front_matter(card: str) -> dict:
    yaml = pytest.importorskip("yaml")
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def test_the_card_opens_with_hugging_face_front_matter_and_its_results():
    meta = _front_matter(render_model_card(_manifest(SYNTHETIC)))
    assert meta["library_name"] == "nptface" and meta["pipeline_tag"] == "image-feature-extraction"
    assert {"face-recognition", "face-verification", "onnx", "tflite", "coreml"} <= set(meta["tags"])
    [result] = meta["model-index"][0]["results"]
    assert result["task"]["type"] == "face-verification"
    assert {m["type"]: m["value"] for m in result["metrics"]} == {"accuracy": 0.97, "tar_at_far_1e-3": 0.8}


def test_a_model_trained_on_synthetic_faces_says_so_plainly():
    card = render_model_card(_manifest(SYNTHETIC))
    meta = _front_matter(card)
    assert "synthetic-data" in meta["tags"] and meta["license"] == "apache-2.0"
    assert "**This model was trained only on synthetic faces.**" in card
    assert "say nothing about real photographs" in card and "expect far lower accuracy on real faces" in card


def test_a_model_trained_on_real_faces_names_its_data_and_leaves_the_licence_to_it():
    card = render_model_card(_manifest(REAL))
    meta = _front_matter(card)
    assert "synthetic-data" not in meta["tags"] and meta["license"] == "other"
    assert "only on synthetic faces" not in card and "real face images from `/data/faces`" in card


def test_the_card_has_use_limitations_evaluation_protocol_and_bias_sections():
    card = render_model_card(_manifest(REAL))
    for heading in (
        "## Intended use",
        "## Out-of-scope use",
        "## Training data",
        "## Limitations",
        "## Bias, risks and fairness",
        "## Evaluation",
    ):
        assert f"\n{heading}\n" in card, heading
    assert "Protocol: 10 LFW-style folds" in card and "demographic groups" in card


@pytest.mark.parametrize(
    ("formats", "languages"),
    [
        (("onnx",), {"python"}),
        (("tflite",), {"kotlin"}),
        (("coreml",), {"swift"}),
        (("onnx", "tflite", "coreml"), {"python", "kotlin", "swift"}),
    ],
)
def test_snippets_are_shown_only_for_formats_the_bundle_contains(formats, languages):
    card = render_model_card(_manifest(SYNTHETIC, formats))
    shown = {language for language in ("python", "kotlin", "swift") if f"```{language}\n" in card}
    assert shown == languages


def test_an_onnx_card_says_its_prelus_are_rewritten_exactly_at_load_time_not_in_the_file():
    card = render_model_card(_manifest(SYNTHETIC, ("onnx",)))
    assert "PReLU rewritten at load, not in the file" in card and "decompose_prelu" in card
    assert "slow generic kernel" in card and "exact algebra" in card and "shipped file keeps" in card
    assert "decompose_prelu" not in render_model_card(_manifest(SYNTHETIC, ("tflite",)))


def test_latency_names_the_cpu_by_its_model_name_not_a_guess_at_its_class():
    card = render_model_card(_manifest(SYNTHETIC))
    assert "AMD EPYC 7B13 64-Core Processor (x86_64)" in card and "desktop" not in card


def test_the_training_data_of_a_run_and_of_the_run_it_was_fine_tuned_from(tiny_run, tmp_path):
    data = training_data(tiny_run, load_meta(tiny_run))
    assert data["kind"] == "synthetic" and data["identities"] == 40 and only_synthetic(data)
    tuned = tmp_path / "tuned"
    shutil.copytree(tiny_run, tuned)
    meta = json.loads((tuned / "checkpoint.json").read_text())
    meta["extra"] = {**meta["extra"], "training_data": copy.deepcopy(REAL), "init": {"path": str(tiny_run)}}
    (tuned / "checkpoint.json").write_text(json.dumps(meta))
    data = training_data(tuned, load_meta(tuned))
    assert data["kind"] == "imagefolder" and data["init"]["kind"] == "synthetic"
    assert ever_synthetic(data) and not only_synthetic(data)


def test_an_exported_bundle_card_describes_its_own_run_and_formats(fp32_bundle):
    card = (fp32_bundle / "README.md").read_text()
    assert "trained only on synthetic faces" in card and cpu_name() in card
    assert "```python\n" in card and "```kotlin\n" in card and "```swift\n" not in card
    manifest = json.loads((fp32_bundle / "manifest.json").read_text())
    assert manifest["source"]["training_data"]["kind"] == "synthetic"
