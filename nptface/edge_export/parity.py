"""The parity gate: does an exported variant still make the reference model's decisions?

A variant is compared with the fp32 reference on the same images by what a user of a face
verifier experiences: per-image cosine to the reference embedding (mean, 1st percentile, min),
the 10-fold verification accuracy and TAR@FAR=1e-3 it reaches (as drops in points), the share
of verification pairs whose accept/reject decision flips at the reference's threshold for
FAR=1e-3, and how often its rank-1 identification agrees with the reference's. Limits depend on
the precision class; a variant that misses any limit is rejected.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from nptface.core.evaluation import gallery_probe_split
from nptface.core.pairs import Pairs
from nptface.core.tables import percent
from nptface.core.verification import (
    all_pair_scores,
    cosine_scores,
    kfold_accuracy,
    pair_scores,
    tar_at_far,
    threshold_at_far,
    unit_rows,
)

GATE_FAR = 1e-3
CARD_FARS = (1e-3, 1e-4)


@dataclass(frozen=True)
class GateLimits:
    min_mean_cos: float
    min_p1_cos: float
    max_accuracy_drop: float  # points
    max_flip_share: float  # fraction of verification pairs

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


# Every precision meets the gate's floor (p1 cosine ≥ 0.95, flips ≤ 1 %, accuracy drop ≤ 0.5 point); fp16 and fp32
# are held tighter, never looser than int8. Every other quantised label (numerics.precision_label: int8 weights with
# int16, run-time-quantised or fp16 activations; palettised weights) is held like int8.
_QUANTISED = GateLimits(min_mean_cos=0.98, min_p1_cos=0.95, max_accuracy_drop=0.5, max_flip_share=0.01)
DEFAULT_LIMITS: dict[str, GateLimits] = {
    "fp32": GateLimits(min_mean_cos=0.9999, min_p1_cos=0.999, max_accuracy_drop=0.1, max_flip_share=0.002),
    "fp16": GateLimits(min_mean_cos=0.999, min_p1_cos=0.99, max_accuracy_drop=0.5, max_flip_share=0.01),
    **dict.fromkeys(("int8", "w8a16", "w8-dynamic", "w8", "palette6"), _QUANTISED),
}


@dataclass(frozen=True)
class EvalScores:
    """What one set of embeddings achieves on the evaluation pairs."""

    accuracy: float
    tar_at_gate_far: float | None
    thresholds: dict[str, float]  # FAR (as text) -> cosine threshold on all pairs of the set


def score_embeddings(embeddings: np.ndarray, labels: np.ndarray, pairs: Pairs) -> EvalScores:
    """Fold accuracy on ``pairs``; TAR and the card's thresholds on every pair of the set (FAR needs many impostors)."""
    accuracy = kfold_accuracy(pair_scores(embeddings, pairs.index_a, pairs.index_b), pairs.is_same).mean
    scores, same = all_pair_scores(embeddings, labels)
    tar = tar_at_far(scores, same, (GATE_FAR,))[GATE_FAR]
    n_impostor = int(np.count_nonzero(~same))
    thresholds = {f"{far:.0e}": threshold_at_far(scores, same, far) for far in CARD_FARS if n_impostor * far >= 1}
    return EvalScores(accuracy, tar.tar, thresholds)


@dataclass(frozen=True)
class ParityReport:
    mean_cos: float
    p1_cos: float
    min_cos: float
    accuracy: float
    accuracy_drop: float  # points, reference minus variant
    tar_at_far_1e3: float | None
    tar_drop: float | None  # points
    flip_share: float
    top1_agreement: float | None
    threshold: float  # the reference's cosine threshold at FAR=1e-3, where flips are counted

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare(
    reference: np.ndarray, variant: np.ndarray, labels: np.ndarray, pairs: Pairs, reference_scores: EvalScores
) -> ParityReport:
    if reference.shape != variant.shape:
        raise ValueError(f"variant embeddings have shape {variant.shape}, the reference {reference.shape}")
    cos = cosine_scores(reference, variant)
    scores = score_embeddings(variant, labels, pairs)
    threshold = reference_scores.thresholds[f"{GATE_FAR:.0e}"]
    ref_pairs = pair_scores(reference, pairs.index_a, pairs.index_b)
    var_pairs = pair_scores(variant, pairs.index_a, pairs.index_b)
    flips = float(np.mean((ref_pairs >= threshold) != (var_pairs >= threshold)))
    tar_drop = None
    if reference_scores.tar_at_gate_far is not None and scores.tar_at_gate_far is not None:
        tar_drop = (reference_scores.tar_at_gate_far - scores.tar_at_gate_far) * 100
    return ParityReport(
        mean_cos=float(cos.mean()),
        p1_cos=float(np.percentile(cos, 1)),
        min_cos=float(cos.min()),
        accuracy=scores.accuracy,
        accuracy_drop=(reference_scores.accuracy - scores.accuracy) * 100,
        tar_at_far_1e3=scores.tar_at_gate_far,
        tar_drop=tar_drop,
        flip_share=flips,
        top1_agreement=_top1_agreement(unit_rows(reference, "reference"), unit_rows(variant, "variant"), labels),
        threshold=threshold,
    )


def _top1_agreement(ref: np.ndarray, var: np.ndarray, labels: np.ndarray) -> float | None:
    gallery, probes = gallery_probe_split(labels)
    if not len(probes):
        return None
    ref_top = np.argmax(ref[probes] @ ref[gallery].T, axis=1)
    var_top = np.argmax(var[probes] @ var[gallery].T, axis=1)
    return float(np.mean(ref_top == var_top))


def verdict(report: ParityReport, limits: GateLimits) -> list[str]:
    """The limits a variant misses, in words; empty means it passes the gate."""
    failures = []
    if not report.mean_cos >= limits.min_mean_cos:
        failures.append(f"mean cosine {report.mean_cos:.5f} < {limits.min_mean_cos}")
    if not report.p1_cos >= limits.min_p1_cos:
        failures.append(f"1st-percentile cosine {report.p1_cos:.5f} < {limits.min_p1_cos}")
    if not report.accuracy_drop <= limits.max_accuracy_drop:
        failures.append(f"accuracy drop {report.accuracy_drop:.2f} points > {limits.max_accuracy_drop}")
    if not report.flip_share <= limits.max_flip_share:
        failures.append(f"{percent(report.flip_share)} decisions flip > {percent(limits.max_flip_share)}")
    return failures
