"""Which client replies a round may aggregate: malformed, foreign or outsized updates are refused.

Two gates, each naming its reason so the round log can say which node sent what. :func:`read_reply`
turns one reply into a :class:`Reply` or refuses it: an unregistered node, missing records, backbone
keys or shapes that differ from the global model's, NaN/inf weights, rows for identities the client
does not hold, rows/counts/ids that do not line up, non-positive counts. :func:`screen` then looks
at the round's replies together: a backbone update whose norm exceeds ``norm-screen`` times the
round's median (with at least three replies, so a median means something) or bank rows that break
the bank's own rules (:meth:`ProxyBank.validate`, with ``row-norm-limit``: clients send unit rows)
are rejected. FedAvg weights come from the validated per-row image counts, never from a free-form
metric.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from nptface.client import protocol
from nptface.server.federation.proxy_bank import ProxyBank, RowUpdate
from nptface.server.federation.registration import Client


@dataclass
class Reply:
    node_id: int
    client: str
    partition: int
    ids: list[str]
    rows: np.ndarray
    counts: np.ndarray
    weights: dict[str, torch.Tensor]
    samples: int
    metrics: dict[str, float]

    def row_update(self) -> RowUpdate:
        """The bank rows of this reply; the bank owner is the partition (stable across node restarts)."""
        return RowUpdate(self.partition, self.ids, self.rows, self.counts)


def read_reply(node: int, client: Client | None, held: list[str], content: Any,
               backbone: dict[str, torch.Tensor]) -> Reply | str:
    """A well-formed update from a registered node holding ``held``, or why it is refused."""
    if client is None:
        return "reply from an unregistered node"
    try:
        weights = content[protocol.BACKBONE].to_torch_state_dict()
        rows = content[protocol.ROWS_OUT]["rows"].numpy()
        counts = content[protocol.ROWS_OUT]["counts"].numpy()
        ids = list(content[protocol.CONFIG]["ids"])
        metrics = dict(content[protocol.METRICS])
    except (KeyError, TypeError, ValueError) as error:
        return f"malformed reply ({error})"
    if set(weights) != set(backbone):
        return f"backbone keys differ from the global model's ({len(set(weights) ^ set(backbone))} differ)"
    for name, tensor in weights.items():
        if tensor.shape != backbone[name].shape:
            return f"backbone tensor {name} has shape {tuple(tensor.shape)}, expected {tuple(backbone[name].shape)}"
        if not torch.isfinite(tensor).all():
            return f"backbone tensor {name} has NaN/inf values"
    foreign = sorted(set(ids) - set(held))
    if foreign:
        return f"rows for identities the client does not hold: {foreign[:3]}"
    if rows.ndim != 2 or counts.shape != (rows.shape[0],) or len(ids) != rows.shape[0]:
        return f"rows {rows.shape}, counts {counts.shape} and {len(ids)} ids do not line up"
    if not np.issubdtype(counts.dtype, np.integer) or (counts < 1).any():
        return "per-row counts must be positive integers"
    return Reply(node, client.name, client.partition, ids, rows, counts, weights, int(counts.sum()), metrics)


def update_norm(reply: Reply, backbone: dict[str, torch.Tensor]) -> float:
    """L2 norm of the reply's backbone update over all tensors together."""
    return torch.sqrt(sum(((reply.weights[k] - backbone[k]) ** 2).sum() for k in backbone)).item()


def screen(replies: list[Reply], backbone: dict[str, torch.Tensor], bank: ProxyBank, norm_screen: float,
           row_norm_limit: float) -> tuple[list[Reply], list[tuple[int, str]]]:
    """(kept replies, [(node, reason)] rejected); replies are taken in partition order, whatever their arrival."""
    replies = sorted(replies, key=lambda r: r.partition)
    norms = [update_norm(r, backbone) for r in replies]
    median = float(np.median(norms)) if norms else 0.0
    kept, rejected = [], []
    for reply, norm in zip(replies, norms, strict=True):
        if norm_screen and len(replies) >= 3 and median > 0 and norm > norm_screen * median:
            rejected.append((reply.node_id, f"update norm {norm:.3g} > {norm_screen} x median {median:.3g}"))
            continue
        problems = bank.validate(reply.row_update(), norm_limit=row_norm_limit or None)
        if problems:
            rejected.append((reply.node_id, "; ".join(problems)))
            continue
        kept.append(reply)
    return kept, rejected
