"""Claim: single-thread batch-1 latency of every exported variant, as a ratio to PyTorch fp32.

Exports a run (default: the full-size MobileFaceNet, 112 px, width 1.0, 256-d, with BatchNorm
statistics settled on synthetic faces — latency does not depend on training) to ONNX and
TFLite in one process and prints each variant's median latency next to PyTorch fp32 measured
in the same process. Parity numbers of an untrained model are not meaningful; the gate is
exercised on a trained model by ``nptface export`` and the tests.

    .venv/bin/python benchmarks/bench_export.py [--run runs/quickstart] [--repeats 50]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from machine import describe  # noqa: E402

from nptface.core.checkpoint import CheckpointMeta, save_checkpoint  # noqa: E402
from nptface.core.mobilefacenet import MobileFaceNet, MobileFaceNetConfig  # noqa: E402
from nptface.core.preprocess import normalize  # noqa: E402
from nptface.edge_export.evalset import synthetic_sets  # noqa: E402
from nptface.edge_export.pipeline import ExportOptions, export_bundle  # noqa: E402


def full_size_run(root: Path, images: np.ndarray) -> Path:
    torch.manual_seed(0)
    config = MobileFaceNetConfig()
    model = MobileFaceNet(config).train()
    with torch.no_grad():  # settle BatchNorm running statistics on faces
        for start in range(0, len(images), 64):
            model(normalize(images[start:start + 64]))
    meta = CheckpointMeta(model=config.to_dict(), head="npt", head_hparams={"k": 6}, class_names=["a", "b"])
    return save_checkpoint(root / "full", model.eval(), torch.nn.functional.normalize(torch.randn(2, 256)), meta)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", help="a trained run directory (default: an untrained full-size model)")
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    print(describe())
    with tempfile.TemporaryDirectory() as tmp:
        size = 112
        if args.run:
            from nptface.core.checkpoint import load_backbone

            size = load_backbone(args.run)[0].config.input_size
        evaluation, calibration = synthetic_sets(size, eval_identities=40, eval_images=5)
        run = Path(args.run) if args.run else full_size_run(Path(tmp), calibration.images)
        result = export_bundle(run, Path(tmp) / "bundle", evaluation, calibration,
                               ExportOptions(formats=("onnx", "tflite"), allow_partial=True,
                                             latency_repeats=args.repeats))
    torch_ms = float(result.table.split("\n")[2].split("|")[5])
    print(f"\nmedian latency, 1 thread, batch 1, {size}x{size} (PyTorch fp32 = {torch_ms:.2f} ms):")
    print("| variant | ms | × PyTorch fp32 | size KiB |")
    print("|---|---|---|---|")
    for v in result.variants:
        if v.latency_ms is not None:
            print(f"| {v.name} | {v.latency_ms:.2f} | {v.latency_ms / torch_ms:.2f} | {v.size_bytes / 1024:.0f} |")


if __name__ == "__main__":
    main()
