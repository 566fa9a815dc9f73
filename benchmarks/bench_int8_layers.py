"""Claim: which layers make a true int8 (8-bit activation) ONNX model miss the parity gate, and which PTQ remedy helps.

Tables on a trained run, scored by the parity gate's own measures against the fp32 ONNX model
(1 - mean cosine, 1st-percentile cosine, decision flips at the FAR=1e-3 threshold, accuracy drop),
after one line on how crowded that threshold is (a flip costs little error where many pairs sit
near it):
1. activation ranges: calibrated min..max against the 0.01..99.99th percentile span (outliers);
2. one node at a time (``--no-node-table`` skips it): only that node is quantised to int8,
   MinMax calibration, everything else stays fp32; ranked by flips, then 1 - cos;
3. one op type, or the end layers (GDC + embedding conv, the int8 output), alone in int8;
4. the whole graph in int8 with each post-training remedy (calibration method and set,
   reduce_range, per-tensor weights, the embedding conv or its output in float, bias correction).
The fp32 ONNX export and the calibration ranges are computed once and reused by every row.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_int8_layers.py --run runs/quickstart [--top 15] [--no-node-table]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from machine import describe  # noqa: E402

from nptface.core.checkpoint import load_backbone  # noqa: E402
from nptface.core.datasets import InMemoryFaceDataset  # noqa: E402
from nptface.core.mobilefacenet import fuse_bn  # noqa: E402
from nptface.core.pairs import largest_lfw_style_pairs  # noqa: E402
from nptface.core.synthetic import DOMAINS  # noqa: E402
from nptface.core.verification import pair_scores  # noqa: E402
from nptface.edge_export import onnx_export  # noqa: E402
from nptface.edge_export.bias_correction import add_missing_biases, correct_biases  # noqa: E402
from nptface.edge_export.evalset import synthetic_sets  # noqa: E402
from nptface.edge_export.parity import DEFAULT_LIMITS, compare, score_embeddings, verdict  # noqa: E402
from nptface.edge_export.quiet import quiet  # noqa: E402
from nptface.edge_export.runtimes import OnnxEmbedder  # noqa: E402


class Bench:
    def __init__(self, run: Path, work: Path, calibration_images: int) -> None:
        model, _ = load_backbone(run)
        self.size = model.config.input_size
        self.work = work
        self.evaluation, self.calibration = synthetic_sets(self.size, calibration_images=calibration_images)
        self.fp32 = work / "fp32.onnx"
        onnx_export.export_fp32(fuse_bn(model).eval(), self.fp32, self.size, {})
        from onnxruntime.quantization.shape_inference import quant_pre_process

        self.prepared = work / "prepared.onnx"
        with quiet():
            quant_pre_process(str(self.fp32), str(self.prepared), skip_symbolic_shape=True)
        self.pairs = largest_lfw_style_pairs(self.evaluation.labels, where="evaluation set")
        self.reference = OnnxEmbedder(self.fp32, self.size).embed(self.evaluation.images)
        self.reference_scores = score_embeddings(self.reference, self.evaluation.labels, self.pairs)
        self.caches: dict[tuple[str, int], Path] = {}

    def nodes(self) -> list[tuple[str, str]]:
        import onnx

        return [(n.name, n.op_type) for n in onnx.load(str(self.prepared)).graph.node]

    def cache(self, method: str, images: int | None = None, calibration: InMemoryFaceDataset | None = None) -> Path:
        source = calibration or self.calibration
        chosen = source.images[:images]
        key = (method, source.source, len(chosen))
        if key not in self.caches:
            self.caches[key] = self.work / f"ranges-{len(self.caches)}.json"
            onnx_export.calibrate(self.prepared, chosen, method, self.caches[key])
        return self.caches[key]

    def build(
        self,
        out: Path,
        method: str = "MinMax",
        only: list[str] | None = None,
        exclude: list[str] | None = None,
        reduce_range: bool = True,
        symmetric: bool = False,
        images: int | None = None,
        source: Path | None = None,
        per_channel: bool = True,
        calibration: InMemoryFaceDataset | None = None,
    ) -> None:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

        with quiet():
            quantize_static(
                str(source or self.prepared),
                str(out),
                None,
                quant_format=QuantFormat.QDQ,
                per_channel=per_channel,
                reduce_range=reduce_range,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=getattr(CalibrationMethod, method),
                nodes_to_quantize=only,
                nodes_to_exclude=exclude,
                extra_options={"ActivationSymmetric": symmetric},
                calibration_cache_path=self.cache(method, images, calibration),
            )

    def quantize(
        self, label: str, bias_correction: bool = False, float_output: bool = False, **options: Any
    ) -> list[object]:
        out = self.work / "q.onnx"
        if bias_correction:
            with_biases = self.work / "with-biases.onnx"
            shutil.copyfile(self.prepared, with_biases)
            add_missing_biases(with_biases)
            self.build(out, source=with_biases, **options)
            feeds = onnx_export._calibration_batches(self.calibration.images, batch_size=32)
            correct_biases(with_biases, out, feeds)
        else:
            self.build(out, **options)
        if float_output:
            keep_output_float(out)
        return self.score(label, out)

    def score(self, label: str, model: Path) -> list[object]:
        report = compare(
            self.reference,
            OnnxEmbedder(model, self.size).embed(self.evaluation.images),
            self.evaluation.labels,
            self.pairs,
            self.reference_scores,
        )
        gate = "pass" if not verdict(report, DEFAULT_LIMITS["int8"]) else "fail"
        return [
            label,
            f"{1 - report.mean_cos:.5f}",
            f"{report.p1_cos:.4f}",
            f"{report.flip_share * 100:.2f} %",
            f"{report.accuracy_drop:+.2f}",
            gate,
        ]

    def threshold_crowding(self) -> str:
        """How many pairs sit near the FAR=1e-3 threshold: the flips an embedding error of a given size costs."""
        threshold = self.reference_scores.thresholds["1e-03"]
        scores = pair_scores(self.reference, self.pairs.index_a, self.pairs.index_b)
        near = np.mean(np.abs(scores - threshold) < 0.01) * 100
        tar = np.mean(scores[self.pairs.is_same] >= threshold) * 100
        return (
            f"FAR=1e-3 threshold {threshold:.3f}: {tar:.1f} % of genuine pairs above it, "
            f"{near:.2f} % of all pairs within +-0.01 of it"
        )

    def larger_calibration(self) -> InMemoryFaceDataset:
        return synthetic_sets(self.size, eval_images=1, calibration_images=16)[1]

    def mixed_calibration(self) -> InMemoryFaceDataset:
        """The shipped calibration identities, 2 images each in four synthetic domains (lighting, camera, pose)."""
        parts = [synthetic_sets(self.size, domain, eval_images=1, calibration_images=2)[1] for domain in DOMAINS]
        images = np.concatenate([part.images for part in parts])
        labels = np.concatenate([part.labels for part in parts])
        return InMemoryFaceDataset(images, labels, parts[0].class_names, source="synthetic held-out, 4 domains")

    def ranges(self, images: int = 64) -> list[list[object]]:
        """Each activation's calibrated range against its 0.01-99.99 percentile span: outliers stretch the int8 grid."""
        import onnx
        import onnxruntime as ort

        model = onnx.load(str(self.prepared))
        names = [(n.output[0], n.op_type) for n in model.graph.node if n.op_type in ("Conv", "PRelu", "Add")]
        present = {o.name for o in model.graph.output}
        model.graph.output.extend(
            onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
            for name, _ in names
            if name not in present
        )
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        feed = onnx_export._calibration_batches(self.calibration.images[:images], batch_size=images)[0]
        values = session.run([name for name, _ in names], feed)
        rows = []
        for (name, op), value in zip(names, values, strict=True):
            low, high = np.percentile(value, [0.01, 99.99])
            span = float(value.max() - value.min())
            rows.append(
                [
                    f"{name} ({op})",
                    f"{value.min():.2f} .. {value.max():.2f}",
                    f"{low:.2f} .. {high:.2f}",
                    f"{span / max(high - low, 1e-12):.2f}",
                ]
            )
        return rows


def keep_output_float(path: Path) -> None:
    """Drop the quantise/dequantise pairs after the last Conv: the embedding leaves it as int32 -> float, not int8."""
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    last_conv = [n for n in graph.node if n.op_type == "Conv"][-1].output[0]
    tail, dropped = {last_conv}, []
    for node in graph.node:
        if node.input and node.input[0] in tail:
            tail.update(node.output)
            if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
                dropped.append(node)
    rename = {}
    for node in dropped:
        rename[node.output[0]] = rename.get(node.input[0], node.input[0])
    for node in dropped:
        graph.node.remove(node)
    outputs = {o.name for o in graph.output}
    for node in graph.node:
        for i, name in enumerate(node.input):
            node.input[i] = rename.get(name, name)
    for old, new in rename.items():
        if old in outputs:  # the graph output keeps its name: rename the tensor that now produces it
            for node in graph.node:
                for i, name in enumerate(node.output):
                    if name == new:
                        node.output[i] = old
    onnx.save(model, str(path))


def table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join([*lines, *("| " + " | ".join(str(c) for c in row) + " |" for row in rows)])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", default="runs/quickstart", help="a trained run directory")
    parser.add_argument("--top", type=int, default=15, help="rows of the per-node table to print")
    parser.add_argument("--calibration-images", type=int, default=4, help="per calibration identity (64 of them)")
    parser.add_argument("--no-node-table", action="store_true", help="skip the one-node-at-a-time table (slowest)")
    args = parser.parse_args()
    print(describe())
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        bench = Bench(Path(args.run), Path(tmp), args.calibration_images)
        print(bench.threshold_crowding())
        header = ["int8 part", "1 - mean cos", "p1 cos", "flips", "acc drop (pt)", "gate"]
        ranges = bench.ranges()
        ends = [r for r in ranges if "(Conv)" in str(r[0])][-2:]  # the GDC and the embedding conv
        ranges.sort(key=lambda r: float(str(r[3])), reverse=True)
        print("\n### Activation ranges on 64 calibration images: min..max vs 0.01..99.99th percentile\n")
        print(table(["tensor", "min .. max", "0.01 .. 99.99 %", "span ratio"], [*ranges[:10], *ends]))
        quantisable = [(name, op) for name, op in bench.nodes() if op in ("Conv", "PRelu", "Add", "Gemm", "MatMul")]
        worst = []
        if not args.no_node_table:
            rows = [bench.quantize(f"{name} ({op})", only=[name]) for name, op in quantisable]
            rows.sort(key=lambda r: (float(str(r[3]).split()[0]), float(str(r[1]))), reverse=True)
            print(
                f"\n### One node in int8 (8-bit activations, MinMax), the rest fp32 — top {args.top} of {len(rows)}\n"
            )
            print(table(header, rows[: args.top]))
            worst = [str(r[0]).split(" (")[0] for r in rows[:3]]
        by_type: dict[str, list[str]] = {}
        for name, op in quantisable:
            by_type.setdefault(op, []).append(name)
        convs = by_type["Conv"]
        type_rows = [bench.quantize(f"all {op} ({len(names)})", only=names) for op, names in by_type.items()]
        type_rows += [
            bench.quantize("all but the last 2 Conv (GDC, embedding)", exclude=convs[-2:]),
            bench.quantize("only the last 2 Conv (GDC, embedding)", only=convs[-2:]),
            bench.quantize("all, int8 graph output dropped (embedding Conv out as float)", float_output=True),
        ]
        print("\n### One op type (or part) in int8, the rest fp32\n")
        print(table(header, type_rows))
        n = len(bench.calibration)
        remedies = [
            bench.quantize(f"MinMax, reduce_range, {n} calibration images (shipped default)"),
            bench.quantize("MinMax, per-tensor weights", per_channel=False),
            bench.quantize("MinMax, full 8-bit range", reduce_range=False),
            bench.quantize("Entropy", method="Entropy"),
            bench.quantize("Percentile 99.99 %", method="Percentile"),
            bench.quantize("MinMax, 64 calibration images", images=64),
            bench.quantize("MinMax, embedding Conv in float", exclude=convs[-1:]),
            bench.quantize("MinMax, float output (int8 embedding Conv, no int8 requantise)", float_output=True),
            bench.quantize("MinMax + bias correction", bias_correction=True),
            bench.quantize("MinMax + bias correction + float output", bias_correction=True, float_output=True),
            bench.quantize("Percentile + bias correction", bias_correction=True, method="Percentile"),
            bench.quantize("MinMax, 1024 calibration images (64 ids x 16)", calibration=bench.larger_calibration()),
            bench.quantize("MinMax, 512 calibration images, 4 domains", calibration=bench.mixed_calibration()),
        ]
        if worst:
            remedies.append(bench.quantize(f"MinMax, worst 3 nodes in float ({', '.join(worst)})", exclude=worst))
        print("\n### Whole graph in int8 (8-bit activations) with each remedy\n")
        print(table(header, remedies))
    print(
        f"\n{time.perf_counter() - started:.0f} s in all; eval {len(bench.evaluation)} images, {len(bench.pairs)} pairs,"
        f" {len(bench.calibration)} calibration images"
    )


if __name__ == "__main__":
    main()
