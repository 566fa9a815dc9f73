"""Claim: single-thread batch-1 latency of exported variants, as a ratio to PyTorch fp32.

Two parts, each measured in one process next to PyTorch fp32:
1. the full pipeline (``export_bundle``: every ONNX and TFLite variant, parity-gated) on a trained
   run, by default ``runs/quickstart`` (run ``./dev quickstart`` first);
2. the full-size MobileFaceNet (112 px, width 1.0, 256-d) as ONNX fp32 and TFLite fp32 — latency
   only: an untrained network's embeddings are too alike for the parity gate to mean anything.

    .venv/bin/python benchmarks/bench_export.py [--run runs/quickstart] [--repeats 50]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from machine import describe  # noqa: E402

from nptface.core.checkpoint import load_backbone  # noqa: E402
from nptface.core.mobilefacenet import MobileFaceNet, fuse_bn  # noqa: E402
from nptface.edge_export import onnx_export, tflite_export  # noqa: E402
from nptface.edge_export.evalset import synthetic_sets  # noqa: E402
from nptface.edge_export.latency import median_latency_ms  # noqa: E402
from nptface.edge_export.pipeline import ExportOptions, export_bundle  # noqa: E402
from nptface.edge_export.runtimes import LiteRTEmbedder, OnnxEmbedder, TorchEmbedder  # noqa: E402


def row(name: str, ms: float, base: float, size: int | None = None) -> str:
    return f"| {name} | {ms:.2f} | {ms / base:.2f} | {'-' if size is None else f'{size / 1024:.0f}'} |"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", default="runs/quickstart", help="a trained run directory")
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    print(describe())
    header = ["| variant | median ms | x PyTorch fp32 | size KiB |", "|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        if Path(args.run).is_dir():
            size = load_backbone(args.run)[0].config.input_size
            evaluation, calibration = synthetic_sets(size)
            result = export_bundle(
                args.run,
                Path(tmp) / "bundle",
                evaluation,
                calibration,
                ExportOptions(formats=("onnx", "tflite"), allow_partial=True, latency_repeats=args.repeats),
            )
            print(f"\n1. {args.run} ({size}x{size}), 1 thread, batch 1; PyTorch fp32 {result.torch_ms:.2f} ms")
            print("\n".join(header))
            for v in result.variants:
                if v.latency_ms is not None:
                    print(row(v.name, v.latency_ms, result.torch_ms, v.size_bytes))
        else:
            print(f"\n1. skipped: {args.run} is not a run directory (run ./dev quickstart first)")

        model = MobileFaceNet().eval()
        fused = fuse_bn(model)
        image = synthetic_sets(112, eval_identities=2, eval_images=1, calibration_identities=2, calibration_images=1)[
            0
        ].images[:1]
        onnx_path, tflite_path = Path(tmp) / "full.onnx", Path(tmp) / "full.tflite"
        onnx_export.export_fp32(fused, onnx_path, 112, {})
        tflite_export.export_fp32(fused, tflite_path, 112)
        base = median_latency_ms(TorchEmbedder(model, 112, threads=1), image[0], args.repeats)
        print(f"\n2. full-size MobileFaceNet 112x112, 1 thread, batch 1; PyTorch fp32 {base:.2f} ms")
        print("\n".join(header))
        print(
            row(
                "pytorch-fp32-bn-folded",
                median_latency_ms(TorchEmbedder(fused, 112, threads=1), image[0], args.repeats),
                base,
            )
        )
        print(
            row(
                "onnx-fp32",
                median_latency_ms(OnnxEmbedder(onnx_path, 112, threads=1), image[0], args.repeats),
                base,
                onnx_path.stat().st_size,
            )
        )
        print(
            row(
                "tflite-fp32",
                median_latency_ms(LiteRTEmbedder(tflite_path, 112, threads=1), image[0], args.repeats),
                base,
                tflite_path.stat().st_size,
            )
        )


if __name__ == "__main__":
    main()
