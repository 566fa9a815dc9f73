"""Specification of nptface.core.pairs: exact pair sets, uniformity, determinism and refusals."""

from __future__ import annotations

from collections import Counter
from itertools import combinations

import numpy as np
import pytest

from nptface.core.pairs import Pairs, all_genuine_pairs, lfw_style_pairs

# Identity sizes 2, 3, 1, 4 and 2, samples interleaved so identity order != sample order.
LABELS = np.array([3, 0, 1, 0, 1, 3, 3, 2, 1, 3, 4, 4])


def pair_set(pairs: Pairs, genuine: bool) -> set[tuple[int, int]]:
    chosen = pairs.is_same == genuine
    return set(zip(pairs.index_a[chosen].tolist(), pairs.index_b[chosen].tolist()))


def every_pair(labels: np.ndarray, genuine: bool) -> set[tuple[int, int]]:
    return {(i, j) for i, j in combinations(range(len(labels)), 2) if (labels[i] == labels[j]) == genuine}


def assert_consistent(pairs: Pairs, labels: np.ndarray) -> None:
    assert np.all(pairs.index_a < pairs.index_b)
    np.testing.assert_array_equal(labels[pairs.index_a] == labels[pairs.index_b], pairs.is_same)
    keys = set(zip(pairs.index_a.tolist(), pairs.index_b.tolist()))
    assert len(keys) == len(pairs), "a pair occurs twice"


# all_genuine_pairs


def test_all_genuine_pairs_holds_exactly_every_genuine_pair() -> None:
    pairs = all_genuine_pairs(LABELS, seed=0)
    assert pair_set(pairs, genuine=True) == every_pair(LABELS, genuine=True)
    assert_consistent(pairs, LABELS)


def test_all_genuine_pairs_adds_distinct_impostors_in_the_requested_ratio() -> None:
    n_genuine = len(every_pair(LABELS, genuine=True))  # 1 + 3 + 6 + 1 = 11
    for ratio in (1.0, 2.0, 0.5):
        pairs = all_genuine_pairs(LABELS, seed=1, impostor_ratio=ratio)
        assert np.count_nonzero(pairs.is_same) == n_genuine
        assert np.count_nonzero(~pairs.is_same) == round(n_genuine * ratio)
        assert pair_set(pairs, genuine=False) <= every_pair(LABELS, genuine=False)
        assert_consistent(pairs, LABELS)


def test_all_genuine_pairs_shuffles_genuine_and_impostor_together() -> None:
    pairs = all_genuine_pairs(LABELS, seed=2)
    genuine_first = np.sort(pairs.is_same)[::-1]
    assert not np.array_equal(pairs.is_same, genuine_first)


def test_all_genuine_pairs_is_determined_by_the_seed() -> None:
    first, again, other = (all_genuine_pairs(LABELS, seed=s) for s in (5, 5, 6))
    for field in ("index_a", "index_b", "is_same"):
        np.testing.assert_array_equal(getattr(first, field), getattr(again, field))
    assert not np.array_equal(first.index_a, other.index_a)


def test_all_genuine_pairs_subsamples_to_max_genuine() -> None:
    pairs = all_genuine_pairs(LABELS, seed=3, max_genuine=4)
    assert np.count_nonzero(pairs.is_same) == 4
    assert np.count_nonzero(~pairs.is_same) == 4
    assert pair_set(pairs, genuine=True) <= every_pair(LABELS, genuine=True)
    assert_consistent(pairs, LABELS)


def test_impostor_pairs_are_drawn_uniformly() -> None:
    labels = np.array([0, 0, 1, 1, 2])  # 2 genuine pairs, 8 impostor pairs
    counts: Counter[tuple[int, int]] = Counter()
    n_draws = 1500
    for seed in range(n_draws):
        counts.update(pair_set(all_genuine_pairs(labels, seed=seed), genuine=False))
    assert set(counts) == every_pair(labels, genuine=False)
    expected = n_draws * 2 / 8  # each draw takes 2 of the 8; sd ~ 17
    assert all(abs(count - expected) < 80 for count in counts.values()), counts


def test_genuine_subsample_is_drawn_uniformly() -> None:
    labels = np.array([0, 0, 0, 1, 1, 1])  # 6 genuine pairs
    counts: Counter[tuple[int, int]] = Counter()
    n_draws = 1500
    for seed in range(n_draws):
        counts.update(pair_set(all_genuine_pairs(labels, seed=seed, max_genuine=2), genuine=True))
    assert set(counts) == every_pair(labels, genuine=True)
    expected = n_draws * 2 / 6  # sd ~ 18
    assert all(abs(count - expected) < 80 for count in counts.values()), counts


def test_subsampling_never_enumerates_all_genuine_pairs() -> None:
    labels = np.repeat([0, 1], 200_000)  # 4e10 genuine pairs: enumerating them would not fit
    pairs = all_genuine_pairs(labels, seed=0, max_genuine=1000)
    assert len(pairs) == 2000
    assert_consistent(pairs, labels)


def test_all_genuine_pairs_refuses_more_impostors_than_exist() -> None:
    labels = np.array([0, 0, 0, 0, 0, 1])  # 10 genuine pairs, only 5 impostor pairs
    with pytest.raises(ValueError, match="asks for 10 impostor pairs but labels allow only 5"):
        all_genuine_pairs(labels, seed=0)


def test_all_genuine_pairs_accepts_string_labels() -> None:
    labels = np.array(["bob", "amy", "bob", "cy", "amy"])
    pairs = all_genuine_pairs(labels.tolist(), seed=0)
    assert pair_set(pairs, genuine=True) == {(0, 2), (1, 4)}
    assert_consistent(pairs, labels)


# lfw_style_pairs


def test_lfw_style_pairs_form_contiguous_balanced_folds() -> None:
    labels = np.repeat(np.arange(30), 4)  # 180 genuine pairs available
    pairs = lfw_style_pairs(labels, n_folds=5, per_fold=20, seed=0)
    assert len(pairs) == 5 * 40
    for fold in range(5):
        fold_is_same = pairs.is_same[fold * 40 : (fold + 1) * 40]
        assert np.count_nonzero(fold_is_same) == 20
    assert not np.array_equal(pairs.is_same[:40], np.repeat([True, False], 20))  # mixed in fold
    assert_consistent(pairs, labels)


def test_lfw_style_pairs_can_use_every_genuine_pair_without_repeating_one() -> None:
    labels = np.repeat(np.arange(10), 3)  # exactly 30 genuine pairs
    pairs = lfw_style_pairs(labels, n_folds=3, per_fold=10, seed=4)
    assert pair_set(pairs, genuine=True) == every_pair(labels, genuine=True)
    assert_consistent(pairs, labels)


def test_lfw_style_pairs_are_determined_by_the_seed() -> None:
    labels = np.repeat(np.arange(20), 3)
    first, again, other = (lfw_style_pairs(labels, 4, 10, seed=s) for s in (1, 1, 2))
    for field in ("index_a", "index_b", "is_same"):
        np.testing.assert_array_equal(getattr(first, field), getattr(again, field))
    assert not np.array_equal(first.index_b, other.index_b)


def test_lfw_style_pairs_refuse_more_genuine_pairs_than_labels_supply() -> None:
    labels = np.repeat(np.arange(10), 3)  # 30 genuine pairs
    with pytest.raises(ValueError, match="only 30 distinct genuine pairs.*needs 31"):
        lfw_style_pairs(labels, n_folds=1, per_fold=31)


# label validation


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ([7, 7, 7, 7], "at least 2 identities"),
        ([0, 1, 2, 3], "every identity has a single sample"),
        ([[0, 0], [1, 1]], "labels must be 1-D"),
    ],
)
def test_pair_generators_refuse_labels_that_cannot_form_both_kinds_of_pair(labels: list[int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        all_genuine_pairs(labels, seed=0)
    with pytest.raises(ValueError, match=message):
        lfw_style_pairs(labels, n_folds=1, per_fold=1)


def test_pairs_refuse_arrays_of_different_lengths() -> None:
    with pytest.raises(ValueError, match="equal lengths"):
        Pairs(np.arange(3), np.arange(3), np.ones(2, bool))


def test_largest_lfw_style_pairs_shrinks_folds_to_what_the_labels_hold():
    import numpy as np
    import pytest

    from nptface.core.pairs import largest_lfw_style_pairs

    labels = np.repeat(np.arange(10), 3)  # 30 genuine pairs -> 3 per fold
    pairs = largest_lfw_style_pairs(labels, n_folds=10)
    assert pairs.is_same.sum() == 30 and (~pairs.is_same).sum() == 30
    with pytest.raises(ValueError, match="client set: too few pairs"):
        largest_lfw_style_pairs(np.repeat(np.arange(3), 2), n_folds=10, where="client set")


def test_reindexed_pairs_drop_those_with_a_sample_that_left_and_keep_the_order_of_the_rest():
    pairs = Pairs(np.array([0, 0, 1, 2]), np.array([1, 3, 3, 3]), np.array([True, False, True, False]))
    kept = pairs.reindexed([0, -1, 1, 2])  # sample 1 left; 2 and 3 move down one place
    np.testing.assert_array_equal(kept.index_a, [0, 1])
    np.testing.assert_array_equal(kept.index_b, [2, 2])
    np.testing.assert_array_equal(kept.is_same, [False, False])
