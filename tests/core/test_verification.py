"""Specification of nptface.core.verification: hand-computed cases, sklearn and brute force."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_curve as sklearn_roc_curve

from nptface.core.verification import (
    cosine_scores,
    equal_error_rate,
    evaluate_pairs,
    kfold_accuracy,
    rank1_identification,
    roc_curve,
    tar_at_far,
    threshold_at_far,
)


def tied_random_scores(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores on a 0.05 grid, so many pairs tie, with genuine pairs scoring higher on average."""
    rng = np.random.default_rng(seed)
    is_same = rng.random(n) < 0.5
    scores = np.round((rng.normal(size=n) + 1.5 * is_same) * 20) / 20
    return scores, is_same


def brute_force_best_threshold(scores: np.ndarray, is_same: np.ndarray) -> float:
    """The documented candidate set, searched one threshold at a time: O(n^2)."""
    distinct = np.unique(scores)
    candidates = [-math.inf, *((distinct[:-1] + distinct[1:]) / 2), math.inf]
    accuracies = [np.mean((scores >= t) == is_same) for t in candidates]
    return candidates[int(np.argmax(accuracies))]


# cosine_scores


def test_cosine_scores_match_torch_and_ignore_embedding_norms() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(50, 16)), rng.normal(size=(50, 16))
    expected = torch.nn.functional.cosine_similarity(torch.tensor(a), torch.tensor(b)).numpy()
    np.testing.assert_allclose(cosine_scores(a, b), expected, atol=1e-12)
    scales = rng.uniform(0.1, 10.0, size=(50, 1))
    np.testing.assert_allclose(cosine_scores(a * scales, b), expected, atol=1e-12)


def test_cosine_scores_accept_torch_tensors_including_bfloat16() -> None:
    a = torch.tensor([[1.0, 0.0], [3.0, 4.0]])
    b = torch.tensor([[0.0, 2.0], [3.0, 4.0]])
    np.testing.assert_allclose(cosine_scores(a, b), [0.0, 1.0], atol=1e-12)
    np.testing.assert_allclose(cosine_scores(a.bfloat16(), b.bfloat16()), [0.0, 1.0], atol=1e-12)


def test_cosine_scores_refuse_a_zero_embedding_naming_its_row() -> None:
    a = np.ones((3, 4))
    b = np.ones((3, 4))
    b[2] = 0.0
    with pytest.raises(ValueError, match="emb_b row 2"):
        cosine_scores(a, b)


def test_cosine_scores_refuse_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="emb_a has shape"):
        cosine_scores(np.ones((3, 4)), np.ones((2, 4)))


# roc_curve


def test_roc_matches_sklearn_on_random_scores_with_ties() -> None:
    for seed in range(3):
        scores, is_same = tied_random_scores(seed, 500)
        assert len(np.unique(scores)) < len(scores) / 3  # the ties are real
        fpr, tpr, thresholds = sklearn_roc_curve(is_same, scores, drop_intermediate=False)
        roc = roc_curve(scores, is_same)
        np.testing.assert_array_equal(roc.fpr, fpr)
        np.testing.assert_array_equal(roc.tpr, tpr)
        np.testing.assert_array_equal(roc.thresholds, thresholds)
        assert roc.metric == "cosine"


def test_roc_makes_one_point_for_tied_scores() -> None:
    roc = roc_curve([0.5, 0.5, 0.5, 0.1], [True, False, True, False])
    np.testing.assert_array_equal(roc.thresholds, [np.inf, 0.5, 0.1])
    np.testing.assert_array_equal(roc.fpr, [0.0, 0.5, 1.0])
    np.testing.assert_array_equal(roc.tpr, [0.0, 1.0, 1.0])


def test_roc_downsample_keeps_both_ends() -> None:
    scores, is_same = tied_random_scores(0, 400)
    roc = roc_curve(scores, is_same)
    small = roc.downsample(10)
    assert len(small.fpr) == 10
    assert (small.fpr[0], small.tpr[0], small.fpr[-1], small.tpr[-1]) == (0.0, 0.0, 1.0, 1.0)


# threshold_at_far and tar_at_far

# Ten impostors at 0.0, 0.1, ..., 0.9 and five genuine pairs: by hand, FAR <= 0.1 allows one
# false accept (the 0.9 impostor), so the smallest threshold is the 0.85 genuine score and two of
# five genuine pairs are accepted; FAR <= 0.2 allows 0.9 and 0.8, giving threshold 0.75, TAR 3/5.
HAND_IMPOSTORS = np.arange(10) / 10
HAND_GENUINE = np.array([0.95, 0.85, 0.75, 0.55, 0.3])
HAND_SCORES = np.concatenate((HAND_GENUINE, HAND_IMPOSTORS))
HAND_SAME = np.concatenate((np.ones(5, bool), np.zeros(10, bool)))


def test_threshold_at_far_is_the_smallest_score_meeting_the_far() -> None:
    assert threshold_at_far(HAND_SCORES, HAND_SAME, 0.1) == 0.85
    assert threshold_at_far(HAND_SCORES, HAND_SAME, 0.2) == 0.75
    assert threshold_at_far(HAND_SCORES, HAND_SAME, 1.0) == 0.0


def test_threshold_at_far_never_exceeds_the_far_and_the_next_lower_score_would() -> None:
    scores, is_same = tied_random_scores(1, 2000)
    impostors = scores[~is_same]
    distinct = np.unique(scores)
    for far in (0.3, 0.1, 0.01):
        threshold = threshold_at_far(scores, is_same, far)
        assert np.mean(impostors >= threshold) <= far
        lower = distinct[distinct < threshold].max()
        assert np.mean(impostors >= lower) > far


def test_tar_at_far_matches_hand_computation() -> None:
    results = tar_at_far(HAND_SCORES, HAND_SAME, fars=(0.1, 0.2))
    assert results[0.1].supported and results[0.1].reason == ""
    assert results[0.1].tar == pytest.approx(2 / 5)
    assert results[0.1].threshold == 0.85
    assert results[0.2].tar == pytest.approx(3 / 5)
    assert results[0.2].threshold == 0.75
    assert results[0.2].metric == "cosine"


def test_tar_at_far_refuses_far_below_pair_support() -> None:
    results = tar_at_far(HAND_SCORES, HAND_SAME, fars=(0.1, 0.01))
    refused = results[0.01]
    assert not refused.supported
    assert refused.tar is None and refused.threshold is None
    assert refused.reason == "needs >= 100 impostor pairs, have 10"


def test_tar_at_far_support_boundary_is_exact_for_decimal_fars() -> None:
    rng = np.random.default_rng(0)
    scores = rng.random(10_001)
    is_same = np.zeros(10_001, bool)
    is_same[0] = True
    assert tar_at_far(scores, is_same, fars=(1e-4,))[1e-4].supported
    assert not tar_at_far(scores[1:], np.r_[True, is_same[2:]], fars=(1e-4,))[1e-4].supported


def test_tar_at_far_refuses_far_outside_zero_to_one() -> None:
    with pytest.raises(ValueError, match="far must be in"):
        tar_at_far(HAND_SCORES, HAND_SAME, fars=(0.0,))


# equal_error_rate


def test_eer_is_zero_at_the_lowest_genuine_score_when_classes_separate() -> None:
    assert equal_error_rate([0.9, 0.8, 0.3, 0.2], [True, True, False, False]) == (0.0, 0.8)


def test_eer_interpolates_between_roc_points() -> None:
    # Genuine 0.9, 0.5, 0.4; impostor 0.6, 0.2. At threshold 0.6: FAR 1/2, FRR 2/3; at 0.5:
    # FAR 1/2, FRR 1/3. The rates meet halfway: EER 1/2 at threshold 0.55.
    eer, threshold = equal_error_rate([0.9, 0.5, 0.4, 0.6, 0.2], [True, True, True, False, False])
    assert eer == pytest.approx(0.5)
    assert threshold == pytest.approx(0.55)


def test_eer_lies_between_the_error_rates_of_the_scores_around_its_threshold() -> None:
    scores, is_same = tied_random_scores(2, 3000)
    eer, threshold = equal_error_rate(scores, is_same)
    stricter = scores[scores >= threshold].min()
    looser = scores[scores < threshold].max()
    far_strict, far_loose = (np.mean(scores[~is_same] >= t) for t in (stricter, looser))
    frr_strict, frr_loose = (np.mean(scores[is_same] < t) for t in (stricter, looser))
    assert far_strict <= eer <= far_loose
    assert frr_loose <= eer <= frr_strict
    assert 0.15 < eer < 0.35  # genuine mean is 1.5 sigma above impostors: EER ~ 0.23


# kfold_accuracy


def test_kfold_accuracy_matches_hand_computation() -> None:
    # Folds of two: (0.9 T, 0.4 F), (0.6 T, 0.5 F), (0.45 T, 0.2 F).
    # Fold 0 trains on .2F .45T .5F .6T: thresholds .325 and .55 both score 3/4; the smaller wins,
    # so 0.4 F is accepted on the held-out fold: 1/2. Fold 1 trains on .2F .4F .45T .9T: .425
    # is perfect, and 0.5 F is accepted: 1/2. Fold 2 trains on .4F .5F .6T .9T: .55 is perfect,
    # and 0.45 T is rejected: 1/2.
    scores = [0.9, 0.4, 0.6, 0.5, 0.45, 0.2]
    is_same = [True, False, True, False, True, False]
    result = kfold_accuracy(scores, is_same, n_folds=3)
    np.testing.assert_allclose(result.fold_thresholds, [0.325, 0.425, 0.55])
    np.testing.assert_allclose(result.fold_accuracies, [0.5, 0.5, 0.5])
    assert result.mean == pytest.approx(0.5)
    assert result.std == pytest.approx(0.0)
    # On all six, .425 and .55 both reach 5/6 (one error each: .5 F or .45 T); the smaller wins.
    assert result.best_threshold == pytest.approx(0.425)
    assert result.metric == "cosine"


def test_kfold_accuracy_equals_brute_force_threshold_search() -> None:
    for seed, n_pairs, n_folds in ((3, 97, 10), (4, 120, 5), (5, 61, 3)):
        scores, is_same = tied_random_scores(seed, n_pairs)
        result = kfold_accuracy(scores, is_same, n_folds=n_folds)
        folds = np.array_split(np.arange(n_pairs), n_folds)  # sklearn KFold(shuffle=False)
        for k, held_out in enumerate(folds):
            train = np.setdiff1d(np.arange(n_pairs), held_out)
            threshold = brute_force_best_threshold(scores[train], is_same[train])
            assert result.fold_thresholds[k] == threshold
            accuracy = np.mean((scores[held_out] >= threshold) == is_same[held_out])
            assert result.fold_accuracies[k] == accuracy
        assert result.mean == pytest.approx(np.mean(result.fold_accuracies))
        assert result.std == pytest.approx(np.std(result.fold_accuracies))
        assert result.best_threshold == brute_force_best_threshold(scores, is_same)


def test_kfold_best_threshold_reaches_the_best_accuracy_of_any_threshold() -> None:
    scores, is_same = tied_random_scores(6, 300)
    best = kfold_accuracy(scores, is_same).best_threshold
    every_threshold = [*np.unique(scores), np.inf]
    best_possible = max(np.mean((scores >= t) == is_same) for t in every_threshold)
    assert np.mean((scores >= best) == is_same) == best_possible


def test_kfold_accuracy_uses_contiguous_folds_in_the_given_order() -> None:
    # Fold 1 is all errors for a threshold near 0.5; reordering the pairs moves them.
    scores = np.array([0.9, 0.1] * 4 + [0.1, 0.9] + [0.9, 0.1] * 5)
    is_same = np.array([True, False] * 10)
    result = kfold_accuracy(scores, is_same, n_folds=10)
    assert result.fold_accuracies[4] == 0.0
    assert np.count_nonzero(result.fold_accuracies == 1.0) == 9


def test_kfold_accuracy_is_fast_on_many_pairs() -> None:
    scores, is_same = tied_random_scores(7, 300_000)
    started = time.perf_counter()
    result = kfold_accuracy(np.round(scores + np.linspace(0, 1e-3, scores.size), 6), is_same)
    assert time.perf_counter() - started < 8.0  # an O(n^2) search would take hours
    assert 0.7 < result.mean < 0.85


def test_kfold_accuracy_refuses_more_folds_than_pairs() -> None:
    with pytest.raises(ValueError, match="n_folds=10 exceeds the 4 pairs"):
        kfold_accuracy([0.9, 0.1, 0.8, 0.2], [True, False, True, False])


# input validation


@pytest.mark.parametrize(
    ("scores", "is_same", "message"),
    [
        ([0.1, 0.2, 0.3], [True, False], "is_same has shape"),
        ([], [], "scores is empty"),
        ([0.1, 0.2], [True, True], "only genuine"),
        ([0.1, 0.2], [False, False], "only impostor"),
        ([0.1, float("nan")], [True, False], r"scores\[1\]"),
        ([0.1, 0.2], [1, 2], "is_same must be boolean"),
    ],
)
def test_score_functions_reject_bad_input_naming_the_argument(
    scores: list[float], is_same: list[bool], message: str
) -> None:
    for metric in (roc_curve, equal_error_rate, kfold_accuracy, tar_at_far):
        with pytest.raises(ValueError, match=message):
            metric(scores, is_same)


# rank1_identification


def test_rank1_counts_probes_nearest_to_their_own_identity() -> None:
    angles = np.deg2rad([0.0, 120.0, 240.0])
    gallery = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    probe_angles = np.deg2rad([10.0, 110.0, 250.0, 70.0])  # the last, labelled 0, is nearer 1
    probes = np.stack([np.cos(probe_angles), np.sin(probe_angles)], axis=1)
    assert rank1_identification(gallery, [0, 1, 2], probes, [0, 1, 2, 0]) == pytest.approx(3 / 4)


def test_rank1_ranks_by_cosine_not_euclidean_distance() -> None:
    gallery = np.array([[1.0, 0.0], [5.0, 5.0]])
    probe = np.array([[1.0, 0.9]])  # Euclidean-nearest to "a", cosine-nearest to "b"
    assert rank1_identification(gallery, ["a", "b"], probe, ["b"]) == 1.0
    as_tensors = torch.tensor(gallery), ["a", "b"], torch.tensor(probe), ["a"]
    assert rank1_identification(*as_tensors) == 0.0


def test_rank1_refuses_probe_identity_missing_from_gallery() -> None:
    with pytest.raises(ValueError, match=r"no entry in gallery_labels, e\.g\. \['carol'\]"):
        rank1_identification(np.eye(2), ["alice", "bob"], np.eye(2), ["alice", "carol"])


# evaluate_pairs


def separable_embeddings(n_pairs: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    emb_a = rng.normal(size=(n_pairs, 32))
    is_same = rng.random(n_pairs) < 0.5
    emb_b = rng.normal(size=(n_pairs, 32))
    emb_b[is_same] = emb_a[is_same] + rng.normal(size=(int(is_same.sum()), 32))
    return emb_a, emb_b, is_same


def test_evaluate_pairs_bundles_the_individual_metrics() -> None:
    emb_a, emb_b, is_same = separable_embeddings(600, 0)
    report = evaluate_pairs(emb_a, emb_b, is_same, fars=(1e-1, 1e-3))
    scores = cosine_scores(emb_a, emb_b)
    assert report.metric == "cosine"
    assert (report.n_genuine, report.n_impostor) == (is_same.sum(), (~is_same).sum())
    assert report.accuracy.mean == kfold_accuracy(scores, is_same).mean
    assert (report.eer, report.eer_threshold) == equal_error_rate(scores, is_same)
    assert report.tar_at_far[1e-1] == tar_at_far(scores, is_same, (1e-1,))[1e-1]
    np.testing.assert_array_equal(report.roc.tpr, roc_curve(scores, is_same).tpr)


def test_evaluate_pairs_gives_same_report_for_torch_and_numpy() -> None:
    emb_a, emb_b, is_same = separable_embeddings(200, 1)
    from_numpy = evaluate_pairs(emb_a, emb_b, is_same)
    from_torch = evaluate_pairs(torch.tensor(emb_a), torch.tensor(emb_b), torch.tensor(is_same))
    assert from_torch.to_dict() == from_numpy.to_dict()


def test_report_summary_is_strict_json_and_names_the_metric() -> None:
    emb_a, emb_b, is_same = separable_embeddings(600, 2)
    report = evaluate_pairs(emb_a, emb_b, is_same, fars=(1e-1, 1e-3))
    summary = report.to_dict(roc_points=20)
    text = json.dumps(summary, allow_nan=False)
    assert json.loads(text)["metric"] == "cosine"
    assert len(summary["roc"]["fpr"]) == 20
    assert summary["roc"]["thresholds"][0] is None  # the +inf end
    assert "roc" not in report.to_dict()
    refused = next(r for r in summary["tar_at_far"] if r["far"] == 1e-3)
    assert refused["tar"] is None and not refused["supported"]


def test_summary_lines_name_the_metric_and_explain_refusals() -> None:
    emb_a, emb_b, is_same = separable_embeddings(600, 3)
    report = evaluate_pairs(emb_a, emb_b, is_same, fars=(1e-1, 1e-3))
    lines = report.summary_lines()
    accuracy = report.accuracy
    assert lines[0] == (f"10-fold accuracy (cosine): {accuracy.mean * 100:.2f}% ± {accuracy.std * 100:.2f}")
    assert f"TAR@FAR=1e-03: n/a (needs >= 1000 impostor pairs, have {report.n_impostor})" in lines
    supported = next(line for line in lines if line.startswith("TAR@FAR=1e-01"))
    assert "cosine threshold" in supported
    assert any(line.startswith("EER (cosine)") for line in lines)


def test_evaluate_pairs_rejects_is_same_of_the_wrong_length() -> None:
    emb_a, emb_b, is_same = separable_embeddings(50, 4)
    with pytest.raises(ValueError, match="is_same has shape"):
        evaluate_pairs(emb_a, emb_b, is_same[:-1])


def test_unit_rows_normalises_and_names_the_bad_row():
    import numpy as np
    import pytest

    from nptface.core.verification import pair_scores, unit_rows

    rows = unit_rows(np.array([[3.0, 4.0], [0.0, 2.0]]))
    assert rows.dtype == np.float32
    np.testing.assert_allclose(rows, [[0.6, 0.8], [0.0, 1.0]], rtol=1e-6)
    with pytest.raises(ValueError, match="proxies row 1"):
        unit_rows(np.array([[1.0, 0.0], [0.0, 0.0]]), name="proxies")
    np.testing.assert_allclose(pair_scores(np.array([[1.0, 0.0], [1.0, 1.0]]), [0, 0], [1, 0]), [2**-0.5, 1.0])


@pytest.mark.parametrize("block_entries", [1 << 24, 10], ids=["one-block", "row-blocks"])
def test_all_pair_scores_cover_every_unordered_pair_once_in_triu_order(monkeypatch, block_entries):
    from nptface.core import verification
    from nptface.core.verification import all_pair_scores

    monkeypatch.setattr(verification, "_SIMILARITY_BLOCK", block_entries)
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(7, 5)) * rng.uniform(0.5, 3.0, size=(7, 1))
    labels = np.array([0, 0, 1, 1, 1, 2, 3])
    scores, same = all_pair_scores(embeddings, labels)
    rows, cols = np.triu_indices(7, k=1)
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    expected = [float(unit[i] @ unit[j]) for i, j in zip(rows, cols)]  # the slow, obvious loop
    np.testing.assert_allclose(scores, expected, atol=1e-12)
    assert same.tolist() == [bool(labels[i] == labels[j]) for i, j in zip(rows, cols)]
