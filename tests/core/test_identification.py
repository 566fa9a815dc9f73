"""Specification of nptface.core.identification on hand-made embeddings whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from nptface.core.identification import all_pairs_verification, enroll, open_set_identification, search

DIM = 8


def toward(axis: int, cosine: float, away: int = DIM - 1) -> np.ndarray:
    """A unit vector at ``cosine`` to basis vector ``axis`` and orthogonal to every other template axis."""
    vector = np.zeros(DIM)
    vector[axis], vector[away] = cosine, np.sqrt(1 - cosine**2)
    return vector


def three_owners():
    """Owners 10, 20, 30 enrolled on the first three axes (owner 20 from two images 90 degrees apart)."""
    images = np.array([toward(0, 1.0), toward(1, 0.6, away=3), toward(1, 0.6, away=3), 3 * toward(2, 1.0)])
    images[2, 3] = -0.8  # owner 20's two images lie either side of axis 1: their mean is on it
    return enroll(images, [10, 20, 20, 30])


def test_a_template_is_the_renormalised_mean_of_unit_embeddings():
    gallery = enroll(np.array([[2.0, 0.0], [0.0, 5.0], [0.0, -1.0]]), ["a", "a", "b"])

    assert gallery.labels.tolist() == ["a", "b"]
    np.testing.assert_allclose(gallery.templates, [[np.sqrt(0.5), np.sqrt(0.5)], [0.0, -1.0]])


def test_search_returns_the_nearest_template_and_its_cosine():
    gallery = three_owners()
    np.testing.assert_allclose(gallery.templates[1], np.eye(DIM)[1], atol=1e-12)

    top, score = search(gallery, np.array([toward(1, 0.9), toward(2, 0.3)]))
    assert top.tolist() == [20, 30]
    np.testing.assert_allclose(score, [0.9, 0.3])


def test_dir_counts_mated_searches_that_are_right_and_above_the_fpir_threshold():
    gallery = three_owners()
    # 100 non-mated searches with top scores 0.00, 0.01, ..., 0.99: at FPIR = 1e-2 one false positive is
    # allowed, so the threshold is the top non-mated score, 0.99.
    non_mated = np.array([toward(i % 3, s) for i, s in enumerate(np.arange(100) / 100)])
    mated = np.array([toward(0, 0.995), toward(1, 0.999), toward(2, 0.98), toward(0, 0.999)])
    labels = [10, 20, 30, 20]  # the last search returns owner 10 for owner 20: wrong, however high its score

    report = open_set_identification(gallery, mated, labels, non_mated, fpirs=(1e-2, 1e-1))

    assert report.rank1 == 3 / 4
    assert (report.n_mated, report.n_non_mated, report.n_enrolled) == (4, 100, 3)
    assert report.dir_at_fpir[1e-2].threshold == pytest.approx(0.99) and report.dir_at_fpir[1e-2].tar == 2 / 4
    # Ten false positives allowed: the threshold falls to 0.90 and the 0.98 search is accepted too.
    assert report.dir_at_fpir[1e-1].tar == 3 / 4


def test_dir_at_an_fpir_too_small_for_the_non_mated_searches_is_refused():
    gallery = three_owners()
    non_mated = np.array([toward(0, 0.1)] * 50)

    report = open_set_identification(gallery, np.array([toward(0, 0.9)]), [10], non_mated, fpirs=(1e-2,))

    assert report.rank1 == 1.0
    assert report.dir_at_fpir[1e-2].tar is None and "needs >= 100" in report.dir_at_fpir[1e-2].reason


def test_a_mated_probe_of_an_identity_without_template_is_an_error():
    with pytest.raises(ValueError, match="have no template"):
        open_set_identification(three_owners(), np.array([toward(0, 1.0)]), [99], np.array([toward(0, 0.1)]))


def test_all_pairs_verification_uses_every_pair_and_measures_far_1e3_with_enough_impostors():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(50, 64))
    labels = np.repeat(np.arange(50), 4)
    embeddings = centres[labels] + 0.05 * rng.normal(size=(200, 64))  # identities are tight, far apart

    result = all_pairs_verification(embeddings, labels, fars=(1e-3, 1e-5))

    assert result.n_genuine == 50 * 6 and result.n_impostor == 200 * 199 // 2 - 300 >= 10_000
    assert result.tar_at_far[1e-3].tar == 1.0
    assert result.tar_at_far[1e-5].tar is None and not result.tar_at_far[1e-5].supported
