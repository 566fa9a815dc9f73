"""The bundle's README: a model card in the Hugging Face layout that a mobile developer can act on.

YAML front matter (licence, library, pipeline tag, tags, and a ``model-index`` with the
evaluation results), then what the model is for and not for, what it was trained on (and, when
the faces were synthetic, what that means on real faces), its evaluation and protocol, the
caveats usual for face recognition, how to call it (input, thresholds per FAR) and every
variant's parity and latency on the named CPU. Code snippets are shown only for formats the
bundle contains. The Python snippet is run by the test suite; the Kotlin (LiteRT) and Swift
(Core ML) snippets follow the documented APIs but are not compiled here, and say so.
"""

from __future__ import annotations

import json
from typing import Any

from nptface.edge_export.numerics import upgrade_variant
from nptface.edge_export.provenance import ever_synthetic, only_synthetic

FORMAT_TAGS = {"onnx": "onnx", "tflite": "tflite", "coreml": "coreml"}


def _variant_rows(manifest: dict[str, Any]) -> list[str]:
    rows = [
        "| file | format | weights | activations | recipe | size | ms (1 thread, batch 1) | mean cos to fp32 "
        "| acc drop (pt) | input |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for v in map(upgrade_variant, manifest["variants"]):
        ms = "n/a" if v["latency_ms_1thread_batch1"] is None else f"{v['latency_ms_1thread_batch1']:.2f}"
        dtype = v.get("input_dtype", "float32")
        rows.append(
            f"| `{v['file']}` | {v['format']} | {v['weights']} | {v['activations']} | {v['recipe']} | "
            f"{v['size_bytes'] / 1024:.0f} KiB | {ms} | {v['parity']['mean_cos']:.5f} | "
            f"{v['parity']['accuracy_drop']:+.2f} | {v['layout']} {dtype}, batch {v['batch']} |"
        )
    return rows


def _yaml(value: Any) -> str:
    """A YAML scalar: JSON's quoting is valid YAML and never misreads a name as a number or a bool."""
    return json.dumps(value)


def _front_matter(manifest: dict[str, Any], formats: list[str], data: dict[str, Any], name: str) -> list[str]:
    evaluation = manifest["evaluation"]
    synthetic = only_synthetic(data)
    tags = ["face-recognition", "face-verification", "mobilefacenet", "npt-loss", *formats]
    if ever_synthetic(data):
        tags.append("synthetic-data")
    metrics = [("accuracy", evaluation["reference_accuracy"], "verification accuracy (10 folds)")]
    if evaluation.get("reference_tar_at_far_1e-3") is not None:
        metrics.append(("tar_at_far_1e-3", evaluation["reference_tar_at_far_1e-3"], "TAR @ FAR=1e-3"))
    lines = [
        "---",
        # Weights trained only on rendered faces carry the code's licence; others follow their data's terms.
        f"license: {'apache-2.0' if synthetic else 'other'}",
        "library_name: nptface",
        "pipeline_tag: image-feature-extraction",
        "tags:",
        *(f"- {tag}" for tag in tags),
        "model-index:",
        f"- name: {_yaml(name)}",
        "  results:",
        "  - task:",
        "      type: face-verification",
        "      name: Face verification (1:1, cosine)",
        "    dataset:",
        f"      name: {_yaml(evaluation['source'])}",
        f"      type: {_yaml(data_type(evaluation['source']))}",
        "    metrics:",
    ]
    for kind, value, label in metrics:
        lines += [f"    - type: {kind}", f"      value: {float(value):.4f}", f"      name: {_yaml(label)}"]
    return [*lines, "---", ""]


def data_type(source: str) -> str:
    return "synthetic" if source.startswith("synthetic") else "imagefolder"


def _describe_data(data: dict[str, Any]) -> str:
    kind = data.get("kind", "unknown")
    size = f"{data['identities']} identities" + (f", {data['images']} images" if data.get("images") else "")
    if kind == "synthetic":
        text = (
            f"synthetic faces rendered by nptface's generator ({size}"
            + (f", imaging domain {data['domain']}" if data.get("domain") else "")
            + ")"
        )
    elif kind in ("imagefolder", "recordio"):
        text = f"real face images from `{data.get('path') or 'a folder'}` ({kind}, {size})"
    elif kind == "federated":
        text = (
            f"the federation's clients' own images over {data.get('rounds')} rounds of federated learning: "
            "private data the server never saw, which this card cannot describe"
        )
    else:
        text = "data not recorded in the run directory"
    init = data.get("init")
    if isinstance(init, dict):
        text += f"; fine-tuned from `{init.get('path')}`, itself trained on {_describe_data(init)}"
    return text


def _use_and_limits(data: dict[str, Any]) -> list[str]:
    lines = [
        "## Intended use",
        "- 1:1 face verification (is this the same person?) and small-gallery 1:N identification on a device, "
        "with aligned, tightly cropped faces, by people who have the consent of the people enrolled.",
        "- A starting point to fine-tune on your own identities (`nptface train CONFIG --init-from RUN`).",
        "",
        "## Out-of-scope use",
        "- Surveillance, identifying people in public spaces or without their consent, and any decision with legal "
        "or similarly significant effects on a person without human review.",
        "- Inferring age, gender, ethnicity, emotion or any other attribute: the embedding is trained for identity "
        "only.",
        "- Unaligned or non-face images: detect and align faces first (the crops must look like the training crops).",
        "",
        "## Training data",
        f"Trained on {_describe_data(data)}.",
        "",
        "## Limitations",
    ]
    if only_synthetic(data):
        lines.append(
            "- **This model was trained only on synthetic faces.** Its numbers below are measured on "
            "synthetic faces too and say nothing about real photographs: real faces vary in ways the "
            "generator does not draw (real skin, hair, occlusion, expression, make-up, ageing, real camera "
            "noise and compression), so expect far lower accuracy on real faces and thresholds that do not "
            "hold there. Use it to try the pipeline end to end; fine-tune on real, consented face data "
            "and recalibrate the thresholds before any real use."
        )
    elif ever_synthetic(data):
        lines.append(
            "- Part of this model's training used synthetic faces: check its accuracy on real faces of the "
            "population you serve before relying on it."
        )
    lines += [
        "- A threshold holds a false-accept rate only on data like the data it was calibrated on: recalibrate on "
        "genuine and impostor pairs from your own cameras and population.",
        "- MobileFaceNet trades accuracy for speed; quantised variants lose a little more (see the parity columns).",
        "- Not a liveness or anti-spoofing check: a photo of a face can pass as the face.",
        "",
        "## Bias, risks and fairness",
        "- Face recognition error rates are known to differ across demographic groups (age, sex, skin tone) "
        "(NIST FRVT, Grother et al., 2019); this model has not been evaluated per group. Measure false accepts and "
        "false rejects per group on your own data before deployment.",
        "- A false accept can let the wrong person in; a false reject can lock someone out. Choose the operating "
        "point for the harm that matters more in your application and keep a fallback.",
        "- Face embeddings are biometric data (GDPR art. 9 and similar laws): store templates on the device or "
        "encrypted, obtain consent, and let people delete theirs.",
        "",
    ]
    return lines


def _prelu_rewrite_note() -> list[str]:
    """What nptface's own onnxruntime loader does to the file, so the card's ONNX latencies can be reproduced."""
    return [
        "**PReLU rewritten at load, not in the file.** nptface loads each float ONNX file with every PRelu "
        "rewritten as `a*y + relu((1-a)*y)` (`nptface.edge_export.onnx_prelu.decompose_prelu`), and the latencies "
        "above were measured that way. onnxruntime's CPU PRelu is a slow generic kernel that its x86 NCHWc layout "
        "pass does not know, so every PReLU costs a layout reorder; the rewrite keeps the whole network in that "
        "layout, several times faster. It is exact algebra (the same function; float32 results agree to a "
        "rounding or two) and int8 (quantise/dequantise) files load unchanged. The shipped file keeps the "
        "exporter's PRelu, which onnxruntime-web (WASM, no NCHWc) runs faster. The snippet above loads the file as "
        "shipped: on an x86 CPU, pass `decompose_prelu(onnx.load(path)).SerializeToString()` to "
        "`ort.InferenceSession` instead for the faster path.",
        "",
    ]


def _detector_lines(detector: dict[str, Any]) -> list[str]:
    """The shipped face detector: what it is, under which licence, where it came from, and how crops are aligned."""
    alignment = detector["alignment"]
    files = ", ".join(f"`{name}`" for name in detector["files"].values())
    return [
        "## Face detector",
        f"- {detector['name']} ({files}): finds faces and their keypoints ({', '.join(detector['keypoints'])}) "
        f"in a photo, input {detector['input_size']}x{detector['input_size']}, score >= {detector['min_score']}, "
        f"NMS IoU {detector['nms_iou']}.",
        f"- Licence: {detector['licence']}. Source: {detector['source']}. Details in `detector/README.md`.",
        f"- Alignment: the eyes, nose tip and mouth {alignment['mouth']} are mapped by a similarity transform onto "
        f"`{[[round(x, 4), round(y, 4)] for x, y in alignment['template']]}` in the {alignment['size']}x"
        f"{alignment['size']} crop the embedder reads.",
    ]


def render_model_card(manifest: dict[str, Any]) -> str:
    size = manifest["input"]["size"][0]
    dim = manifest["embedding"]["size"]
    thresholds = manifest["thresholds"]["cosine"]
    t3 = thresholds.get("1e-03")
    threshold_lines = [f"- FAR {far}: cosine >= {value:.4f}" for far, value in sorted(thresholds.items(), reverse=True)]
    formats = [fmt for fmt in FORMAT_TAGS if any(v["format"] == fmt for v in manifest["variants"])]
    onnx_file = next((v["file"] for v in manifest["variants"] if v["format"] == "onnx"), None)
    tflite_file = next((v["file"] for v in manifest["variants"] if v["format"] == "tflite"), None)
    rejected = [upgrade_variant(v) for v in manifest.get("rejected", [])]
    source = manifest["source"]
    data = source.get("training_data", {"kind": "unknown", "identities": source["training_identities"]})
    evaluation = manifest["evaluation"]
    latency = manifest["latency"]
    name = f"nptface-{manifest['model']['architecture'].lower()}-{dim}d"
    tar = evaluation.get("reference_tar_at_far_1e-3")
    lines = [
        *_front_matter(manifest, formats, data, name),
        f"# nptface face embedder — {manifest['model']['architecture']} {dim}-d",
        "",
        f"A face embedder for verification on devices: {manifest['model']['architecture']} (width "
        f"{manifest['model'].get('width')}, {manifest['model'].get('parameters', 0) / 1e6:.2f} M parameters), trained "
        f"with the `{source['head']}` head ({source['head_hparams']}) on {source['training_identities']} identities; "
        f"source checkpoint sha256 `{source['checkpoint_sha256'][:16]}…`. Exported {manifest['created']}.",
        "",
        *_use_and_limits(data),
        "## Evaluation",
        f"- Data: {evaluation['source']} — {evaluation['images']} images of {evaluation['identities']} identities "
        f"no training run saw, {evaluation['pairs']} verification pairs.",
        f"- Protocol: {evaluation.get('protocol', 'LFW-style 10-fold accuracy; TAR@FAR on every pair of the set')}.",
        f"- fp32 reference: accuracy {100 * evaluation['reference_accuracy']:.2f}%"
        + (f", TAR@FAR=1e-3 {100 * tar:.2f}%." if tar is not None else "."),
        "- Each variant's agreement with the reference is in the Files table; `report.md` has every attempt.",
        "",
        "## Input and output",
        f"- Input: an aligned face crop, RGB (not BGR), {size}x{size}, float32, normalised as "
        f"`{manifest['input']['normalization']['formula']}` (range [-1, 1]). Layout per file below.",
        f"- Output: a {dim}-d embedding. Compare two faces by **cosine**: L2-normalise both, take the dot product.",
        "",
        "## Thresholds (cosine, calibrated on the evaluation set with the fp32 model)",
        *threshold_lines,
        f"- Calibrated on: {manifest['thresholds']['calibrated_on']}. A threshold moves with the population and "
        "camera: recalibrate on your own genuine/impostor pairs before relying on a FAR.",
        "",
        "## Files",
        *_variant_rows(manifest),
        "",
        "Weights and activations say what each file computes in. Phone NPUs and DSPs (NNAPI, Edge TPU, "
        "Hexagon) need int8 activations: only files whose activations are int8 can run there whole. "
        "int16 activations (`w8a16` files) and float activations (`w8-dynamic`) run on CPUs and GPUs; Core ML's `w8` "
        "and `palette6` compress weights only and compute in fp16, as Apple's Neural Engine does.",
        "",
        f"Latency: median of {latency.get('repeats', 'several')} single-thread, batch-1 runs on the export machine's "
        f"CPU, {latency['cpu']}" + (f" ({latency['machine']})" if latency.get("machine") else "") + ". "
        "A phone's CPU or NPU gives other numbers, and int8's speed-up differs most: measure on the target "
        "device. Every variant passed the parity gate against `reference.npz` (see `report.md`).",
    ]
    if manifest.get("detector"):
        lines += ["", *_detector_lines(manifest["detector"])]
    if rejected:
        lines += [
            "",
            "Rejected (not for use; reports in `rejected/`): "
            + ", ".join(f"{r['name']} ({'; '.join(r['failures'])})" for r in rejected),
        ]
    if onnx_file is not None:
        lines += [
            "",
            "## Python (onnxruntime) — tested",
            "```python",
            "import numpy as np, onnxruntime as ort",
            "from PIL import Image",
            "",
            f"session = ort.InferenceSession('{onnx_file}', providers=['CPUExecutionProvider'])",
            "",
            "def embed(path):",
            f"    rgb = Image.open(path).convert('RGB').resize(({size}, {size}), Image.BILINEAR)",
            "    x = (np.asarray(rgb, dtype=np.float32) - 127.5) / 127.5",
            "    x = x.transpose(2, 0, 1)[None]  # NCHW",
            "    e = session.run(None, {session.get_inputs()[0].name: x})[0][0]",
            "    return e / np.linalg.norm(e)",
            "",
            "score = float(embed('a.jpg') @ embed('b.jpg'))",
            f"same_person = score >= {t3:.4f}  # FAR 1e-3" if t3 is not None else "same_person = score >= THRESHOLD",
            "```",
            "",
            *_prelu_rewrite_note(),
        ]
    if tflite_file is not None:
        lines += [
            "## Kotlin (Android, LiteRT) — written against the documented API, not compiled here",
            "```kotlin",
            "import org.tensorflow.lite.Interpreter",
            "",
            f'val interpreter = Interpreter(loadModelFile("{tflite_file}"), Interpreter.Options().setNumThreads(2))',
            f"// input [1, {size}, {size}, 3] float32 NHWC, RGB, (v - 127.5f) / 127.5f; int8 files: quantise with the",
            "// input tensor's scale/zero point (interpreter.getInputTensor(0).quantizationParams())",
            f"val input = Array(1) {{ Array({size}) {{ Array({size}) {{ FloatArray(3) }} }} }}",
            f"val output = Array(1) {{ FloatArray({dim}) }}",
            "interpreter.run(input, output)",
            "val e = output[0]; val n = kotlin.math.sqrt(e.sumOf { (it * it).toDouble() }).toFloat()",
            "val embedding = FloatArray(e.size) { e[it] / n }",
            "```",
            "",
        ]
    if "coreml" in formats:
        lines += [
            "## Swift (iOS/macOS, Core ML) — written against the documented API, not compiled here",
            "```swift",
            "import CoreML",
            "",
            "let model = try MLModel(contentsOf: compiledURL)  // MLModel.compileModel(at: mlpackageURL)",
            f"let input = try MLMultiArray(shape: [1, 3, {size}, {size}], dataType: .float32)  // NCHW, RGB, (v-127.5)/127.5",
            'let out = try model.prediction(from: MLDictionaryFeatureProvider(dictionary: ["input": input]))',
            'let e = out.featureValue(for: "embedding")!.multiArrayValue!',
            "// L2-normalise e, then compare by dot product against the threshold above",
            "```",
            "",
        ]
    return "\n".join(lines).rstrip("\n") + "\n"
