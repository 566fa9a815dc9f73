"""Verification metrics for face embeddings: ROC, TAR@FAR, EER, LFW-protocol accuracy, rank-1.

A face-verification model is judged on pairs of images: the cosine similarity of their
embeddings is compared with a threshold, and a pair is accepted as "same identity" when
``score >= threshold``. This module is the one place nptface turns paired embeddings into those
scores (:func:`cosine_scores`) and scores into numbers: the ROC, the true-accept rate at a stated
false-accept rate (refused, never extrapolated, when there are too few impostor pairs to observe
that FAR), the equal error rate, and the 10-fold accuracy of the LFW protocol (Huang et al.,
"Labeled Faces in the Wild", 2007: each fold is scored with the threshold that maximises accuracy
on the other folds). Every threshold here is a cosine similarity, never a squared-L2 distance, and
every result says so in its ``metric`` field, because confusing the two is the commonest way a
deployed threshold goes wrong.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

METRIC = "cosine"
DECISION_RULE = "accept as same identity when score >= threshold"
DEFAULT_FARS: tuple[float, ...] = (1e-1, 1e-2, 1e-3, 1e-4)

ArrayInput = npt.ArrayLike | torch.Tensor

# Rows of embeddings turned into float64 at a time, so a million 512-d pairs never need a
# float64 copy of the whole set.
_CHUNK_ROWS = 65_536
# Upper bound on probe-by-gallery similarity entries held at once in rank-1 identification.
_SIMILARITY_BLOCK = 1 << 24


@dataclass(frozen=True, eq=False)
class RocCurve:
    """ROC of cosine scores: point ``i`` accepts every pair with ``score >= thresholds[i]``.

    ``thresholds`` runs from ``+inf`` (accept nothing: fpr = tpr = 0) down through every distinct
    score, so tied scores form a single point.
    """

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray
    metric: str = METRIC

    def downsample(self, max_points: int) -> RocCurve:
        """At most ``max_points`` points, evenly spaced along the curve, both ends kept."""
        if max_points < 2:
            raise ValueError(f"max_points must be >= 2 to keep both ends, got {max_points}")
        if len(self.fpr) <= max_points:
            return self
        keep = np.unique(np.linspace(0, len(self.fpr) - 1, max_points).round().astype(np.int64))
        return RocCurve(self.fpr[keep], self.tpr[keep], self.thresholds[keep], self.metric)


@dataclass(frozen=True)
class TarAtFar:
    """True-accept rate at the smallest threshold whose false-accept rate is <= ``far``.

    ``supported`` is False when there are fewer than ``1 / far`` impostor pairs: such a FAR
    cannot be observed on this data, so ``tar`` and ``threshold`` are None and ``reason`` says
    how many impostor pairs it needs.
    """

    far: float
    tar: float | None
    threshold: float | None
    supported: bool
    reason: str
    metric: str = METRIC


@dataclass(frozen=True, eq=False)
class KFoldAccuracy:
    """LFW-protocol accuracy: fold ``k`` is scored with the threshold chosen on the other folds.

    ``std`` is the population standard deviation of the fold accuracies (``np.std``, as
    insightface reports it). ``best_threshold`` maximises accuracy on all pairs together: the
    threshold to quote for deployment on data like this.
    """

    mean: float
    std: float
    fold_accuracies: np.ndarray
    fold_thresholds: np.ndarray
    best_threshold: float
    metric: str = METRIC

    @property
    def n_folds(self) -> int:
        return len(self.fold_accuracies)


@dataclass(frozen=True, eq=False)
class VerificationReport:
    """Everything :func:`evaluate_pairs` measures on one set of verification pairs."""

    accuracy: KFoldAccuracy
    roc: RocCurve
    tar_at_far: dict[float, TarAtFar]
    eer: float
    eer_threshold: float
    n_genuine: int
    n_impostor: int
    metric: str = METRIC

    def to_dict(self, roc_points: int = 0) -> dict[str, Any]:
        """JSON-serialisable summary; the ROC is included, downsampled, when ``roc_points > 0``.

        Infinite thresholds ("accept nothing" / "accept everything") become None.
        """
        summary: dict[str, Any] = {
            "metric": self.metric,
            "decision_rule": DECISION_RULE,
            "n_genuine": self.n_genuine,
            "n_impostor": self.n_impostor,
            "accuracy": {
                "n_folds": self.accuracy.n_folds,
                "mean": float(self.accuracy.mean),
                "std": float(self.accuracy.std),
                "fold_accuracies": [float(a) for a in self.accuracy.fold_accuracies],
                "fold_thresholds": [_json_float(t) for t in self.accuracy.fold_thresholds],
                "best_threshold": _json_float(self.accuracy.best_threshold),
            },
            "eer": float(self.eer),
            "eer_threshold": _json_float(self.eer_threshold),
            "tar_at_far": [
                {
                    "far": float(result.far),
                    "tar": None if result.tar is None else float(result.tar),
                    "threshold": _json_float(result.threshold),
                    "supported": result.supported,
                    "reason": result.reason,
                }
                for result in self.tar_at_far.values()
            ],
        }
        if roc_points > 0:
            roc = self.roc.downsample(roc_points)
            summary["roc"] = {
                "fpr": [float(v) for v in roc.fpr],
                "tpr": [float(v) for v in roc.tpr],
                "thresholds": [_json_float(v) for v in roc.thresholds],
            }
        return summary

    def summary_lines(self) -> list[str]:
        """Human-readable lines, each naming the metric its numbers or thresholds are in."""
        accuracy = self.accuracy
        lines = [
            f"{accuracy.n_folds}-fold accuracy ({self.metric}): {accuracy.mean * 100:.2f}% ± {accuracy.std * 100:.2f}",
            f"best threshold on all pairs ({self.metric}, accept if score >= t): {accuracy.best_threshold:.4f}",
            f"EER ({self.metric}): {self.eer * 100:.2f}% at threshold {self.eer_threshold:.4f}",
        ]
        for result in self.tar_at_far.values():
            if result.supported:
                lines.append(
                    f"TAR@FAR={result.far:.0e}: {result.tar * 100:.2f}% "
                    f"at {self.metric} threshold {result.threshold:.4f}"
                )
            else:
                lines.append(f"TAR@FAR={result.far:.0e}: n/a ({result.reason})")
        lines.append(f"pairs: {self.n_genuine} genuine, {self.n_impostor} impostor")
        return lines


def cosine_scores(emb_a: ArrayInput, emb_b: ArrayInput) -> np.ndarray:
    """Cosine similarity of row ``i`` of ``emb_a`` with row ``i`` of ``emb_b``, in float64.

    Both inputs are L2-normalised here, so raw model outputs can be passed directly. A zero or
    non-finite row raises, since its cosine similarity is undefined.
    """
    a = _embedding_matrix(emb_a, "emb_a")
    b = _embedding_matrix(emb_b, "emb_b")
    if a.shape != b.shape:
        raise ValueError(
            f"emb_a has shape {a.shape} but emb_b has shape {b.shape}; "
            "cosine_scores pairs row i of one with row i of the other"
        )
    if a.shape[0] == 0:
        raise ValueError("emb_a and emb_b are empty; expected at least one pair of embeddings")
    scores = np.empty(a.shape[0], dtype=np.float64)
    for start in range(0, a.shape[0], _CHUNK_ROWS):
        rows = slice(start, start + _CHUNK_ROWS)
        unit_a = _unit_rows(a[rows], "emb_a", start)
        unit_b = _unit_rows(b[rows], "emb_b", start)
        scores[rows] = np.einsum("ij,ij->i", unit_a, unit_b)
    return np.clip(scores, -1.0, 1.0)


def unit_rows(rows: ArrayInput, name: str = "embeddings", dtype: npt.DTypeLike = np.float32) -> np.ndarray:
    """Rows scaled to unit L2 norm; a zero or non-finite row raises, naming ``name`` and the row.

    Every numpy consumer of embeddings and proxy rows (parity gate, proxy bank, attacks, clients)
    normalises through here, so "cosine" means one thing and a dead embedding is never divided
    into NaNs silently.
    """
    matrix = _embedding_matrix(rows, name)
    return _unit_rows(matrix, name, 0).astype(dtype, copy=False)


def pair_scores(embeddings: ArrayInput, index_a: ArrayInput, index_b: ArrayInput) -> np.ndarray:
    """Cosine score of every pair ``(embeddings[index_a[i]], embeddings[index_b[i]])``, in float64."""
    matrix = _embedding_matrix(embeddings, "embeddings")
    return cosine_scores(matrix[_as_numpy(index_a)], matrix[_as_numpy(index_b)])


def all_pair_scores(embeddings: ArrayInput, labels: ArrayInput) -> tuple[np.ndarray, np.ndarray]:
    """Cosine score of every unordered pair ``i < j`` (``np.triu_indices`` order) and whether it is genuine.

    Thresholds for a small false-accept rate need many impostor pairs; a set of ``n`` images has
    ``n (n - 1) / 2``. Scores come from blocks of the Gram matrix of the unit rows, so no pair's
    embeddings are ever copied.
    """
    unit = unit_rows(embeddings, dtype=np.float64)
    ids = _label_vector(labels, "labels", unit.shape[0], "embeddings")
    n = unit.shape[0]
    if n < 2:
        raise ValueError(f"embeddings has {n} row(s); pairs need at least 2")
    block = max(1, _SIMILARITY_BLOCK // n)
    scores, same = [], []
    for start in range(0, n, block):
        rows = np.arange(start, min(start + block, n))
        upper = rows[:, None] < np.arange(n)[None, :]
        scores.append((unit[rows] @ unit.T)[upper])
        same.append((ids[rows][:, None] == ids[None, :])[upper])
    return np.clip(np.concatenate(scores), -1.0, 1.0), np.concatenate(same)


def roc_curve(scores: ArrayInput, is_same: ArrayInput) -> RocCurve:
    """ROC of ``scores`` against ``is_same`` (True for a genuine pair), ties forming one point."""
    scores_array, same = _scores_and_labels(scores, is_same)
    return _roc(scores_array, same)


def threshold_at_far(scores: ArrayInput, is_same: ArrayInput, far: float) -> float:
    """The smallest ROC threshold whose false-accept rate on the impostor pairs is <= ``far``.

    Candidates are the observed scores (and ``+inf``), so the threshold returned is itself a
    score; any threshold above the highest rejected impostor score and at most the one returned
    gives the same FAR and TAR on this data. No support check is made here: see
    :func:`tar_at_far`.
    """
    _check_far(far)
    scores_array, same = _scores_and_labels(scores, is_same)
    threshold, _ = _operating_point(_roc(scores_array, same), far)
    return threshold


def tar_at_far(scores: ArrayInput, is_same: ArrayInput, fars: Iterable[float] = DEFAULT_FARS) -> dict[float, TarAtFar]:
    """TAR at each FAR in ``fars``, refusing any FAR that needs more than the impostor pairs.

    A FAR of ``f`` is supported only with at least ``1 / f`` impostor pairs, so that at least one
    false accept is observable; below that the answer would be an extrapolation.
    """
    fars = tuple(fars)
    for far in fars:
        _check_far(far)
    scores_array, same = _scores_and_labels(scores, is_same)
    return _tar_at_far(_roc(scores_array, same), int(np.count_nonzero(~same)), fars)


def equal_error_rate(scores: ArrayInput, is_same: ArrayInput) -> tuple[float, float]:
    """(EER, threshold) where the false-accept and false-reject rates meet on the ROC.

    The crossing is linearly interpolated between the two ROC points around it, and so is its
    threshold (taken as the lower point's when the upper one is the ``+inf`` end).
    """
    scores_array, same = _scores_and_labels(scores, is_same)
    return _equal_error_rate(_roc(scores_array, same))


def kfold_accuracy(scores: ArrayInput, is_same: ArrayInput, n_folds: int = 10) -> KFoldAccuracy:
    """Accuracy under the LFW protocol with contiguous folds in the given order.

    Folds are the slices ``sklearn.model_selection.KFold(n_folds, shuffle=False)`` would make, as
    insightface does; shuffling is the pair generator's job. For each fold the threshold that
    maximises accuracy on the other folds is applied to it. Candidate thresholds are exact: the
    midpoints between consecutive distinct training scores, plus ``-inf`` (accept all) and
    ``+inf`` (reject all); ties in accuracy go to the smallest threshold. One sort of all scores,
    then linear work per fold.
    """
    scores_array, same = _scores_and_labels(scores, is_same)
    _check_n_folds(n_folds, scores_array.size)
    return _kfold_accuracy(scores_array, same, int(n_folds))


def rank1_identification(
    gallery_emb: ArrayInput,
    gallery_labels: ArrayInput,
    probe_emb: ArrayInput,
    probe_labels: ArrayInput,
) -> float:
    """Fraction of probes whose most cosine-similar gallery embedding has the probe's label.

    A gallery may hold several embeddings per identity; the single nearest one decides. Every
    probe identity must be enrolled in the gallery.
    """
    gallery = _embedding_matrix(gallery_emb, "gallery_emb")
    probes = _embedding_matrix(probe_emb, "probe_emb")
    gallery_ids = _label_vector(gallery_labels, "gallery_labels", gallery.shape[0], "gallery_emb")
    probe_ids = _label_vector(probe_labels, "probe_labels", probes.shape[0], "probe_emb")
    if gallery.shape[0] == 0:
        raise ValueError("gallery_emb is empty; expected at least one enrolled embedding")
    if probes.shape[0] == 0:
        raise ValueError("probe_emb is empty; expected at least one probe embedding")
    if gallery.shape[1] != probes.shape[1]:
        raise ValueError(
            f"probe_emb has {probes.shape[1]}-d embeddings but gallery_emb has "
            f"{gallery.shape[1]}-d; they must come from the same model"
        )
    missing = np.setdiff1d(probe_ids, gallery_ids)
    if missing.size:
        raise ValueError(
            f"probe_labels has {missing.size} identities with no entry in gallery_labels, "
            f"e.g. {missing[:5].tolist()}; every probe identity must be enrolled in the gallery"
        )
    unit_gallery = _unit_rows(gallery, "gallery_emb", 0)
    block = max(1, _SIMILARITY_BLOCK // gallery.shape[0])
    n_correct = 0
    for start in range(0, probes.shape[0], block):
        rows = slice(start, start + block)
        similarity = _unit_rows(probes[rows], "probe_emb", start) @ unit_gallery.T
        nearest = np.argmax(similarity, axis=1)
        n_correct += int(np.count_nonzero(gallery_ids[nearest] == probe_ids[rows]))
    return n_correct / probes.shape[0]


def evaluate_pairs(
    emb_a: ArrayInput,
    emb_b: ArrayInput,
    is_same: ArrayInput,
    fars: Iterable[float] = DEFAULT_FARS,
    n_folds: int = 10,
) -> VerificationReport:
    """Score paired embeddings by cosine similarity and measure everything in this module."""
    fars = tuple(fars)
    for far in fars:
        _check_far(far)
    scores, same = _scores_and_labels(cosine_scores(emb_a, emb_b), is_same)
    _check_n_folds(n_folds, scores.size)
    roc = _roc(scores, same)
    n_impostor = int(np.count_nonzero(~same))
    eer, eer_threshold = _equal_error_rate(roc)
    return VerificationReport(
        accuracy=_kfold_accuracy(scores, same, int(n_folds)),
        roc=roc,
        tar_at_far=_tar_at_far(roc, n_impostor, fars),
        eer=eer,
        eer_threshold=eer_threshold,
        n_genuine=scores.size - n_impostor,
        n_impostor=n_impostor,
    )


def _roc(scores: np.ndarray, same: np.ndarray) -> RocCurve:
    order = np.argsort(scores, kind="stable")[::-1]
    descending = scores[order]
    # Last position of each run of tied scores: one ROC point per distinct score.
    run_ends = np.append(np.flatnonzero(np.diff(descending)), descending.size - 1)
    true_accepts = np.cumsum(same[order])[run_ends]
    false_accepts = run_ends + 1 - true_accepts
    n_genuine = true_accepts[-1]
    n_impostor = false_accepts[-1]
    return RocCurve(
        fpr=np.concatenate(([0.0], false_accepts / n_impostor)),
        tpr=np.concatenate(([0.0], true_accepts / n_genuine)),
        thresholds=np.concatenate(([np.inf], descending[run_ends])),
    )


def _operating_point(roc: RocCurve, far: float) -> tuple[float, float]:
    # fpr never decreases along the curve, and fpr[0] = 0, so this index always exists.
    index = int(np.searchsorted(roc.fpr, far, side="right")) - 1
    return float(roc.thresholds[index]), float(roc.tpr[index])


def _tar_at_far(roc: RocCurve, n_impostor: int, fars: tuple[float, ...]) -> dict[float, TarAtFar]:
    results: dict[float, TarAtFar] = {}
    for far in fars:
        needed = _impostors_needed(far)
        if n_impostor < needed:
            results[far] = TarAtFar(
                far=far,
                tar=None,
                threshold=None,
                supported=False,
                reason=f"needs >= {needed} impostor pairs, have {n_impostor}",
            )
        else:
            threshold, tar = _operating_point(roc, far)
            results[far] = TarAtFar(far=far, tar=tar, threshold=threshold, supported=True, reason="")
    return results


def _impostors_needed(far: float) -> int:
    # Rounding first keeps 1 / 1e-4 from becoming 10001 through float noise.
    return math.ceil(round(1.0 / far, 9))


def _equal_error_rate(roc: RocCurve) -> tuple[float, float]:
    # False-reject minus false-accept rate: 1 at the +inf end, -1 at the other, never increasing.
    gap = (1.0 - roc.tpr) - roc.fpr
    upper = int(np.argmax(gap <= 0.0))
    if gap[upper] == 0.0:
        return float(roc.fpr[upper]), float(roc.thresholds[upper])
    before = upper - 1
    weight = gap[before] / (gap[before] - gap[upper])
    eer = roc.fpr[before] + weight * (roc.fpr[upper] - roc.fpr[before])
    if np.isinf(roc.thresholds[before]):
        threshold = roc.thresholds[upper]
    else:
        threshold = roc.thresholds[before] + weight * (roc.thresholds[upper] - roc.thresholds[before])
    return float(eer), float(threshold)


def _kfold_accuracy(scores: np.ndarray, same: np.ndarray, n_folds: int) -> KFoldAccuracy:
    n_pairs = scores.size
    base, extra = divmod(n_pairs, n_folds)
    fold_sizes = np.full(n_folds, base)
    fold_sizes[:extra] += 1
    fold_of_pair = np.repeat(np.arange(n_folds), fold_sizes)

    order = np.argsort(scores, kind="stable")
    ascending = scores[order]
    same_ascending = same[order]
    fold_ascending = fold_of_pair[order]

    accuracies = np.empty(n_folds)
    thresholds = np.empty(n_folds)
    for fold in range(n_folds):
        train = fold_ascending != fold
        thresholds[fold] = _best_threshold(ascending[train], same_ascending[train])
        held_out = fold_of_pair == fold
        accepted = scores[held_out] >= thresholds[fold]
        accuracies[fold] = np.mean(accepted == same[held_out])
    return KFoldAccuracy(
        mean=float(accuracies.mean()),
        std=float(accuracies.std()),
        fold_accuracies=accuracies,
        fold_thresholds=thresholds,
        best_threshold=_best_threshold(ascending, same_ascending),
    )


def _best_threshold(ascending: np.ndarray, same: np.ndarray) -> float:
    """Smallest exact threshold maximising accuracy on scores sorted ascending."""
    n_pairs = ascending.size
    # Each candidate rejects a prefix of the sorted scores that ends between two distinct values:
    # 0 rejected (threshold -inf), ..., all rejected (threshold +inf).
    rejected = np.concatenate(([0], np.flatnonzero(np.diff(ascending)) + 1, [n_pairs]))
    genuine_before = np.concatenate(([0], np.cumsum(same)))
    genuine_rejected = genuine_before[rejected]
    n_genuine = genuine_before[-1]
    # Correct = impostors rejected + genuine accepted.
    correct = (rejected - genuine_rejected) + (n_genuine - genuine_rejected)
    best = int(np.argmax(correct))
    if best == 0:
        return -math.inf
    if best == len(rejected) - 1:
        return math.inf
    cut = rejected[best]
    below, above = ascending[cut - 1], ascending[cut]
    midpoint = below + (above - below) / 2
    # Adjacent floats have no representable midpoint above the lower one; the upper one then
    # splits the scores the same way under "accept when score >= threshold".
    return float(midpoint if midpoint > below else above)


def _check_n_folds(n_folds: int, n_pairs: int) -> None:
    if isinstance(n_folds, bool) or not isinstance(n_folds, (int, np.integer)) or n_folds < 2:
        raise ValueError(f"n_folds must be an integer >= 2, got {n_folds!r}")
    if n_folds > n_pairs:
        raise ValueError(f"n_folds={n_folds} exceeds the {n_pairs} pairs; every fold needs a pair")


def _check_far(far: float) -> None:
    if not 0.0 < far <= 1.0:
        raise ValueError(f"far must be in (0, 1], got {far!r}")


def _scores_and_labels(scores: ArrayInput, is_same: ArrayInput) -> tuple[np.ndarray, np.ndarray]:
    """Validated float64 scores and boolean is_same, both 1-D and of equal length."""
    scores_array = _as_numpy(scores)
    if scores_array.ndim != 1:
        raise ValueError(f"scores must be 1-D (one score per pair), got shape {scores_array.shape}")
    if scores_array.size == 0:
        raise ValueError("scores is empty; expected at least one genuine and one impostor pair")
    if not np.issubdtype(scores_array.dtype, np.number) or np.iscomplexobj(scores_array):
        raise ValueError(f"scores must be real numbers, got dtype {scores_array.dtype}")
    scores_array = scores_array.astype(np.float64, copy=False)
    not_finite = np.flatnonzero(~np.isfinite(scores_array))
    if not_finite.size:
        index = int(not_finite[0])
        raise ValueError(f"scores must be finite; scores[{index}] is {scores_array[index]}")

    same = _as_numpy(is_same)
    if same.shape != scores_array.shape:
        raise ValueError(
            f"is_same has shape {same.shape} but scores has shape {scores_array.shape}; "
            "expected one is_same flag per score"
        )
    if same.dtype != np.bool_:
        if not np.issubdtype(same.dtype, np.number) or not np.isin(same, (0, 1)).all():
            raise ValueError(f"is_same must be boolean (or 0/1), got dtype {same.dtype}")
        same = same.astype(bool)
    n_genuine = int(np.count_nonzero(same))
    if n_genuine in (0, same.size):
        only = "impostor (False)" if n_genuine == 0 else "genuine (True)"
        raise ValueError(f"is_same holds only {only} pairs; verification metrics need both genuine and impostor pairs")
    return scores_array, same


def _as_numpy(values: ArrayInput) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu()
        if values.dtype == torch.bfloat16:
            values = values.float()
        return values.numpy()
    return np.asarray(values)


def _embedding_matrix(embeddings: ArrayInput, name: str) -> np.ndarray:
    matrix = _as_numpy(embeddings)
    if matrix.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n, embedding_size), got shape {matrix.shape}")
    if not np.issubdtype(matrix.dtype, np.number) or np.iscomplexobj(matrix):
        raise ValueError(f"{name} must hold real numbers, got dtype {matrix.dtype}")
    return matrix


def _unit_rows(rows: np.ndarray, name: str, first_row: int) -> np.ndarray:
    """Rows as float64 unit vectors; ``first_row`` is their offset in ``name``, for errors."""
    rows = rows.astype(np.float64)
    norms = np.linalg.norm(rows, axis=1)
    bad = np.flatnonzero(~np.isfinite(norms) | (norms == 0.0))
    if bad.size:
        index = first_row + int(bad[0])
        raise ValueError(
            f"{name} row {index} has norm {norms[bad[0]]}; cosine similarity needs finite, non-zero embeddings"
        )
    return rows / norms[:, None]


def _label_vector(labels: ArrayInput, name: str, n_rows: int, embeddings_name: str) -> np.ndarray:
    vector = _as_numpy(labels)
    if vector.shape != (n_rows,):
        raise ValueError(
            f"{name} has shape {vector.shape}; expected ({n_rows},), one label per row of {embeddings_name}"
        )
    return vector


def _json_float(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(value)
