"""The server's proxy bank: ownership rules, weighted aggregation, spread-out, chunked search, storage."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from nptface.server.federation.proxy_bank import ProxyBank, ProxyBankError, RowUpdate


def unit(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float64)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def make_bank(seed: int = 0, dim: int = 8) -> ProxyBank:
    """Two public rows, two rows of node 1, two rows of node 2."""
    rng = np.random.default_rng(seed)
    bank = ProxyBank.from_rows(["pub0", "pub1"], rng.normal(size=(2, dim)), public=True)
    bank.register(["a0", "a1"], rng.normal(size=(2, dim)), owner=1)
    bank.register(["b0", "b1"], rng.normal(size=(2, dim)), owner=2)
    return bank


def update(node: int, ids: list[str], rows, counts) -> RowUpdate:
    return RowUpdate(node, ids, np.asarray(rows, dtype=np.float32), np.asarray(counts))


def test_registered_rows_are_unit_float32_and_ownership_is_recorded():
    bank = make_bank()
    assert bank.rows.dtype == np.float32 and len(bank) == 6 and bank.dim == 8
    np.testing.assert_allclose(np.linalg.norm(bank.rows, axis=1), 1, atol=1e-6)
    assert bank.public_mask().tolist() == [True, True, False, False, False, False]
    assert [bank.owner_of(i) for i in bank.ids] == [None, None, 1, 1, 2, 2]
    assert bank.index_of(["b1", "pub0"]).tolist() == [5, 0]
    with pytest.raises(ProxyBankError, match="'ghost'"):
        bank.index_of(["a0", "ghost"])
    with pytest.raises(ProxyBankError, match="already registered 'a0'"):
        bank.register(["a0"], np.ones((1, 8)), owner=1)


def test_each_sent_row_becomes_the_count_weighted_mean_renormalised():
    bank = make_bank()
    rng = np.random.default_rng(1)
    first, second, other = rng.normal(size=(3, 8))
    bank.aggregate(
        [
            update(1, ["a0"], [first], [3]),
            update(1, ["a0", "a1"], [second, other], [1, 5]),
            update(2, ["b0"], [other], [2]),
        ]
    )
    expected = (3 * first + 1 * second) / 4
    np.testing.assert_allclose(bank.rows[bank.index_of(["a0"])[0]], expected / np.linalg.norm(expected), atol=1e-6)
    np.testing.assert_allclose(bank.rows[bank.index_of(["a1", "b0"])], unit([other, other]), atol=1e-6)


def test_rows_nobody_sent_are_left_bitwise_unchanged():
    bank = make_bank()
    before = bank.rows.copy()
    stats = bank.aggregate([update(1, ["a1"], [np.ones(8)], [4])])
    untouched = bank.index_of(["pub0", "pub1", "a0", "b0", "b1"])
    assert np.array_equal(bank.rows[untouched], before[untouched])
    assert (stats.updated, stats.registered, stats.untouched) == (1, 0, 5)


def test_identities_seen_for_the_first_time_are_registered_to_their_sender():
    bank = make_bank()
    stats = bank.aggregate([update(2, ["b0", "new"], np.ones((2, 8)), [1, 7])])
    assert (stats.updated, stats.registered, stats.untouched) == (1, 1, 5)
    assert bank.ids[-1] == "new" and bank.owner_of("new") == 2 and not bank.public_mask()[-1]
    np.testing.assert_allclose(bank.rows[-1], np.full(8, 8**-0.5), atol=1e-6)
    assert bank.validate(update(1, ["new"], np.ones((1, 8)), [1])) != []


def test_two_nodes_claiming_the_same_new_identity_are_refused():
    bank = make_bank()
    with pytest.raises(ProxyBankError, match="'new' claimed by nodes 1 and 2"):
        bank.aggregate([update(1, ["new"], np.ones((1, 8)), [1]), update(2, ["new"], np.ones((1, 8)), [1])])
    assert "new" not in bank.ids


@pytest.mark.parametrize(
    "bad, named",
    [
        (update(1, ["a0"], [[np.nan] + [0.0] * 7], [1]), "non-finite values for 'a0'"),
        (update(1, ["a0"], np.ones((1, 5)), [1]), r"expected shape \(1, 8\), got \(1, 5\)"),
        (update(1, ["a0", "b1"], np.ones((2, 8)), [1, 1]), r"another node, not node 1: 'b1' \(node 2\)"),
        (update(1, ["pub1"], np.ones((1, 8)), [1]), "'pub1' are public"),
        (update(1, ["a0", "a0"], np.ones((2, 8)), [1, 1]), "duplicated 'a0'"),
        (update(1, ["a0", "a1"], np.ones((2, 8)), [2, 0]), "counts: non-positive for 'a1'"),
        (update(1, ["a0"], np.zeros((1, 8)), [1]), "zero-norm row for 'a0'"),
    ],
)
def test_validate_names_each_problem_of_an_update(bad, named):
    problems = make_bank().validate(bad)
    assert len(problems) == 1, problems
    assert re.search(named, problems[0]), problems


def test_validate_flags_rows_whose_raw_norm_exceeds_the_limit():
    bank = make_bank()
    rows = np.ones((2, 8))
    rows[1] *= 100
    assert bank.validate(update(1, ["a0", "a1"], rows, [1, 1])) == []
    problems = bank.validate(update(1, ["a0", "a1"], rows, [1, 1]), norm_limit=10.0)
    assert len(problems) == 1 and "norm above 10.0 for 'a1'" in problems[0]


def test_aggregate_refuses_a_round_with_an_invalid_update_and_changes_nothing():
    bank = make_bank()
    before = bank.rows.copy()
    with pytest.raises(ProxyBankError, match=r"node 2: .*'a1' \(node 1\)"):
        bank.aggregate([update(1, ["a0"], np.ones((1, 8)), [1]), update(2, ["a1"], np.ones((1, 8)), [1])])
    assert np.array_equal(bank.rows, before) and len(bank) == 6


def clustered_bank(seed: int) -> ProxyBank:
    """30 rows in 16-d: three tight clusters of ten, the first row of each cluster public."""
    rng = np.random.default_rng(seed)
    rows = np.repeat(rng.normal(size=(3, 16)), 10, axis=0) + 0.15 * rng.normal(size=(30, 16))
    public = np.arange(30) % 10 == 0
    bank = ProxyBank.from_rows([f"p{i}" for i in np.flatnonzero(public)], rows[public], public=True)
    bank.register([f"c{i}" for i in np.flatnonzero(~public)], rows[~public], owner=1)
    return bank


def test_spread_out_restores_the_margin_and_never_moves_frozen_rows():
    bank = clustered_bank(seed=1)
    frozen = bank.public_mask()
    before = bank.rows.copy()
    assert bank.min_sq_distance() < 0.1
    stats = bank.spread_out(min_sq_distance=1.0, frozen=frozen)
    assert bank.min_sq_distance() >= 1.0 - 1e-3
    assert np.array_equal(bank.rows[frozen], before[frozen])
    assert stats.before_min_sq_distance < 0.1 and stats.after_min_sq_distance == pytest.approx(bank.min_sq_distance())
    assert stats.violating_pairs_before > 0 and stats.violating_pairs_after == 0
    assert 0 < stats.steps_run < 50
    np.testing.assert_allclose(np.linalg.norm(bank.rows, axis=1), 1, atol=1e-6)


def test_spread_out_stops_at_once_when_no_pair_violates():
    bank = ProxyBank.from_rows(["x", "y", "z"], np.eye(3), public=False, owner=1)
    before = bank.rows.copy()
    stats = bank.spread_out()
    assert stats.steps_run == 0 and stats.violating_pairs_before == 0 and np.array_equal(bank.rows, before)


def test_chunked_min_sq_distance_equals_brute_force():
    rows = np.random.default_rng(2).normal(size=(23, 4))
    bank = ProxyBank.from_rows([str(i) for i in range(23)], rows, public=True)
    w = bank.rows.astype(np.float64)
    brute = min(np.sum((w[i] - w[j]) ** 2) for i in range(23) for j in range(i + 1, 23))
    for chunk_rows in (5, 23, 4096):
        assert bank.min_sq_distance(chunk_rows=chunk_rows) == pytest.approx(brute, abs=1e-5)
    assert ProxyBank.from_rows(["only"], rows[:1], public=True).min_sq_distance() == float("inf")


def test_nearest_matches_brute_force_and_respects_candidates_and_exclude():
    rng = np.random.default_rng(3)
    bank = ProxyBank.from_rows([str(i) for i in range(40)], rng.normal(size=(40, 6)), public=True)
    queries = rng.normal(size=(7, 6))
    candidates = np.arange(40) % 3 != 0
    exclude = np.zeros(40, dtype=bool)
    exclude[[1, 2, 4]] = True
    sims = queries @ bank.rows.astype(np.float64).T
    allowed = np.flatnonzero(candidates & ~exclude)
    brute = allowed[np.argsort(-sims[:, allowed], axis=1)[:, :5]]
    got = bank.nearest(queries, k=5, candidates=candidates, exclude=exclude, chunk_rows=4)
    assert np.array_equal(got, brute)
    assert np.array_equal(bank.nearest(queries, k=3, chunk_rows=4), np.argsort(-sims, axis=1)[:, :3])
    assert bank.nearest(queries, k=100, candidates=np.arange(40) < 2).shape == (7, 2)
    with pytest.raises(ProxyBankError, match="exclude"):
        bank.nearest(queries, k=1, exclude=np.zeros(39, dtype=bool))


def test_save_and_load_round_trip_exactly(tmp_path):
    bank = make_bank()
    bank.aggregate([update(2, ["fresh"], np.ones((1, 8)), [3])])
    bank.save(tmp_path)
    loaded = ProxyBank.load(tmp_path)
    assert loaded.ids == bank.ids and loaded.dim == bank.dim
    assert np.array_equal(loaded.rows, bank.rows) and loaded.rows.dtype == np.float32
    assert loaded.public_mask().tolist() == bank.public_mask().tolist()
    assert [loaded.owner_of(i) for i in loaded.ids] == [bank.owner_of(i) for i in bank.ids]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bank.json", "bank.safetensors"]


@pytest.mark.parametrize(
    "corrupt, field",
    [
        (lambda meta: meta["ids"].pop(), "ids"),
        (lambda meta: meta["owners"].__setitem__(0, 7), "owners"),
        (lambda meta: meta.update(dim=9), "rows"),
        (lambda meta: meta.pop("public"), "'public'"),
    ],
)
def test_a_corrupted_bank_json_is_refused_naming_the_field(tmp_path, corrupt, field):
    make_bank().save(tmp_path)
    meta = json.loads((tmp_path / "bank.json").read_text())
    corrupt(meta)
    (tmp_path / "bank.json").write_text(json.dumps(meta))
    with pytest.raises(ProxyBankError, match=field):
        ProxyBank.load(tmp_path)


def test_from_state_is_the_inverse_of_to_state():
    bank = make_bank()
    arrays, meta = bank.to_state()
    json.dumps(meta)
    again = ProxyBank.from_state(arrays, meta)
    assert again.ids == bank.ids and np.array_equal(again.rows, bank.rows)


def test_pairs_of_two_frozen_rows_are_reported_in_distance_but_not_as_fixable_violations():
    rows = np.array([[1.0, 0, 0], [1.0, 0.01, 0], [0, 0, 1.0]])
    bank = ProxyBank.from_rows(["f0", "f1", "m"], rows, public=True)
    stats = bank.spread_out(frozen=np.array([True, True, False]))
    assert stats.violating_pairs_before == 0 and stats.steps_run == 0
    assert stats.after_min_sq_distance == pytest.approx(bank.min_sq_distance()) and stats.after_min_sq_distance < 1e-3


def test_a_damaged_rows_file_is_refused_without_unpickling(tmp_path):
    make_bank().save(tmp_path)
    (tmp_path / "bank.safetensors").write_bytes(b"\x80\x04not a safetensors file")
    with pytest.raises(ProxyBankError, match="bank.safetensors"):
        ProxyBank.load(tmp_path)
