"""Negatives: what each proxy-sharing mode lets a client see of the bank, besides its own rows."""

from __future__ import annotations

import numpy as np
import pytest

from nptface.server.federation.negatives import own_rows, select_negatives
from nptface.server.federation.proxy_bank import ProxyBank


@pytest.fixture()
def bank() -> ProxyBank:
    """Six public rows, two rows of client 1 (a0, a1), two of client 2 (b0, b1); 8-d."""
    rng = np.random.default_rng(0)
    bank = ProxyBank.from_rows([f"p{i}" for i in range(6)], rng.normal(size=(6, 8)), public=True)
    bank.register(["a0", "a1"], rng.normal(size=(2, 8)), owner=1)
    bank.register(["b0", "b1"], rng.normal(size=(2, 8)), owner=2)
    return bank


def _negatives(bank: ProxyBank, mode: str, nearest: int = 2, random: int = 100) -> set[str]:
    ids, rows = own_rows(bank, ["a0", "a1", "not-yet-in-bank"], set(bank.ids))
    chosen = select_negatives(bank, rows, ids, mode, nearest, random, np.random.default_rng(0))
    return {bank.ids[i] for i in chosen}


def test_own_rows_are_the_clients_identities_already_in_the_bank(bank):
    ids, rows = own_rows(bank, ["a1", "new", "a0"], set(bank.ids))
    assert ids == ["a1", "a0"]
    np.testing.assert_array_equal(rows, bank.rows[bank.index_of(["a1", "a0"])])
    assert own_rows(bank, ["new"], set(bank.ids))[1].shape == (0, 8)


def test_public_sharing_sends_only_the_servers_identities(bank):
    assert _negatives(bank, "public") == {f"p{i}" for i in range(6)}


@pytest.mark.parametrize("mode", ["all", "dp"])
def test_all_and_dp_send_other_clients_rows_but_never_the_clients_own(bank, mode):
    assert _negatives(bank, mode) == {f"p{i}" for i in range(6)} | {"b0", "b1"}


@pytest.mark.parametrize("mode", ["none", "local-heads"])
def test_none_and_local_heads_send_no_negatives(bank, mode):
    assert _negatives(bank, mode) == set()


def test_without_random_negatives_the_nearest_rows_of_the_pool_are_sent(bank):
    own = bank.rows[bank.index_of(["a0", "a1"])]
    public = bank.rows[:6].astype(np.float64)
    expected = {f"p{j}" for row in own for j in np.argsort(-(public @ row))[:2]}
    assert _negatives(bank, "public", nearest=2, random=0) == expected


def test_the_same_generator_state_draws_the_same_negatives(bank):
    ids, rows = own_rows(bank, ["a0"], set(bank.ids))
    draws = [select_negatives(bank, rows, ids, "all", 1, 3, np.random.default_rng(5)) for _ in range(2)]
    np.testing.assert_array_equal(*draws)
    assert list(draws[0]) == sorted(draws[0])
