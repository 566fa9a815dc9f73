"""One round's aggregate: a candidate backbone from the kept replies, then their bank rows and the bank spread out.

The backbone is the sample-weighted FedAvg of the clients' backbones, or Flower's coordinate-wise
median / trimmed mean (``backbone-aggregation``), which a minority of poisoned updates cannot drag
and which ignore sample counts by design. Each bank row a client sent becomes the count-weighted
mean of what was sent for it (:meth:`ProxyBank.aggregate`), and a FedAwS-style spread-out step
then restores NPT's margin between all proxies. In ``local-heads`` mode (the FedPer-like baseline)
the bank only stores each client's rows for it: no negatives are shared and nothing is spread.
The combined backbone is only a candidate: the round loop makes it the global backbone, and takes
the rows, only once it has checked that it is a usable model.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from nptface.server.federation.config import FedConfig
from nptface.server.federation.proxy_bank import ProxyBank
from nptface.server.federation.screening import Reply


def combine_backbones(
    updates: list[dict[str, torch.Tensor]], samples: list[int], method: str, trim_fraction: float = 0.2
) -> dict[str, torch.Tensor]:
    """One backbone from the clients' ones: sample-weighted FedAvg, median or trimmed mean."""
    names = list(updates[0])
    if method == "fedavg":
        total = sum(max(n, 1) for n in samples)
        return {k: sum(u[k] * (max(n, 1) / total) for u, n in zip(updates, samples, strict=True)) for k in names}
    from flwr.server.strategy.aggregate import aggregate_median, aggregate_trimmed_avg

    arrays = [([u[k].numpy() for k in names], n) for u, n in zip(updates, samples, strict=True)]
    if method == "median":
        combined = aggregate_median(arrays)
    elif method == "trimmed-mean":
        combined = aggregate_trimmed_avg(arrays, trim_fraction)
    else:
        raise ValueError(f"backbone aggregation must be fedavg, median or trimmed-mean, got {method!r}")
    return {k: torch.as_tensor(np.asarray(a, dtype=np.float32)) for k, a in zip(names, combined, strict=True)}


def combine(kept: list[Reply], backbone: dict[str, torch.Tensor], config: FedConfig) -> dict[str, torch.Tensor]:
    """The round's candidate backbone: the kept replies combined, or ``backbone`` itself when none was kept.

    Only a candidate: the round loop checks it (:mod:`~nptface.server.federation.validity`, central
    evaluation) before it replaces the global backbone and before :func:`update_bank` runs.
    """
    if not kept:
        return backbone
    return combine_backbones(
        [r.weights for r in kept], [r.samples for r in kept], config.backbone_aggregation, config.trim_fraction
    )


def update_bank(kept: list[Reply], bank: ProxyBank, config: FedConfig) -> dict[str, Any]:
    """Take the kept replies' rows into ``bank`` (in place) and spread it out; the round's summary."""
    if not kept:
        return {
            "rows_updated": 0,
            "rows_registered": 0,
            "spread_min_sq_before": None,
            "spread_violations_before": None,
            "spread_violations_after": None,
            "min_sq_distance": bank.min_sq_distance(),
            "local_loss_first": None,
            "local_loss_last": None,
            "rows_imprinted": 0,
        }
    stats = bank.aggregate([r.row_update() for r in kept])
    spread = None
    if config.proxy_sharing != "local-heads" and config.spread_steps:
        frozen = bank.public_mask() if config.spread_freeze_public else None
        spread = bank.spread_out(min_sq_distance=config.client.delta, steps=config.spread_steps, frozen=frozen)
    return {
        "rows_updated": stats.updated,
        "rows_registered": stats.registered,
        "spread_min_sq_before": spread.before_min_sq_distance if spread else None,
        "spread_violations_before": spread.violating_pairs_before if spread else None,
        "spread_violations_after": spread.violating_pairs_after if spread else None,
        "min_sq_distance": bank.min_sq_distance(),
        "local_loss_first": float(np.mean([r.metrics.get("loss_first", np.nan) for r in kept])),
        "local_loss_last": float(np.mean([r.metrics.get("loss_last", np.nan) for r in kept])),
        # rows the clients had to imprint afresh (new identities; in dp mode also lost client state)
        "rows_imprinted": int(sum(r.metrics.get("imprinted", 0.0) for r in kept)),
    }
