"""Open-set 1:N identification against enrolled owners, and verification measured at FAR = 1e-3.

One owner per phone makes the question "whose face is this, if anyone's?": every owner is
enrolled as one template, the mean of the unit embeddings of the images on their device,
re-normalised (:func:`enroll`), and probes search that gallery by cosine. Terms follow ISO/IEC
19795-1 and NIST FRVT 1:N: a *mated* search is a probe of an enrolled identity, a *non-mated* one a
probe of an identity with no template. Each search returns its top candidate and score; at a
threshold ``t`` (accepted when ``score >= t``, the rule of :mod:`nptface.core.verification`):

- FPIR(t), the false-positive identification rate: the share of non-mated searches whose top
  score is ``>= t``;
- DIR(t), the detection-and-identification rate at rank 1 (``1 - FNIR(t)``): the share of mated
  searches whose top candidate is the mated template *and* whose top score is ``>= t``;
- DIR at FPIR = f: the largest DIR(t) over thresholds with FPIR(t) <= f. It is TAR@FAR on the
  ROC whose impostor scores are the non-mated top scores and whose genuine scores are the mated top
  scores (a search answered with the wrong identity scores below any cosine), so
  :func:`nptface.core.verification.tar_at_far` computes it and refuses it, like a FAR, when fewer
  than ``1 / f`` non-mated searches could not observe a single false positive.

Rank-1 is the closed-set identification rate of the mated searches (no threshold).
Verification over *every* pair of a held-out set (:func:`all_pairs_verification`) gives
``n (n - 1) / 2`` pairs from ``n`` images, so a few hundred identities supply the >= 10^4 impostor
pairs TAR@FAR=1e-3 needs without drawing pairs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from nptface.core.verification import TarAtFar, all_pair_scores, tar_at_far, unit_rows

# Score of a mated search answered with the wrong identity: below every cosine, so never accepted.
_WRONG_CANDIDATE = -2.0
_SEARCH_BLOCK = 1 << 22  # probe-by-template similarities held at once


@dataclass(frozen=True, eq=False)
class Gallery:
    templates: np.ndarray  # [n_identities, d] unit rows
    labels: np.ndarray  # [n_identities] the identity of each template


@dataclass(frozen=True)
class IdentificationReport:
    rank1: float  # mated searches whose top candidate is the mated template
    dir_at_fpir: dict[float, TarAtFar]  # ``.tar`` is the DIR, ``.threshold`` the cosine that gives it
    n_mated: int
    n_non_mated: int
    n_enrolled: int


@dataclass(frozen=True)
class PairVerification:
    tar_at_far: dict[float, TarAtFar]
    n_genuine: int
    n_impostor: int


def enroll(embeddings: npt.ArrayLike, labels: npt.ArrayLike) -> Gallery:
    """One template per identity: the mean of its unit embeddings, scaled back to unit length."""
    unit = unit_rows(embeddings, "enrolment embeddings", dtype=np.float64)
    label_array = np.asarray(labels)
    if label_array.shape != (unit.shape[0],):
        raise ValueError(
            f"labels must hold one label per enrolment embedding ({unit.shape[0]}), got {label_array.shape}"
        )
    ids, codes = np.unique(label_array, return_inverse=True)
    sums = np.zeros((len(ids), unit.shape[1]))
    np.add.at(sums, codes, unit)
    return Gallery(unit_rows(sums, "enrolment templates", dtype=np.float64), ids)


def search(gallery: Gallery, probes: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """(label of the top candidate, its cosine score) for every probe."""
    unit = unit_rows(probes, "probe embeddings", dtype=np.float64)
    if unit.shape[1] != gallery.templates.shape[1]:
        raise ValueError(
            f"probe embeddings are {unit.shape[1]}-d but the gallery's templates {gallery.templates.shape[1]}-d"
        )
    top = np.empty(unit.shape[0], np.int64)
    score = np.empty(unit.shape[0])
    block = max(1, _SEARCH_BLOCK // len(gallery.labels))
    for start in range(0, unit.shape[0], block):
        similarity = unit[start : start + block] @ gallery.templates.T
        top[start : start + block] = similarity.argmax(axis=1)
        score[start : start + block] = similarity.max(axis=1)
    return gallery.labels[top], np.clip(score, -1.0, 1.0)


def open_set_identification(
    gallery: Gallery,
    mated: npt.ArrayLike,
    mated_labels: npt.ArrayLike,
    non_mated: npt.ArrayLike,
    fpirs: Iterable[float] = (1e-2,),
) -> IdentificationReport:
    """Rank-1 of the mated searches and DIR at each FPIR in ``fpirs`` (see the module docstring)."""
    labels = np.asarray(mated_labels)
    missing = np.setdiff1d(labels, gallery.labels)
    if missing.size:
        raise ValueError(f"mated probes of {missing.size} identities have no template, e.g. {missing[:3].tolist()}")
    mated_top, mated_score = search(gallery, mated)
    if labels.shape != mated_top.shape:
        raise ValueError(f"mated_labels must hold one label per mated probe ({mated_top.size}), got {labels.shape}")
    _, non_mated_score = search(gallery, non_mated)
    correct = mated_top == labels
    scores = np.concatenate([np.where(correct, mated_score, _WRONG_CANDIDATE), non_mated_score])
    is_mated = np.concatenate([np.ones(correct.size, bool), np.zeros(non_mated_score.size, bool)])
    return IdentificationReport(
        rank1=float(correct.mean()),
        dir_at_fpir=tar_at_far(scores, is_mated, fpirs),
        n_mated=int(correct.size),
        n_non_mated=int(non_mated_score.size),
        n_enrolled=len(gallery.labels),
    )


def all_pairs_verification(
    embeddings: npt.ArrayLike, labels: npt.ArrayLike, fars: Iterable[float] = (1e-2, 1e-3)
) -> PairVerification:
    """TAR at each FAR over every pair of the set; a FAR the impostor pairs cannot observe is refused."""
    scores, same = all_pair_scores(embeddings, labels)
    n_genuine = int(np.count_nonzero(same))
    if n_genuine == 0 or n_genuine == same.size:
        raise ValueError(f"verification needs genuine and impostor pairs; got {n_genuine} of {same.size} genuine")
    return PairVerification(tar_at_far(scores, same, fars), n_genuine, int(same.size - n_genuine))
