"""Registration: a node becomes a client named after its partition, unless it would impersonate someone."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ConfigRecord, RecordDict

from nptface.client import protocol
from nptface.server.federation.proxy_bank import ProxyBank
from nptface.server.federation.registration import Client, Registry, read_registration


@pytest.fixture()
def bank() -> ProxyBank:
    return ProxyBank.from_rows(["server-0", "server-1"], np.eye(2, 4), public=True)


def test_an_admitted_node_is_named_after_its_partition_and_its_identities_are_recorded(bank):
    persisted: dict[str, list[str]] = {}
    registry = Registry(persisted)
    assert registry.admit(11, 3, ["a", "b"], bank) is None
    assert registry.nodes[11] == Client("partition-3", 3)
    assert persisted == {"partition-3": ["a", "b"]}, "the registry writes through to the resumable state"
    assert registry.held_by(registry.nodes[11]) == ["a", "b"] and registry.unknown([11, 12]) == [12]


def test_a_partition_served_by_a_connected_node_cannot_be_claimed_by_another(bank):
    registry = Registry({})
    registry.admit(11, 0, ["a"], bank)
    assert "already served by another connected node" in registry.admit(12, 0, ["a"], bank)
    assert 12 not in registry.nodes


def test_a_returning_client_must_claim_the_identities_it_registered_before(bank):
    registry = Registry({"partition-0": ["a", "b"]})  # resumed state, no node connected yet
    assert registry.refusal(0, ["a", "b"], bank) is None
    assert "other identities than it registered before" in registry.refusal(0, ["a", "x"], bank)


@pytest.mark.parametrize(
    ("ids", "reason"),
    [
        (["a", "new"], "held by another client"),
        (["server-1"], "held by another client or the server"),
        (["n", "n"], "duplicate identity ids"),
    ],
)
def test_identities_of_others_and_duplicates_are_refused(bank, ids, reason):
    registry = Registry({"partition-0": ["a"]})
    assert reason in registry.refusal(7, ids, bank)


def test_a_registration_reply_is_read_or_refused_as_malformed():
    content = RecordDict({protocol.CONFIG: ConfigRecord({"partition": 2, "ids": ["x", "y"]})})
    assert read_registration(content) == (2, ["x", "y"])
    with pytest.raises(KeyError):
        read_registration(RecordDict({protocol.CONFIG: ConfigRecord({"ids": ["x"]})}))
