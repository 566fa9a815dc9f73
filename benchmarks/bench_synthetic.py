"""Claim: the procedural face renderer draws >= 500 images/s on one CPU core.

Renders ``--images`` images per domain in this one process, pinned to one core, ``--repeats``
times, and prints the median (min, max) throughput per domain and its ratio to the 500 img/s
target. CPU time / wall time per domain is printed too: well below 1.0 means the process was
waiting for the core (another job was running), so the numbers understate the renderer.

    .venv/bin/python benchmarks/bench_synthetic.py [--images 300 --repeats 5 --size 112 --domain wild --cpu 1]
"""

from __future__ import annotations

import os

# The renderer is single-threaded by design; keep BLAS from spreading one matmul over cores.
for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_model, load_average  # noqa: E402

from nptface.core.synthetic import CLIENT_IDS, DOMAINS, FaceRenderer  # noqa: E402

TARGET_IMAGES_PER_SECOND = 500.0


@dataclass
class DomainResult:
    domain: str
    rates: list[float]  # images/s, one per repeat
    cpu_over_wall: float  # over all repeats; ~1.0 when the core was ours alone

    @property
    def median(self) -> float:
        return statistics.median(self.rates)


def pin_to_one_core(cpu: int | None) -> str:
    if not hasattr(os, "sched_setaffinity"):
        return "not pinned (no sched_setaffinity on this platform)"
    allowed = sorted(os.sched_getaffinity(0))
    chosen = allowed[-1] if cpu is None else cpu
    if chosen not in allowed:
        raise SystemExit(f"--cpu {chosen} is not one of the cores this process may use: {allowed}")
    os.sched_setaffinity(0, {chosen})
    return f"pinned to core {chosen} of {allowed}"


def bench_domain(renderer: FaceRenderer, domain: str, images: int, repeats: int) -> DomainResult:
    identities = [CLIENT_IDS.start + i for i in range(images)]
    for identity in identities[:10]:  # warm caches and PIL's lazy imports outside the timing
        renderer.render(identity, 0, domain)
    rates, cpu_seconds, wall_seconds = [], 0.0, 0.0
    for repeat in range(repeats):
        cpu_start, wall_start = time.process_time(), time.perf_counter()
        for identity in identities:
            renderer.render(identity, repeat, domain)
        wall = time.perf_counter() - wall_start
        cpu_seconds += time.process_time() - cpu_start
        wall_seconds += wall
        rates.append(images / wall)
    return DomainResult(domain, rates, cpu_seconds / wall_seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300, help="images rendered per repeat and domain")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--domain", action="append", choices=sorted(DOMAINS), help="repeatable; default: every domain")
    parser.add_argument("--cpu", type=int, default=None, help="core to pin to; default: the last allowed one")
    args = parser.parse_args()
    if args.images < 1 or args.repeats < 1:
        parser.error("--images and --repeats must be >= 1")

    torch.set_num_threads(1)
    pinning = pin_to_one_core(args.cpu)
    print(f"cpu: {cpu_model()} ({os.cpu_count()} logical cores; {pinning})")
    print(
        f"torch {torch.__version__}, numpy {np.__version__}, torch threads {torch.get_num_threads()}, "
        f"python {platform.python_version()}"
    )
    print(f"load average before: {load_average()}")
    print(f"{args.images} images x {args.repeats} repeats per domain, {args.size}x{args.size} px, one process")

    renderer = FaceRenderer(args.size, seed=0)
    results = [bench_domain(renderer, domain, args.images, args.repeats) for domain in args.domain or list(DOMAINS)]

    print(f"\n{'domain':<16}{'median img/s':>13}{'min':>9}{'max':>9}{'cpu/wall':>10}{'x target':>10}")
    for result in results:
        print(
            f"{result.domain:<16}{result.median:>13.0f}{min(result.rates):>9.0f}{max(result.rates):>9.0f}"
            f"{result.cpu_over_wall:>10.2f}{result.median / TARGET_IMAGES_PER_SECOND:>10.2f}"
        )
    slowest = min(results, key=lambda result: result.median)
    verdict = "meets" if slowest.median >= TARGET_IMAGES_PER_SECOND else "MISSES"
    print(
        f"\ntarget: >= {TARGET_IMAGES_PER_SECOND:.0f} img/s on one core; slowest domain {slowest.domain!r} at "
        f"{slowest.median:.0f} img/s = {slowest.median / TARGET_IMAGES_PER_SECOND:.2f}x target ({verdict})"
    )
    print(f"load average after: {load_average()}")
    if min(result.cpu_over_wall for result in results) < 0.9:
        print("note: cpu/wall < 0.9 means this process waited for its core; another job was competing for it")


if __name__ == "__main__":
    main()
