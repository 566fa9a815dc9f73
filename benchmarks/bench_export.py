"""Claim: single-thread batch-1 latency of exported variants, as a ratio to PyTorch fp32.

The full pipeline (``export_bundle``: every ONNX and TFLite variant, parity-gated) on a trained
run, by default ``runs/quickstart`` (run ``./dev quickstart`` first), measured in one process next
to PyTorch fp32. The full-size model's runtimes, side by side, are ``bench_inference.py``'s.

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
from nptface.edge_export.evalset import synthetic_sets  # noqa: E402
from nptface.edge_export.pipeline import ExportOptions, export_bundle  # noqa: E402


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
            print(f"\n{args.run} ({size}x{size}), 1 thread, batch 1; PyTorch fp32 {result.torch_ms:.2f} ms")
            print("\n".join(header))
            for v in result.variants:
                if v.latency_ms is not None:
                    print(row(v.name, v.latency_ms, result.torch_ms, v.size_bytes))
        else:
            print(f"\nskipped: {args.run} is not a run directory (run ./dev quickstart first)")


if __name__ == "__main__":
    main()
