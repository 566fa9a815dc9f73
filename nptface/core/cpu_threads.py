"""How many CPU threads a run uses and how they wait, so that a busy shared machine slows a run down instead of stalling it.

PyTorch's CPU kernels run on an OpenMP team whose threads, by default, spin at every barrier
waiting for the slowest member. On a machine whose cores other work also uses, one descheduled
member leaves the others spinning on the remaining cores: a 2-core machine under load ran a
training step at 1-3 img/s with all cores against 20-30 img/s with one thread (BENCHMARKS.md).
``device.cpu_threads = 0`` therefore means the cores this process may use less the ones the
recent load average says are busy (at least one), and the command line asks OpenMP to sleep
rather than spin at barriers (``OMP_WAIT_POLICY=PASSIVE``), which OpenMP reads once, when torch
loads it: only a process that sets it before importing torch gets it, and a user's own setting
is kept. This module imports nothing heavy so the command line can call it first.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

WAIT_POLICY = "OMP_WAIT_POLICY"


def prefer_passive_waiting(environ: MutableMapping[str, str] = os.environ) -> str:
    """Ask OpenMP threads to sleep at barriers unless the user chose a policy; the policy in effect.

    Only effective when called before torch is imported (OpenMP reads it when it loads).
    """
    return environ.setdefault(WAIT_POLICY, "PASSIVE")


def resolve_cpu_threads(setting: int, cores: int, load: float, world_size: int = 1) -> int:
    """Threads per rank for ``device.cpu_threads = setting``: as set, or 0 = the cores the load leaves idle.

    ``cores`` are those this process may run on, ``load`` the 1-minute load average from before the
    run starts (so not counting it). Never fewer than one thread per rank.
    """
    if setting < 0:
        raise ValueError(f"device.cpu_threads must be >= 0 (0 = the idle cores), got {setting}")
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    threads = setting or min(cores, cores - round(load))
    return max(1, threads // world_size)


def auto_cpu_threads(setting: int, world_size: int = 1) -> tuple[int, str]:
    """(threads per rank, why) on this machine now: its usable cores and its load average."""
    cores = len(os.sched_getaffinity(0))
    load = os.getloadavg()[0]
    threads = resolve_cpu_threads(setting, cores, load, world_size)
    if setting:
        return threads, f"device.cpu_threads={setting} over {world_size} rank(s)"
    return threads, f"device.cpu_threads=0: {cores} usable core(s), load average {load:.1f}, {world_size} rank(s)"
