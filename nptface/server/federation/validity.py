"""What a backbone must satisfy before the server takes it: finite weights and BatchNorm statistics a batch can have.

A ratio to the round's median cannot tell a destroyed update from an honest one when a round has
two replies, and a weighted mean of updates can leave the set of usable models even when every
weight is finite: a BatchNorm ``running_var`` below zero makes ``sqrt(var + eps)`` NaN for every
input, so every embedding is NaN. These checks hold for one backbone on its own, whatever else
arrived in the round, so the server applies them to every reply and again to each round's
aggregate before it replaces the global model.
"""

from __future__ import annotations

import torch


def backbone_problems(weights: dict[str, torch.Tensor]) -> list[str]:
    """Why ``weights`` cannot be a usable backbone (empty when it can), naming each offending tensor."""
    problems = []
    for name, tensor in weights.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            problems.append(f"{name} has NaN/inf values")
        elif name.endswith("running_var") and (tensor < 0).any():
            problems.append(f"{name} has negative variances (min {tensor.min().item():.3g})")
        elif name.endswith("num_batches_tracked") and (tensor.is_floating_point() or (tensor < 0).any()):
            problems.append(f"{name} must be a non-negative integer count, got {tensor.tolist()}")
    return problems


def summarise(problems: list[str], shown: int = 3) -> str:
    """The first few problems and how many more, for one log line."""
    more = f" (and {len(problems) - shown} more)" if len(problems) > shown else ""
    return "; ".join(problems[:shown]) + more
