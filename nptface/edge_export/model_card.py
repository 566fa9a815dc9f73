"""The bundle's README: a model card a mobile developer can act on without reading our code.

It states what the manifest states (input, normalisation, metric, thresholds per FAR, every
variant's parity and latency) and shows how to call each runtime. The Python snippet is run by
the test suite; the Kotlin (LiteRT) and Swift (Core ML) snippets follow the documented APIs but
are not compiled here, and say so.
"""

from __future__ import annotations

from typing import Any


def _variant_rows(manifest: dict[str, Any]) -> list[str]:
    rows = ["| file | format | precision | size | ms (1 thread, batch 1) | mean cos to fp32 | acc drop (pt) | input |",
            "|---|---|---|---|---|---|---|---|"]
    for v in manifest["variants"]:
        ms = "n/a" if v["latency_ms_1thread_batch1"] is None else f"{v['latency_ms_1thread_batch1']:.2f}"
        dtype = v.get("input_dtype", "float32")
        rows.append(f"| `{v['file']}` | {v['format']} | {v['precision']} ({v['recipe']}) | "
                    f"{v['size_bytes'] / 1024:.0f} KiB | {ms} | {v['parity']['mean_cos']:.5f} | "
                    f"{v['parity']['accuracy_drop']:+.2f} | {v['layout']} {dtype}, batch {v['batch']} |")
    return rows


def render_model_card(manifest: dict[str, Any]) -> str:
    size = manifest["input"]["size"][0]
    dim = manifest["embedding"]["size"]
    thresholds = manifest["thresholds"]["cosine"]
    t3 = thresholds.get("1e-03")
    threshold_lines = [f"- FAR {far}: cosine >= {value:.4f}" for far, value in sorted(thresholds.items(), reverse=True)]
    onnx_file = next((v["file"] for v in manifest["variants"] if v["format"] == "onnx"), "models/onnx-fp32.onnx")
    tflite = next((v for v in manifest["variants"] if v["format"] == "tflite"), None)
    tflite_file = tflite["file"] if tflite else "models/tflite-fp32.tflite"
    rejected = manifest.get("rejected", [])
    lines = [
        f"# nptface face embedder — {manifest['model']['architecture']} {dim}-d",
        "",
        f"Trained with the NPT loss ({manifest['source']['head']}, {manifest['source']['head_hparams']}) on "
        f"{manifest['source']['training_identities']} identities; source checkpoint sha256 "
        f"`{manifest['source']['checkpoint_sha256'][:16]}…`. Exported {manifest['created']}.",
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
        f"Latency: median, single thread, batch 1, on {manifest['latency']['cpu']} (a desktop CPU: int8 pays off "
        "on ARM/NPUs, less so here). Every variant passed the parity gate against `reference.npz` "
        "(see `report.md`).",
    ]
    if rejected:
        lines += ["", "Rejected by the gate (not for use; reports in `rejected/`): "
                  + ", ".join(f"{r['name']} ({'; '.join(r['failures'])})" for r in rejected)]
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
        "## Kotlin (Android, LiteRT) — written against the documented API, not compiled here",
        "```kotlin",
        "import org.tensorflow.lite.Interpreter",
        "",
        f"val interpreter = Interpreter(loadModelFile(\"{tflite_file}\"), Interpreter.Options().setNumThreads(2))",
        f"// input [1, {size}, {size}, 3] float32 NHWC, RGB, (v - 127.5f) / 127.5f; int8 files: quantise with the",
        "// input tensor's scale/zero point (interpreter.getInputTensor(0).quantizationParams())",
        f"val input = Array(1) {{ Array({size}) {{ Array({size}) {{ FloatArray(3) }} }} }}",
        f"val output = Array(1) {{ FloatArray({dim}) }}",
        "interpreter.run(input, output)",
        "val e = output[0]; val n = kotlin.math.sqrt(e.sumOf { (it * it).toDouble() }).toFloat()",
        "val embedding = FloatArray(e.size) { e[it] / n }",
        "```",
        "",
        "## Swift (iOS/macOS, Core ML) — written against the documented API, not compiled here",
        "```swift",
        "import CoreML",
        "",
        "let model = try MLModel(contentsOf: compiledURL)  // MLModel.compileModel(at: mlpackageURL)",
        f"let input = try MLMultiArray(shape: [1, 3, {size}, {size}], dataType: .float32)  // NCHW, RGB, (v-127.5)/127.5",
        "let out = try model.prediction(from: MLDictionaryFeatureProvider(dictionary: [\"input\": input]))",
        "let e = out.featureValue(for: \"embedding\")!.multiArrayValue!",
        "// L2-normalise e, then compare by dot product against the threshold above",
        "```",
        "",
    ]
    return "\n".join(lines)
