"""Which client replies a round may aggregate: malformed, foreign or outsized updates are refused.

Two gates, each naming its reason so the round log can say which node sent what. :func:`read_reply`
turns one reply into a :class:`Reply` or refuses it: an unregistered node, missing records, backbone
keys or shapes that differ from the global model's, rows for identities the client does not hold,
rows/counts/ids that do not line up, non-positive counts. :func:`screen` then rejects, whatever
else arrived in the round, a backbone that is not a usable model
(:func:`~nptface.server.federation.validity.backbone_problems`: NaN/inf weights, negative BatchNorm
variances) and an update whose norm exceeds ``update-norm-limit`` times the global backbone's norm,
bounds that hold in a round with one or two replies; an update norm above ``norm-screen`` times the
round's median (with at least three replies, so a median means something), and bank rows that
break the bank's own rules (:meth:`ProxyBank.validate`, with ``row-norm-limit``: clients send unit
rows) are rejected too. FedAvg weights come from the validated per-row image counts, never from a
free-form metric.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from nptface.client import protocol
from nptface.server.federation.proxy_bank import ProxyBank, RowUpdate
from nptface.server.federation.registration import Client
from nptface.server.federation.validity import backbone_problems, summarise


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


def read_reply(
    node: int, client: Client | None, held: list[str], content: Any, backbone: dict[str, torch.Tensor]
) -> Reply | str:
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


def backbone_norm(backbone: dict[str, torch.Tensor]) -> float:
    """L2 norm of the global backbone over all tensors together: the scale of the absolute update bound."""
    return torch.sqrt(sum((tensor.double() ** 2).sum() for tensor in backbone.values())).item()


def screen(
    replies: list[Reply],
    backbone: dict[str, torch.Tensor],
    bank: ProxyBank,
    norm_screen: float,
    row_norm_limit: float,
    update_norm_limit: float,
) -> tuple[list[Reply], list[tuple[int, str]]]:
    """(kept replies, [(node, reason)] rejected); replies are taken in partition order, whatever their arrival."""
    rejected = []
    usable = []
    for reply in sorted(replies, key=lambda r: r.partition):
        problems = backbone_problems(reply.weights)
        if problems:
            rejected.append((reply.node_id, f"not a usable backbone: {summarise(problems)}"))
        else:
            usable.append(reply)
    norms = [update_norm(r, backbone) for r in usable]  # finite: a NaN norm would silence the median screen
    median = float(np.median(norms)) if norms else 0.0
    limit = update_norm_limit * backbone_norm(backbone)
    kept = []
    for reply, norm in zip(usable, norms, strict=True):
        if update_norm_limit and norm > limit:
            rejected.append(
                (
                    reply.node_id,
                    f"update norm {norm:.3g} > {update_norm_limit} x the global backbone's "
                    f"norm {limit / update_norm_limit:.3g}",
                )
            )
            continue
        if norm_screen and len(usable) >= 3 and median > 0 and norm > norm_screen * median:
            rejected.append((reply.node_id, f"update norm {norm:.3g} > {norm_screen} x median {median:.3g}"))
            continue
        problems = bank.validate(reply.row_update(), norm_limit=row_norm_limit or None)
        if problems:
            rejected.append((reply.node_id, "; ".join(problems)))
            continue
        kept.append(reply)
    return kept, rejected
