"""Malicious clients for robustness tests, injected as a Flower client mod around the production ClientApp.

``poison = "scale:0,noise:1,flip:2"`` makes partition 0 send its backbone update and rows scaled
x100 (a boosting attack), partition 1 send Gaussian noise in place of its update (as large per
tensor as the global weights), and partition 2 flip identities: the photos of each of its
identities train the row of another one of its identities (a derangement, redrawn every round),
and that row is sent back under the other identity's name. The flip is label flipping done on the
messages — the row an attacker is sent for identity B comes back trained on A's photos — with
one difference from relabelling the photos: a row the bank has not seen yet starts from the mean
embedding of the photos that train it. The server is not told; the robust options (norm screens,
median / trimmed-mean aggregation) have to catch them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.clientapp.typing import ClientAppCallable

from nptface.client import protocol
from nptface.client.client_app import partition_of
from nptface.core.verification import unit_rows

KINDS = ("scale", "noise", "flip")
SCALE = 100.0


def parse_poison(spec: str) -> dict[int, str]:
    """``"scale:0,flip:2"`` → ``{0: "scale", 2: "flip"}``; a clear error for anything else."""
    out: dict[int, str] = {}
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        kind, _, partition = item.partition(":")
        if kind not in KINDS or not partition.strip().isdigit():
            raise ValueError(f"poison: expected KIND:PARTITION with KIND in {KINDS}, got {item!r}")
        if int(partition) in out:
            raise ValueError(f"poison: partition {partition} is listed twice")
        out[int(partition)] = kind
    return out


def derangement(n: int, seed: int) -> np.ndarray:
    """``mapping`` with ``mapping[i] != i`` for every ``i`` (n > 1): a cyclic shift of a random order."""
    order = np.random.default_rng(seed).permutation(n)
    mapping = np.empty(n, dtype=np.int64)
    mapping[order] = np.roll(order, 1)
    return mapping


def poison_update(
    kind: str, weights: dict[str, torch.Tensor], global_weights: dict[str, torch.Tensor], rows: np.ndarray, seed: int
) -> tuple[dict[str, torch.Tensor], np.ndarray]:
    """What a ``scale`` or ``noise`` attacker sends instead of its honest ``weights`` and ``rows``."""
    if kind == "scale":
        boosted = {k: global_weights[k] + SCALE * (w - global_weights[k]) for k, w in weights.items()}
        return boosted, rows * SCALE
    if kind == "noise":
        generator = torch.Generator().manual_seed(seed)
        noise = {
            k: torch.randn(w.shape, generator=generator) * global_weights[k].float().std().clamp_min(1e-3)
            for k, w in weights.items()
        }
        rng = np.random.default_rng(seed)
        return noise, unit_rows(rng.normal(size=rows.shape), name="noise rows")
    raise ValueError(f"poison_update handles scale and noise, not {kind!r}")


@dataclass(frozen=True)
class Poisoners:
    """Client mod: the partitions in ``attackers`` (partition -> kind) answer train requests maliciously."""

    attackers: dict[int, str]

    def __call__(self, msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        if msg.metadata.message_type != MessageType.TRAIN:
            return call_next(msg, context)
        partition = partition_of(context)
        kind = self.attackers.get(partition)
        if kind is None:
            return call_next(msg, context)
        seed = int(msg.content[protocol.CONFIG]["seed"]) + partition
        if kind == "flip":
            return _flip_identities(msg, context, call_next, partition, seed)
        reply = call_next(msg, context)
        rows = reply.content[protocol.ROWS_OUT]
        weights, sent_rows = poison_update(
            kind,
            reply.content[protocol.BACKBONE].to_torch_state_dict(),
            msg.content[protocol.BACKBONE].to_torch_state_dict(),
            rows["rows"].numpy(),
            seed,
        )
        return _reply(msg, reply, weights, sent_rows, rows["counts"].numpy())


def _flip_identities(
    msg: Message, context: Context, call_next: ClientAppCallable, partition: int, seed: int
) -> Message:
    """Photos of identity ``names[i]`` train the row of ``names[mapping[i]]``, which is sent back under that name."""
    config = msg.content[protocol.CONFIG]
    names = list(protocol.ClientSettings.from_record(config).plan().clients[partition].identities)
    mapping = derangement(len(names), seed)
    trained_by = {names[j]: names[i] for i, j in enumerate(mapping)}  # row identity -> identity whose photos train it
    request = RecordDict(dict(msg.content.items()))
    request[protocol.CONFIG] = ConfigRecord({**dict(config), "own_ids": [trained_by[i] for i in config["own_ids"]]})
    reply = call_next(Message(request, metadata=msg.metadata), context)
    if list(reply.content[protocol.CONFIG]["ids"]) != names:
        raise RuntimeError(f"partition {partition}: the reply's identities are not the partition plan's")
    rows = reply.content[protocol.ROWS_OUT]
    flipped_rows, flipped_counts = np.empty_like(rows["rows"].numpy()), np.empty_like(rows["counts"].numpy())
    flipped_rows[mapping], flipped_counts[mapping] = rows["rows"].numpy(), rows["counts"].numpy()
    return _reply(msg, reply, reply.content[protocol.BACKBONE].to_torch_state_dict(), flipped_rows, flipped_counts)


def _reply(
    msg: Message, reply: Message, weights: dict[str, torch.Tensor], rows: np.ndarray, counts: np.ndarray
) -> Message:
    """``reply`` with its backbone and bank rows replaced."""
    content = RecordDict(dict(reply.content.items()))
    content[protocol.BACKBONE] = ArrayRecord(weights)
    content[protocol.ROWS_OUT] = protocol.numpy_record(rows=np.asarray(rows, np.float32), counts=counts)
    return Message(content, reply_to=msg)
