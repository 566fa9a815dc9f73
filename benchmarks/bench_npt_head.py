"""Claim: the streamed NPT head trains at a million identities in a fraction of full ArcFace's time and memory.

One forward + backward of the classification head alone (embeddings [B, d] -> loss -> gradients
for the embeddings and the [C, d] proxies), B = 256, d = 256, for each C in ``--classes``:

1. scalable NPT — :class:`~nptface.core.scalable_npt.ScalableNPTHead` (streamed top-k, gradient
   through B·(k+1) gathered proxy rows);
2. NPT on the full cosine matrix — :class:`~nptface.core.heads.NPTHead` (``torch.topk``);
3. the authors' formulation, re-implemented here from the paper's description: full matrix,
   target cosine set to 0, the whole row sorted in descending order, the first k taken;
4. full-softmax ArcFace — :class:`~nptface.core.heads.ArcFaceHead`;
5. Partial-FC-style sampled ArcFace (sample rate 0.1: every positive class kept, the rest of the
   sample drawn uniformly from the negatives), a small implementation in this file.

(pytorch-metric-learning's losses are not measured yet.) Each (variant, C) runs in a fresh
spawned process; time is the median of ``--repeats`` steps after one warm-up, and memory is that
process's peak RSS minus the peak RSS of a baseline process which builds the same proxies and
inputs and runs nothing, i.e. what the head's forward and backward add, the dense proxy
gradient included. Ratios are to full ArcFace at the same C.

    .venv/bin/python benchmarks/bench_npt_head.py [--classes 10000 100000 1000000 --repeats 5]
"""

from __future__ import annotations

import argparse
import importlib.util
import multiprocessing
import resource
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe  # noqa: E402

from nptface.core.heads import ArcFaceHead, HeadOutput, NPTHead, ProxyHead, ScalableNPTHead  # noqa: E402
from nptface.core.losses import margin_softmax_loss  # noqa: E402

BASELINE = "baseline (proxies + inputs only)"
REFERENCE = "ArcFace (full softmax)"


class ZeroedTargetNPTHead(NPTHead):
    """NPT as the paper's authors compute it: zero the target cosine, sort the row, take k."""

    name = "npt_zeroed_target"

    def loss(self, cosines: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        positive = cosines.gather(1, labels[:, None])
        zeroed = cosines.scatter(1, labels[:, None], 0.0)
        negatives = zeroed.sort(dim=1, descending=True).values[:, : self.k]
        scale = 2.0 * self.r * self.r
        return (scale * (negatives - positive + self.delta / scale).clamp_min(0.0).sum(dim=1)).mean()


class SampledArcFaceHead(ArcFaceHead):
    """ArcFace over a random subset of classes (Partial FC's sampling): all positives kept."""

    name = "sampled_arcface"

    def __init__(self, num_classes: int, embedding_dim: int, sample_rate: float = 0.1) -> None:
        super().__init__(num_classes, embedding_dim)
        self.sample_rate = sample_rate

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> HeadOutput:
        positives = labels.unique()
        num_sample = max(int(self.sample_rate * self.num_classes), len(positives))
        with torch.no_grad():
            priority = torch.rand(self.num_classes, device=labels.device)
            priority[positives] = 2.0  # above every random draw, so positives are always sampled
            sampled = priority.topk(num_sample).indices.sort().values
        cosines = F.normalize(embeddings, dim=1) @ F.normalize(self.proxies[sampled], dim=1).t()
        local_labels = torch.searchsorted(sampled, labels)
        loss = margin_softmax_loss(cosines, local_labels, s=self.s, angular_margin=self.angular_margin)
        return HeadOutput(loss=loss, cosines=cosines, predictions=sampled[cosines.detach().argmax(1)])


class MetricLearningArcFace(nn.Module):
    """pytorch-metric-learning's ArcFaceLoss (margin 28.6 degrees = 0.5 rad, scale 64): a real peer."""

    name = "pml_arcface"

    def __init__(self, num_classes: int, embedding_dim: int) -> None:
        super().__init__()
        from pytorch_metric_learning.losses import ArcFaceLoss

        self.loss_fn = ArcFaceLoss(num_classes, embedding_dim, margin=28.6, scale=64)
        self.proxies = self.loss_fn.W  # [d, C] there; only its .grad is read here

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> HeadOutput:
        empty = torch.empty(0)
        return HeadOutput(loss=self.loss_fn(embeddings, labels), cosines=empty, predictions=empty)


def build(variant: str, classes: int, dim: int, chunk_size: int) -> ProxyHead:
    if variant == BASELINE:
        return ProxyHead(classes, dim)
    if variant == "scalable NPT":
        return ScalableNPTHead(classes, dim, k=6, chunk_size=chunk_size)
    if variant == CANDIDATES:
        return ScalableNPTHead(classes, dim, k=6, chunk_size=chunk_size, candidate_rate=0.1)
    if variant == "NPT (full matrix, topk)":
        return NPTHead(classes, dim, k=6)
    if variant == "authors' NPT (zero + sort)":
        return ZeroedTargetNPTHead(classes, dim, k=6)
    if variant == REFERENCE:
        return ArcFaceHead(classes, dim)
    if variant == "Partial-FC ArcFace (rate 0.1)":
        return SampledArcFaceHead(classes, dim, sample_rate=0.1)
    if variant == PML:
        return MetricLearningArcFace(classes, dim)
    raise ValueError(f"unknown variant {variant!r}")


PML = "pytorch-metric-learning ArcFaceLoss"
CANDIDATES = "scalable NPT, candidates 0.1 (approx.)"
VARIANTS = (
    "scalable NPT",
    CANDIDATES,
    "NPT (full matrix, topk)",
    "authors' NPT (zero + sort)",
    REFERENCE,
    PML,
    "Partial-FC ArcFace (rate 0.1)",
)


@dataclass
class Measurement:
    seconds: float
    max_rss_bytes: int


def measure(
    variant: str, classes: int, batch: int, dim: int, repeats: int, chunk_size: int, threads: int
) -> Measurement:
    """Runs in a fresh process: build the head and inputs, time forward + backward, read peak RSS."""
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    head = build(variant, classes, dim, chunk_size)
    embeddings = torch.randn(batch, dim, requires_grad=True)
    labels = torch.randint(0, classes, (batch,))
    times = []
    if variant != BASELINE:
        for step in range(repeats + 1):
            embeddings.grad = head.proxies.grad = None
            start = time.perf_counter()
            head(embeddings, labels).loss.backward()
            if step:  # the first step allocates and warms caches
                times.append(time.perf_counter() - start)
    # Linux reports ru_maxrss in KiB.
    return Measurement(
        statistics.median(times) if times else 0.0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    )


def measure_in_fresh_process(*args: object) -> Measurement:
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(measure, *args).result()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--chunk-size", type=int, default=65536)
    parser.add_argument("--threads", type=int, default=0, help="torch threads per process (0: torch's default)")
    parser.add_argument(
        "--only",
        nargs="+",
        default=[],
        metavar="TEXT",
        help="run only the variants whose name contains one of these (the ArcFace reference always runs)",
    )
    args = parser.parse_args()
    print(describe())
    variants = VARIANTS
    if importlib.util.find_spec("pytorch_metric_learning") is None:
        variants = tuple(v for v in VARIANTS if v != PML)
        print("pytorch-metric-learning is not installed (pip install -e '.[bench]'): its ArcFaceLoss is skipped")
    if args.only:
        variants = tuple(v for v in variants if v == REFERENCE or any(text in v for text in args.only))
    threads = args.threads or "default"
    print(
        f"batch {args.batch}, dim {args.dim}, k 6, chunk {args.chunk_size}, torch threads {threads}, "
        f"median of {args.repeats} forward+backward steps, one fresh process per cell\n"
    )
    print(f"{'variant':38s} {'classes':>9s} {'ms/step':>10s} {'x ArcFace':>10s} {'peak MiB':>10s} {'x ArcFace':>10s}")
    for classes in args.classes:
        common = (classes, args.batch, args.dim, args.repeats, args.chunk_size, args.threads)
        baseline = measure_in_fresh_process(BASELINE, *common)
        results = {variant: measure_in_fresh_process(variant, *common) for variant in variants}
        reference = results[REFERENCE]
        reference_memory = max(reference.max_rss_bytes - baseline.max_rss_bytes, 1)
        for variant, result in results.items():
            memory = result.max_rss_bytes - baseline.max_rss_bytes
            print(
                f"{variant:38s} {classes:9d} {1e3 * result.seconds:10.1f} "
                f"{result.seconds / reference.seconds:10.3f} {memory / 2**20:10.1f} "
                f"{memory / reference_memory:10.3f}"
            )
        print(
            f"{'(baseline process peak)':38s} {classes:9d} {'':10s} {'':10s} {baseline.max_rss_bytes / 2**20:10.1f}\n"
        )


if __name__ == "__main__":
    main()
