"""Claim: the streamed NPT head trains at a million identities in a fraction of full ArcFace's time and memory.

One whole training step of the classification head (embeddings [B, d] -> loss -> gradients ->
optimiser step on the [C, d] proxies), B = 256, d = 256, SGD with the recipe's momentum 0.9
(Nesterov) and proxy weight decay 5e-4, for each C in ``--classes``:

1. scalable NPT, sparse rows — :class:`~nptface.core.heads.ScalableNPTHead` with a sparse
   gradient of its B·(k+1) rows and :class:`~nptface.server.training.lazy_sgd.LazyRowSGD`
   (the trainer's ``optim.sparse_proxies = true``);
2. scalable NPT — the same head with its dense ``[C, d]`` gradient and dense SGD;
   and the sparse one with ``candidate_rate = 0.1`` (negatives searched among a random 10 %
   plus each class's previous top-k: an approximation, sampled like Partial FC);
3. NPT on the full cosine matrix — :class:`~nptface.core.heads.NPTHead` (``torch.topk``);
4. the authors' formulation, re-implemented here from the paper's description: full matrix,
   target cosine set to 0, the whole row sorted in descending order, the first k taken;
5. full-softmax ArcFace — :class:`~nptface.core.heads.ArcFaceHead`, dense SGD;
6. Partial FC ArcFace (sample rate 0.1) with its own sparse update, as its authors train it:
   the sampled rows and their momentum are gathered into a small parameter, SGD steps it, both
   are scattered back; rows outside the sample keep weight and momentum frozen;
7. pytorch-metric-learning's ArcFaceLoss, dense SGD (when installed).

Each (variant, C) runs in a fresh spawned process; time is the median of ``--repeats`` whole
steps after one warm-up, and memory is that process's true peak RSS (proxies, gradients,
optimiser state and the interpreter with torch all included). The streamed NPT rows print the
model next to it: W + optimiser state (+ the dense gradient when dense) + O(B·(k+1)·d + chunk·d
+ B·chunk) working memory; the bare process (torch imported, nothing built) is printed once, so
the rest of the gap is visible. Ratios are to full ArcFace at the same C.

    .venv/bin/python benchmarks/bench_npt_head.py [--classes 10000 100000 1000000 --repeats 5]
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import multiprocessing
import resource
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe  # noqa: E402

from nptface.core.heads import ArcFaceHead, HeadOutput, NPTHead, ScalableNPTHead  # noqa: E402
from nptface.core.losses import margin_softmax_loss  # noqa: E402
from nptface.server.training.lazy_sgd import LazyRowSGD  # noqa: E402

K = 6
LR, MOMENTUM, WEIGHT_DECAY = 0.1, 0.9, 5e-4
BARE = "(bare process: torch imported)"
REFERENCE = "ArcFace (full softmax)"
SPARSE_NPT = "scalable NPT, sparse rows"
DENSE_NPT = "scalable NPT, dense SGD"
CANDIDATES = "scalable NPT, candidates 0.1, sparse (approx.)"
PFC = "Partial FC ArcFace 0.1, own sparse update"
PML = "pytorch-metric-learning ArcFaceLoss"


class ZeroedTargetNPTHead(NPTHead):
    """NPT as the paper's authors compute it: zero the target cosine, sort the row, take k."""

    name = "npt_zeroed_target"

    def loss(self, cosines: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        positive = cosines.gather(1, labels[:, None])
        zeroed = cosines.scatter(1, labels[:, None], 0.0)
        negatives = zeroed.sort(dim=1, descending=True).values[:, : self.k]
        scale = 2.0 * self.r * self.r
        return (scale * (negatives - positive + self.delta / scale).clamp_min(0.0).sum(dim=1)).mean()


class PartialFCArcFace(ArcFaceHead):
    """Partial FC (An et al. 2021) with its own update: only the sampled rows and their momentum move.

    Every positive class is kept, the rest of the sample drawn uniformly. The sampled rows are
    copied into a small leaf tensor, the loss backpropagates into it only, and Nesterov SGD with
    weight decay steps it with the gathered momentum; weights and momentum are scattered back.
    """

    name = "partialfc_own_update"

    def __init__(self, num_classes: int, embedding_dim: int, sample_rate: float = 0.1) -> None:
        super().__init__(num_classes, embedding_dim)
        self.sample_rate = sample_rate
        self.proxies.requires_grad_(False)
        self.register_buffer("momentum", torch.zeros_like(self.proxies))

    def train_step(self, embeddings: torch.Tensor, labels: torch.Tensor) -> None:
        positives = labels.unique()
        num_sample = max(int(self.sample_rate * self.num_classes), len(positives))
        with torch.no_grad():
            priority = torch.rand(self.num_classes, device=labels.device)
            priority[positives] = 2.0  # above every random draw, so positives are always sampled
            sampled = priority.topk(num_sample).indices.sort().values
        active = self.proxies[sampled].requires_grad_()
        cosines = F.normalize(embeddings, dim=1) @ F.normalize(active, dim=1).t()
        loss = margin_softmax_loss(
            cosines, torch.searchsorted(sampled, labels), s=self.s, angular_margin=self.angular_margin
        )
        loss.backward()
        with torch.no_grad():
            update = active.grad.add(active, alpha=WEIGHT_DECAY)
            velocity = self.momentum[sampled].mul_(MOMENTUM).add_(update)
            self.proxies[sampled] = active.add_(update.add_(velocity, alpha=MOMENTUM), alpha=-LR)
            self.momentum[sampled] = velocity


class MetricLearningArcFace(nn.Module):
    """pytorch-metric-learning's ArcFaceLoss (margin 28.6 degrees = 0.5 rad, scale 64): a real peer."""

    name = "pml_arcface"

    def __init__(self, num_classes: int, embedding_dim: int) -> None:
        super().__init__()
        from pytorch_metric_learning.losses import ArcFaceLoss

        self.loss_fn = ArcFaceLoss(num_classes, embedding_dim, margin=28.6, scale=64)
        self.proxies = self.loss_fn.W  # [d, C] there

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> HeadOutput:
        empty = torch.empty(0)
        return HeadOutput(loss=self.loss_fn(embeddings, labels), cosines=empty, predictions=empty)


def sgd(head: nn.Module, sparse: bool = False) -> torch.optim.SGD:
    kind = LazyRowSGD if sparse else torch.optim.SGD
    return kind([head.proxies], lr=LR, momentum=MOMENTUM, nesterov=True, weight_decay=WEIGHT_DECAY)


def build_step(variant: str, classes: int, dim: int, chunk_size: int) -> Callable[[torch.Tensor, torch.Tensor], None]:
    """The variant's whole training step: forward, backward, optimiser step on the proxies."""
    if variant == PFC:
        return PartialFCArcFace(classes, dim, sample_rate=0.1).train_step
    if variant in (SPARSE_NPT, DENSE_NPT, CANDIDATES):
        head: nn.Module = ScalableNPTHead(
            classes, dim, k=K, chunk_size=chunk_size, candidate_rate=0.1 if variant == CANDIDATES else 0.0
        )
    else:
        head = {
            "NPT (full matrix, topk)": functools.partial(NPTHead, k=K),
            "authors' NPT (zero + sort)": functools.partial(ZeroedTargetNPTHead, k=K),
            REFERENCE: ArcFaceHead,
            PML: MetricLearningArcFace,
        }[variant](classes, dim)
    sparse = variant in (SPARSE_NPT, CANDIDATES)
    optimizer = sgd(head, sparse=sparse)
    if sparse:
        head.lazy_rows = optimizer.lazy_rows(head.proxies)

    def step(embeddings: torch.Tensor, labels: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        head(embeddings, labels).loss.backward()
        optimizer.step()

    return step


VARIANTS = (
    SPARSE_NPT,
    DENSE_NPT,
    CANDIDATES,
    "NPT (full matrix, topk)",
    "authors' NPT (zero + sort)",
    REFERENCE,
    PML,
    PFC,
)


def memory_model(variant: str, classes: int, batch: int, dim: int, chunk_size: int) -> int | None:
    """W + optimiser state (+ dense gradient) + O(B·(k+1)·d + chunk·d + B·chunk) working memory, in bytes."""
    if variant not in (SPARSE_NPT, DENSE_NPT):
        return None
    matrix = 4 * classes * dim
    chunk = min(chunk_size, classes)
    working = 4 * (batch * (K + 1) * dim + chunk * dim + batch * chunk)
    if variant == SPARSE_NPT:
        return 2 * matrix + 8 * classes + working  # weights, momentum, each row's last step
    return 3 * matrix + working  # weights, dense gradient, momentum


@dataclass
class Measurement:
    seconds: float
    max_rss_bytes: int


def measure(
    variant: str, classes: int, batch: int, dim: int, repeats: int, chunk_size: int, threads: int
) -> Measurement:
    """Runs in a fresh process: build the head and optimiser, time whole steps, read the peak RSS."""
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    times = []
    if variant != BARE:
        step = build_step(variant, classes, dim, chunk_size)
        embeddings = torch.randn(batch, dim, requires_grad=True)
        for repeat in range(repeats + 1):
            labels = torch.randint(0, classes, (batch,))
            embeddings.grad = None
            start = time.perf_counter()
            step(embeddings, labels)
            if repeat:  # the first step allocates gradients and optimiser state, and warms caches
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
        f"batch {args.batch}, dim {args.dim}, k {K}, chunk {args.chunk_size}, torch threads {threads}, SGD lr {LR} "
        f"momentum {MOMENTUM} Nesterov, weight decay {WEIGHT_DECAY}; median of {args.repeats} whole steps "
        f"(forward + backward + optimiser step), true peak RSS, one fresh process per cell\n"
    )
    bare = measure_in_fresh_process(BARE, 2, args.batch, args.dim, 0, args.chunk_size, args.threads)
    print(f"{BARE}: peak RSS {bare.max_rss_bytes / 2**20:.0f} MiB\n")
    print(
        f"{'variant':42s} {'classes':>9s} {'ms/step':>10s} {'x ArcFace':>10s} {'peak MiB':>10s} {'x ArcFace':>10s}"
        f" {'model MiB':>10s}"
    )
    for classes in args.classes:
        common = (classes, args.batch, args.dim, args.repeats, args.chunk_size, args.threads)
        results = {variant: measure_in_fresh_process(variant, *common) for variant in variants}
        reference = results[REFERENCE]
        for variant, result in results.items():
            model = memory_model(variant, classes, args.batch, args.dim, args.chunk_size)
            print(
                f"{variant:42s} {classes:9d} {1e3 * result.seconds:10.1f} "
                f"{result.seconds / reference.seconds:10.3f} {result.max_rss_bytes / 2**20:10.1f} "
                f"{result.max_rss_bytes / reference.max_rss_bytes:10.3f} "
                f"{'' if model is None else f'{model / 2**20:10.1f}'}"
            )
        print()
    print(
        "model MiB = W + optimiser state (+ dense gradient) + 4 bytes x (B(k+1)d + chunk d + B chunk); "
        "the measured peak also holds the bare process and the allocator's slack"
    )


if __name__ == "__main__":
    main()
