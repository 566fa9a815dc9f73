"""Claim: which layers make a true int8 (8-bit activation) ONNX model miss the parity gate, and which PTQ remedy helps.

Two tables on a trained run, both scored by the parity gate's own measures against the fp32 ONNX
model (1 - mean cosine, 1st-percentile cosine, decision flips at the FAR=1e-3 threshold, accuracy
drop):
1. one node at a time: only that node (its input and output activations and its weights) is
   quantised to int8, MinMax calibration, everything else stays fp32; ranked by flips, then 1 - cos;
2. the whole graph in int8 with each post-training remedy (calibration method, reduce_range,
   symmetric activations, a bigger calibration set, the most sensitive nodes left in float).
The fp32 ONNX export and the calibration ranges are computed once and reused by every row.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_int8_layers.py --run runs/quickstart [--top 15]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from machine import describe  # noqa: E402

from nptface.core.checkpoint import load_backbone  # noqa: E402
from nptface.core.mobilefacenet import fuse_bn  # noqa: E402
from nptface.core.pairs import largest_lfw_style_pairs  # noqa: E402
from nptface.edge_export import onnx_export  # noqa: E402
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

    def cache(self, method: str, images: int | None = None) -> Path:
        chosen = self.calibration.images[:images]
        key = (method, len(chosen))
        if key not in self.caches:
            self.caches[key] = self.work / f"ranges-{method}-{len(chosen)}.json"
            onnx_export.calibrate(self.prepared, chosen, method, self.caches[key])
        return self.caches[key]

    def quantize(
        self,
        label: str,
        method: str = "MinMax",
        only: list[str] | None = None,
        exclude: list[str] | None = None,
        reduce_range: bool = True,
        symmetric: bool = False,
        images: int | None = None,
    ) -> list[object]:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

        out = self.work / "q.onnx"
        with quiet():
            quantize_static(
                str(self.prepared),
                str(out),
                None,
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                reduce_range=reduce_range,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=getattr(CalibrationMethod, method),
                nodes_to_quantize=only,
                nodes_to_exclude=exclude,
                extra_options={"ActivationSymmetric": symmetric},
                calibration_cache_path=self.cache(method, images),
            )
        report = compare(
            self.reference,
            OnnxEmbedder(out, self.size).embed(self.evaluation.images),
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


def table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join([*lines, *("| " + " | ".join(str(c) for c in row) + " |" for row in rows)])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", default="runs/quickstart", help="a trained run directory")
    parser.add_argument("--top", type=int, default=15, help="rows of the per-node table to print")
    parser.add_argument("--calibration-images", type=int, default=4, help="per calibration identity (64 of them)")
    args = parser.parse_args()
    print(describe())
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        bench = Bench(Path(args.run), Path(tmp), args.calibration_images)
        header = ["int8 part", "1 - mean cos", "p1 cos", "flips", "acc drop (pt)", "gate"]
        quantisable = [(name, op) for name, op in bench.nodes() if op in ("Conv", "PRelu", "Add", "Gemm", "MatMul")]
        rows = [bench.quantize(f"{name} ({op})", only=[name]) for name, op in quantisable]
        rows.sort(key=lambda r: (float(str(r[3]).split()[0]), float(str(r[1]))), reverse=True)
        print(f"\n### One node in int8 (8-bit activations, MinMax), the rest fp32 — top {args.top} of {len(rows)}\n")
        print(table(header, rows[: args.top]))
        worst = [str(r[0]).split(" (")[0] for r in rows[:3]]
        by_type = {}
        for name, op in quantisable:
            by_type.setdefault(op, []).append(name)
        type_rows = [bench.quantize(f"all {op} ({len(names)})", only=names) for op, names in by_type.items()]
        print("\n### One op type in int8, the rest fp32\n")
        print(table(header, type_rows))
        remedies = [
            bench.quantize(f"MinMax, reduce_range, {len(bench.calibration)} calibration images (shipped default)"),
            bench.quantize("MinMax, full 8-bit range", reduce_range=False),
            bench.quantize("Entropy", "Entropy"),
            bench.quantize("Percentile 99.99 %", "Percentile"),
            bench.quantize("MinMax, symmetric activations", symmetric=True),
            bench.quantize("MinMax, 64 calibration images", images=64),
            bench.quantize(f"MinMax, worst node in float ({worst[0]}): mixed", exclude=worst[:1]),
            bench.quantize("MinMax, worst 3 nodes in float: mixed", exclude=worst),
        ]
        print("\n### Whole graph in int8 (8-bit activations) with each remedy\n")
        print(table(header, remedies))
    print(
        f"\n{time.perf_counter() - started:.0f} s in all; eval {len(bench.evaluation)} images, {len(bench.pairs)} pairs"
    )


if __name__ == "__main__":
    main()
