"""Single-thread, batch-1 latency: the number that matters on a phone, measured the same way for all.

Each runtime embeds one image repeatedly after a warm-up and the median is reported: shared
machines are noisy and a median is robust to the odd preempted run. The CPU is named, because
int8 that is slower than fp32 on an AVX2 laptop can be 3x faster on an ARM phone.
"""

from __future__ import annotations

import platform
import statistics
import time

import numpy as np

from nptface.edge_export.runtimes import Embedder


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def median_latency_ms(embedder: Embedder, image: np.ndarray, repeats: int = 30, warmup: int = 5) -> float:
    batch = image[None] if image.ndim == 3 else image[:1]
    for _ in range(warmup):
        embedder.embed(batch)
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        embedder.embed(batch)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000
