"""Evaluating a backbone on a held-out identity set: embed once, then verify and identify.

Verification (1:1) scores the given pairs by cosine; identification (1:N) uses each identity's
first image as the gallery and its other images as probes. Both read the same embeddings, so a
report's numbers always describe the same forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn
from torch.utils.data import Dataset

from nptface.core.embedding import embed_dataset
from nptface.core.pairs import Pairs
from nptface.core.tables import percent
from nptface.core.verification import VerificationReport, evaluate_pairs, rank1_identification


@dataclass(frozen=True, eq=False)
class EvaluationResult:
    verification: VerificationReport
    rank1: float | None  # None when no identity has a second image to probe with
    n_images: int
    n_identities: int
    flip: bool

    def to_dict(self, roc_points: int = 0) -> dict[str, Any]:
        return {
            "verification": self.verification.to_dict(roc_points),
            "rank1_identification": self.rank1,
            "n_images": self.n_images,
            "n_identities": self.n_identities,
            "flip_augmented": self.flip,
        }

    def summary_lines(self) -> list[str]:
        lines = list(self.verification.summary_lines())
        if self.rank1 is not None:
            lines.append(
                f"rank-1 identification ({self.verification.metric}, first image of each identity as gallery): "
                f"{percent(self.rank1)}"
            )
        return lines


def gallery_probe_split(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the first image of every identity (gallery) and of all others (probes)."""
    _, first = np.unique(labels, return_index=True)
    probes = np.setdiff1d(np.arange(len(labels)), first)
    return np.sort(first), probes


def evaluate_model(
    model: nn.Module, dataset: Dataset, pairs: Pairs, flip: bool = False, batch_size: int = 128, n_folds: int = 10
) -> EvaluationResult:
    embeddings = embed_dataset(model, dataset, batch_size=batch_size, flip=flip)
    return evaluate_embeddings(embeddings, np.asarray(dataset.labels), pairs, flip, n_folds)


def evaluate_embeddings(
    embeddings: np.ndarray, labels: np.ndarray, pairs: Pairs, flip: bool = False, n_folds: int = 10
) -> EvaluationResult:
    verification = evaluate_pairs(embeddings[pairs.index_a], embeddings[pairs.index_b], pairs.is_same, n_folds=n_folds)
    gallery, probes = gallery_probe_split(labels)
    rank1 = (
        rank1_identification(embeddings[gallery], labels[gallery], embeddings[probes], labels[probes])
        if len(probes)
        else None
    )
    return EvaluationResult(verification, rank1, len(labels), len(np.unique(labels)), flip)
