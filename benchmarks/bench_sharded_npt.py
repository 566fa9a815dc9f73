"""Claim: sharding the NPT proxies by class moves far less data per step than gathering logits or all-reducing [C, d].

Per training step, what the head's communication costs on W ranks (global batch B, embedding d,
k negatives, C classes), against the two alternatives:

1. sharded NPT (:mod:`nptface.server.training.sharding.sharded_npt`): all-gather of the B/W x d embeddings and the
   B/W labels; all-gather of every rank's top-(k+1) ``(value, index)`` pairs for all B queries;
   all-reduce of the ``[B, 1 + k]`` selected cosines, and in backward of their gradient and of
   the ``[B, d]`` embedding gradient;
2. gathering logits: each rank's ``[B, C/W]`` cosine block all-gathered into ``[B, C]``;
3. replicated proxies (plain DDP): all-reduce of the ``[C, d]`` proxy gradient.

Bytes are computed analytically (sent per rank by ring algorithms: an all-gather of n bytes per
rank sends (W-1)·n, an all-reduce of n bytes 2(W-1)/W·n) and the same collectives are timed on W
gloo ranks on this machine (loopback), side by side in one run (round-robin), medians of
``--repeats`` after one warm-up round. The backbone's DDP all-reduce is the same in every scheme and left out. A second
table times the whole head step, compute included: the sharded head's forward + backward vs the
replicated streamed head's forward + backward plus the ``[C, d]`` all-reduce.

    .venv/bin/python benchmarks/bench_sharded_npt.py [--classes 10000 100000 --repeats 5]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe  # noqa: E402

from nptface.core.scalable_npt import scalable_npt_loss  # noqa: E402
from nptface.server.training.sharding.proxy_shard import shard_bounds  # noqa: E402
from nptface.server.training.sharding.sharded_npt import sharded_npt_loss  # noqa: E402

FLOAT, LONG = 4, 8
SCHEMES = ("sharded NPT (top-k pairs)", "gather logits [B, C]", "replicated: all-reduce [C, d]")


def analytic_bytes(classes: int, batch: int, dim: int, k: int, world: int) -> dict[str, float]:
    """Bytes each rank sends per step, by scheme (ring all-gather / all-reduce)."""
    local = batch // world

    def gather(n: float) -> float:
        return (world - 1) * n

    def reduce(n: float) -> float:
        return 2 * (world - 1) / world * n

    sharded = (
        gather(local * dim * FLOAT)
        + gather(local * LONG)
        + gather(batch * (k + 1) * (FLOAT + LONG))
        + 2 * reduce(batch * (1 + k) * FLOAT)
        + reduce(batch * dim * FLOAT)
    )
    return {
        SCHEMES[0]: sharded,
        SCHEMES[1]: gather(batch * classes / world * FLOAT),
        SCHEMES[2]: reduce(classes * dim * FLOAT),
    }


def _collectives(scheme: str, classes: int, batch: int, dim: int, k: int, world: int) -> Callable[[], None]:
    local = batch // world
    if scheme == SCHEMES[0]:
        gathers = [
            torch.randn(local, dim),
            torch.zeros(local, dtype=torch.long),
            torch.randn(batch, k + 1),
            torch.zeros(batch, k + 1, dtype=torch.long),
        ]
        reduces = [torch.randn(batch, 1 + k), torch.randn(batch, 1 + k), torch.randn(batch, dim)]
    elif scheme == SCHEMES[1]:
        gathers, reduces = [torch.randn(batch, -(-classes // world))], []
    else:
        gathers, reduces = [], [torch.randn(classes, dim)]

    def run() -> None:
        for tensor in gathers:
            dist.all_gather([torch.empty_like(tensor) for _ in range(world)], tensor)
        for tensor in reduces:
            dist.all_reduce(tensor)

    return run


def _head_steps(classes: int, batch: int, dim: int, k: int, world: int, rank: int) -> dict[str, Callable[[], None]]:
    generator = torch.Generator().manual_seed(0)
    proxies = torch.randn(classes, dim, generator=generator)
    labels = torch.randint(0, classes, (batch,), generator=generator)
    embeddings = torch.randn(batch, dim, generator=generator)
    local = batch // world
    mine = slice(rank * local, (rank + 1) * local)
    start, stop = shard_bounds(classes, world, rank)
    shard = proxies[start:stop].clone().requires_grad_()
    full = proxies.clone().requires_grad_()

    def sharded() -> None:
        emb = embeddings[mine].clone().requires_grad_()
        shard.grad = None
        sharded_npt_loss(emb, labels[mine], shard, start, classes, k=k).backward()

    def replicated() -> None:
        emb = embeddings[mine].clone().requires_grad_()
        full.grad = None
        scalable_npt_loss(emb, full, labels[mine], k=k).backward()
        dist.all_reduce(full.grad)

    return {"sharded NPT head (fwd + bwd)": sharded, "replicated streamed head + all-reduce [C, d]": replicated}


def _interleaved_medians(steps: dict[str, Callable[[], None]], repeats: int) -> dict[str, float]:
    """Median ms of each step, run round-robin (one warm-up round) so load swings hit all alike."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for i in range(repeats + 1):
        for name, step in steps.items():
            dist.barrier()
            begin = time.perf_counter()
            step()
            dist.barrier()
            if i:
                times[name].append(1e3 * (time.perf_counter() - begin))
    return {name: statistics.median(values) for name, values in times.items()}


def _rank(rank: int, world: int, port: int, args: argparse.Namespace) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        comm, steps = {}, {}
        for classes in args.classes:
            medians = _interleaved_medians(
                {scheme: _collectives(scheme, classes, args.batch, args.dim, args.k, world) for scheme in SCHEMES},
                args.repeats,
            )
            comm.update({(scheme, classes): ms for scheme, ms in medians.items()})
            medians = _interleaved_medians(
                _head_steps(classes, args.batch, args.dim, args.k, world, rank), args.repeats
            )
            steps.update({(name, classes): ms for name, ms in medians.items()})
        if rank == 0:
            _report(comm, steps, args, world)
    finally:
        dist.destroy_process_group()


def _report(comm: dict, steps: dict, args: argparse.Namespace, world: int) -> None:
    print(
        f"{'scheme':32s} {'classes':>8s} {'MB/step/rank':>13s} {'x sharded':>10s} {'ms (timed)':>11s} {'x sharded':>10s}"
    )
    for classes in args.classes:
        sizes = analytic_bytes(classes, args.batch, args.dim, args.k, world)
        for scheme in SCHEMES:
            print(
                f"{scheme:32s} {classes:8d} {sizes[scheme] / 1e6:13.3f} {sizes[scheme] / sizes[SCHEMES[0]]:10.0f} "
                f"{comm[scheme, classes]:11.2f} {comm[scheme, classes] / comm[SCHEMES[0], classes]:10.1f}"
            )
    print(f"\n{'head step, compute + communication':46s} {'classes':>8s} {'ms':>9s} {'x sharded':>10s}")
    for classes in args.classes:
        names = [name for name, c in steps if c == classes]
        reference = steps[names[0], classes]
        for name in names:
            print(f"{name:46s} {classes:8d} {steps[name, classes]:9.1f} {steps[name, classes] / reference:10.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--batch", type=int, default=256, help="global batch")
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--k", type=int, default=6)
    parser.add_argument("--world", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(describe())
    print(
        f"{args.world} gloo ranks on loopback, 1 torch thread each; global batch {args.batch}, dim {args.dim}, "
        f"k {args.k}; medians of {args.repeats} steps after one warm-up\n"
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_rank, args=(args.world, port, args), nprocs=args.world, join=True)


if __name__ == "__main__":
    main()
