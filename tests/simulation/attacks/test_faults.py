"""Failing and slow clients, as mods: they touch train requests only, deterministically."""

from __future__ import annotations

import pytest
from flwr.app import ConfigRecord, Message, RecordDict

from nptface.client import protocol
from nptface.simulation.attacks import faults
from nptface.simulation.attacks.faults import WARM_UP_ROUNDS, FailingClients, Straggler


def _request(round_number: int, seed: int = 5) -> RecordDict:
    return RecordDict({protocol.CONFIG: ConfigRecord({"round": round_number, "seed": seed})})


def _answer(msg: Message, context) -> Message:
    return Message(RecordDict(), reply_to=msg)


def _fails(mod: FailingClients, incoming, node, partition: int, seed: int) -> bool:
    try:
        mod(incoming(_request(1, seed)), node(partition), _answer)
    except RuntimeError as error:
        assert f"partition {partition}" in str(error)
        return True
    return False


def test_clients_fail_at_about_the_rate_and_the_same_ones_on_a_rerun(incoming, node):
    mod = FailingClients(0.5)
    draws = [_fails(mod, incoming, node, p, seed) for seed in range(40) for p in range(3)]
    assert 0.3 < sum(draws) / len(draws) < 0.7
    assert draws == [_fails(mod, incoming, node, p, seed) for seed in range(40) for p in range(3)]


def test_registration_and_evaluation_never_fail(incoming, node):
    mod = FailingClients(0.99)
    for message_type in ("query.register", "evaluate"):
        for seed in range(20):
            reply = mod(incoming(_request(1, seed), message_type=message_type), node(0), _answer)
            assert not reply.has_error()


@pytest.fixture()
def sleeps(monkeypatch) -> list[float]:
    slept: list[float] = []
    monkeypatch.setattr(faults.time, "sleep", slept.append)
    return slept


def test_the_straggler_sleeps_only_after_the_warm_up_round(incoming, node, sleeps):
    mod = Straggler(partition=1, seconds=30.0)
    for round_number in range(1, 4):
        mod(incoming(_request(round_number)), node(1), _answer)
    assert sleeps == [30.0] * (3 - WARM_UP_ROUNDS)


def test_other_partitions_and_other_messages_are_never_slowed(incoming, node, sleeps):
    mod = Straggler(partition=1, seconds=30.0)
    mod(incoming(_request(3)), node(0), _answer)
    mod(incoming(_request(3), message_type="evaluate"), node(1), _answer)
    assert sleeps == []
