"""Claim: how many images/s one training step of MobileFaceNet + NPT processes on this machine.

Times forward + NPT loss + backward + SGD step on random 112x112 (full) and 64x64 width-0.5
(the quickstart's) inputs, and, side by side in the same process, the same step without the
head (backbone output summed as a dummy loss), so the ratio shows what the NPT head costs.
Median of ``--repeats`` timed steps after warm-up.

    .venv/bin/python benchmarks/bench_train_step.py [--batch 64 --repeats 7 --classes 1000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe  # noqa: E402

from nptface.core.heads import NPTHead  # noqa: E402
from nptface.core.mobilefacenet import MobileFaceNet, MobileFaceNetConfig  # noqa: E402

VARIANTS = {
    "full (width 1.0, 112 px)": MobileFaceNetConfig(embedding_dim=256, width=1.0, input_size=112),
    "quickstart (width 0.5, 64 px)": MobileFaceNetConfig(embedding_dim=256, width=0.5, input_size=64),
}


def time_steps(model: MobileFaceNet, head: NPTHead | None, batch: int, repeats: int) -> list[float]:
    size = model.config.input_size
    x = torch.randn(batch, 3, size, size)
    y = torch.randint(0, head.num_classes if head else 2, (batch,))
    params = list(model.parameters()) + (list(head.parameters()) if head else [])
    optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9)
    rates = []
    for step in range(repeats + 2):
        start = time.perf_counter()
        embeddings = model(x)
        loss = head(embeddings, y).loss if head else embeddings.sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step >= 2:  # the first steps allocate and warm caches
            rates.append(batch / (time.perf_counter() - start))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--classes", type=int, default=1000)
    args = parser.parse_args()
    torch.manual_seed(0)
    print(describe())
    print(f"batch {args.batch}, {args.classes} proxies, median of {args.repeats} steps\n")
    print(f"{'model':32s} {'NPT step img/s':>15s} {'bare step img/s':>16s} {'NPT/bare':>9s}")
    for name, config in VARIANTS.items():
        model = MobileFaceNet(config)
        head = NPTHead(args.classes, config.embedding_dim, k=6)
        bare, npt = [], []
        for _ in range(2):  # interleave so drift hits both alike
            bare += time_steps(model, None, args.batch, args.repeats // 2 + 1)
            npt += time_steps(model, head, args.batch, args.repeats // 2 + 1)
        b, n = statistics.median(bare), statistics.median(npt)
        print(f"{name:32s} {n:15.1f} {b:16.1f} {n / b:9.3f}")


if __name__ == "__main__":
    main()
