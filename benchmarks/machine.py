"""What every benchmark prints first: the machine and software its numbers belong to."""

from __future__ import annotations

import os
import platform

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
