"""What every benchmark prints first: the machine and software its numbers belong to."""

from __future__ import annotations

import os
import platform
import time

import numpy as np
import torch

from nptface.edge_export.latency import cpu_name as cpu_model  # one definition, shared with export reports


def load_average() -> str:
    try:
        return " ".join(f"{load:.2f}" for load in os.getloadavg())
    except OSError:
        return "unavailable"


def describe() -> str:
    return (
        f"cpu: {cpu_model()} ({os.cpu_count()} logical cores)\n"
        f"torch {torch.__version__}, numpy {np.__version__}, torch threads {torch.get_num_threads()}, "
        f"python {platform.python_version()}\nload average: {load_average()}"
    )


def timed_windows(
    model: torch.nn.Module,
    head: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    window: int,
) -> list[float]:
    """Seconds per training step (forward, head loss, backward, optimiser) over each window of ``window`` batches.

    The bare loop the trainer is measured against: one definition, so every benchmark compares the
    trainer with the same thing. The first window includes allocation and cache warm-up; callers drop it.
    """
    model.train()
    seconds = []
    for start in range(0, len(batches) - window + 1, window):
        begin = time.perf_counter()
        for images, labels in batches[start : start + window]:
            loss = head(model(images), labels).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        seconds.append((time.perf_counter() - begin) / window)
    return seconds
