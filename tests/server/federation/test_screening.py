"""Screening: a reply is read or refused by reason, and outsized updates are rejected round by round."""

from __future__ import annotations

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from nptface.client import protocol
from nptface.server.federation.proxy_bank import ProxyBank
from nptface.server.federation.registration import Client
from nptface.server.federation.screening import Reply, read_reply, screen

BACKBONE = {
    "conv.weight": torch.linspace(-1, 1, 12).reshape(3, 4),
    "bn.bias": torch.tensor([0.5, -0.5]),
    "bn.running_var": torch.tensor([2.0, 3.0]),
}
CLIENT = Client("partition-0", 0)
HELD = ["c0-a", "c0-b"]


def content(weights=None, ids=None, rows=None, counts=None, drop=None) -> RecordDict:
    records = {
        protocol.BACKBONE: ArrayRecord(weights or {k: v.clone() for k, v in BACKBONE.items()}),
        protocol.ROWS_OUT: protocol.numpy_record(
            rows=np.eye(2, 8, dtype=np.float32) if rows is None else rows,
            counts=np.array([4, 6]) if counts is None else counts,
        ),
        protocol.CONFIG: ConfigRecord({"ids": ids or HELD}),
        protocol.METRICS: MetricRecord({"loss_last": 1.0}),
    }
    records.pop(drop, None)
    return RecordDict(records)


def read(record: RecordDict) -> Reply | str:
    return read_reply(11, CLIENT, HELD, record, BACKBONE)


def test_a_well_formed_reply_is_weighted_by_its_per_row_image_counts():
    reply = read(content())
    assert isinstance(reply, Reply)
    assert (reply.node_id, reply.client, reply.partition, reply.ids, reply.samples) == (11, "partition-0", 0, HELD, 10)
    torch.testing.assert_close(reply.weights["conv.weight"], BACKBONE["conv.weight"])
    assert reply.row_update().node_id == 0, "bank rows are owned by the partition, not the transient node id"


def test_broken_replies_are_refused_naming_the_reason():
    wrong_shape = {**BACKBONE, "bn.bias": torch.zeros(3)}
    assert read_reply(99, None, [], content(), BACKBONE) == "reply from an unregistered node"
    assert read(content(drop=protocol.METRICS)).startswith("malformed reply")
    assert "keys differ" in read(content(weights={"conv.weight": BACKBONE["conv.weight"]}))
    assert "bn.bias has shape (3,), expected (2,)" in read(content(weights=wrong_shape))
    assert "does not hold: ['c1-a']" in read(content(ids=["c0-a", "c1-a"]))
    assert "do not line up" in read(content(counts=np.array([4, 6, 1])))
    assert "positive integers" in read(content(counts=np.array([0, 3])))
    assert "positive integers" in read(content(counts=np.array([1.0, 3.0])))


def _reply(partition: int, scale: float = 1.0, row_scale: float = 1.0, weights=None) -> Reply:
    ids = [f"c{partition}-a", f"c{partition}-b"]
    rows = row_scale * np.roll(np.eye(2, 8, dtype=np.float32), 2 * partition, axis=1)
    weights = weights or {k: v * scale for k, v in BACKBONE.items()}
    return Reply(10 + partition, f"partition-{partition}", partition, ids, rows, np.array([4, 6]), weights, 10, {})


def _bank() -> ProxyBank:
    return ProxyBank.from_rows(["server-0"], np.ones((1, 8)), public=True)


def test_an_update_far_above_the_rounds_median_norm_is_rejected():
    kept, rejected = screen([_reply(2, 100.0), _reply(0, 1.01), _reply(1, 1.02)], BACKBONE, _bank(), 5.0, 1.01, 0.0)
    assert [r.partition for r in kept] == [0, 1], "kept in partition order, whatever the arrival order"
    assert [node for node, _ in rejected] == [12] and "x median" in rejected[0][1]


def test_with_fewer_than_three_replies_or_the_screen_off_no_norm_is_rejected():
    assert len(screen([_reply(0, 1.01), _reply(1, 100.0)], BACKBONE, _bank(), 5.0, 1.01, 0.0)[0]) == 2
    assert len(screen([_reply(0, 1.01), _reply(1, 1.02), _reply(2, 100.0)], BACKBONE, _bank(), 0.0, 1.01, 0.0)[0]) == 3


def test_rows_longer_than_the_limit_are_rejected_with_their_reply_unless_the_limit_is_off():
    kept, rejected = screen([_reply(0, row_scale=100.0), _reply(1)], BACKBONE, _bank(), 5.0, 1.01, 0.0)
    assert [r.partition for r in kept] == [1] and rejected[0][0] == 10 and "norm above 1.01" in rejected[0][1]
    assert len(screen([_reply(0, row_scale=100.0), _reply(1)], BACKBONE, _bank(), 5.0, 0.0, 0.0)[0]) == 2


def test_rows_for_the_servers_identities_are_rejected():
    reply = _reply(0)
    reply.ids = ["server-0", "c0-b"]
    kept, rejected = screen([reply], BACKBONE, _bank(), 5.0, 1.01, 0.0)
    assert not kept and "public" in rejected[0][1]


def _noise(seed: int = 0) -> dict[str, torch.Tensor]:
    """What the noise attacker sends: Gaussian noise as large per tensor as the global weights."""
    generator = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=generator) * v.std() for k, v in BACKBONE.items()}


def test_a_backbone_no_batch_could_give_is_rejected_whatever_else_arrived():
    nan = {k: v.clone() for k, v in BACKBONE.items()}
    nan["bn.bias"][0] = float("nan")
    negative = {**BACKBONE, "bn.running_var": torch.tensor([2.0, -0.1])}
    kept, rejected = screen([_reply(0, weights=nan), _reply(1, weights=negative)], BACKBONE, _bank(), 0.0, 0.0, 0.0)
    assert not kept, "every screen that can be turned off is off; these are not screens one turns off"
    assert "bn.bias has NaN/inf" in rejected[0][1] and "bn.running_var has negative variances" in rejected[1][1]


def test_a_nan_reply_does_not_silence_the_median_screen():
    nan = {k: v.clone() for k, v in BACKBONE.items()}
    nan["bn.bias"][0] = float("nan")
    replies = [_reply(0, 1.01), _reply(1, 1.02), _reply(2, 1.03), _reply(3, weights=nan), _reply(4, 100.0)]
    kept, rejected = screen(replies, BACKBONE, _bank(), 5.0, 1.01, 0.0)
    assert [r.partition for r in kept] == [0, 1, 2] and sorted(n for n, _ in rejected) == [13, 14]


def test_with_only_two_replies_an_update_larger_than_the_model_is_rejected():
    weights = {**_noise(), "bn.running_var": BACKBONE["bn.running_var"] * 3}  # noise with valid statistics
    replies = [_reply(0, 1.01), _reply(1, weights=weights)]
    kept, rejected = screen(replies, BACKBONE, _bank(), 5.0, 1.01, 1.0)
    assert [r.partition for r in kept] == [0]
    assert rejected[0][0] == 11 and "x the global backbone's norm" in rejected[0][1]
    assert len(screen(replies, BACKBONE, _bank(), 5.0, 1.01, 0.0)[0]) == 2, "update-norm-limit 0 turns it off"


def test_the_noise_attackers_reply_is_rejected_in_a_round_with_two_replies():
    kept, rejected = screen([_reply(0, 1.01), _reply(1, weights=_noise())], BACKBONE, _bank(), 5.0, 1.01, 1.0)
    assert [r.partition for r in kept] == [0] and [n for n, _ in rejected] == [11]
