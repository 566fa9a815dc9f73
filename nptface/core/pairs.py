"""Verification pairs for a held-out identity set: every genuine pair, or LFW-style folds.

Verification is measured on pairs of samples, genuine (same identity) or impostor (different
identities). This module draws them, seeded, from a list of per-sample identity labels: either
all genuine pairs with as many distinct impostor pairs (:func:`all_genuine_pairs`, the protocol
that gives TAR@FAR enough impostors to be measured), or ``n_folds`` contiguous, balanced folds of
distinct pairs laid out like LFW's ``pairs.txt`` (:func:`lfw_style_pairs`, Huang et al. 2007), for
:func:`nptface.core.verification.kfold_accuracy`. Pairs are drawn by sampling ranks in the space of
all genuine (or all impostor) pairs without replacement and decoding each rank to its two samples,
so draws are exactly uniform, never repeat, and never enumerate the quadratic space of pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True, eq=False)
class Pairs:
    """Pair ``i`` compares samples ``index_a[i]`` and ``index_b[i]`` (``index_a[i] < index_b[i]``).

    ``is_same[i]`` is True for a genuine pair (same identity), False for an impostor pair.
    """

    index_a: np.ndarray
    index_b: np.ndarray
    is_same: np.ndarray

    def __post_init__(self) -> None:
        if not len(self.index_a) == len(self.index_b) == len(self.is_same):
            raise ValueError(
                f"index_a, index_b and is_same must have equal lengths, got "
                f"{len(self.index_a)}, {len(self.index_b)} and {len(self.is_same)}"
            )

    def __len__(self) -> int:
        return len(self.is_same)

    def reindexed(self, new_index: npt.ArrayLike) -> Pairs:
        """These pairs over a subset of the samples: sample ``i`` is ``new_index[i]`` there, or -1 if it left.

        A pair with a sample that left is dropped; the others keep their order, so folds stay
        contiguous blocks (an image found unusable after the pairs were drawn, like a photo with no face).
        """
        new_index = np.asarray(new_index, dtype=np.int64)
        a, b = new_index[self.index_a], new_index[self.index_b]
        kept = (a >= 0) & (b >= 0)
        return Pairs(a[kept], b[kept], np.asarray(self.is_same)[kept])


def all_genuine_pairs(
    labels: npt.ArrayLike,
    seed: int,
    impostor_ratio: float = 1.0,
    max_genuine: int | None = None,
) -> Pairs:
    """Every genuine pair (or ``max_genuine`` of them, uniformly) plus distinct impostor pairs.

    There are ``round(n_genuine * impostor_ratio)`` impostor pairs, drawn uniformly without
    repeats; genuine and impostor pairs are shuffled together.
    """
    if not impostor_ratio > 0:
        raise ValueError(f"impostor_ratio must be > 0, got {impostor_ratio!r}")
    if max_genuine is not None and max_genuine < 1:
        raise ValueError(f"max_genuine must be >= 1 or None, got {max_genuine!r}")
    space = _PairSpace(labels)
    rng = np.random.default_rng(seed)

    n_genuine = space.n_genuine if max_genuine is None else min(max_genuine, space.n_genuine)
    if n_genuine == space.n_genuine:
        genuine_ranks = np.arange(space.n_genuine, dtype=np.int64)
    else:
        genuine_ranks = rng.choice(space.n_genuine, size=n_genuine, replace=False)
    n_impostor = round(n_genuine * impostor_ratio)
    if n_impostor > space.n_impostor:
        raise ValueError(
            f"impostor_ratio={impostor_ratio} asks for {n_impostor} impostor pairs but labels "
            f"allow only {space.n_impostor} distinct ones"
        )
    impostor_ranks = rng.choice(space.n_impostor, size=n_impostor, replace=False)

    genuine_a, genuine_b = space.genuine(genuine_ranks)
    impostor_a, impostor_b = space.impostor(impostor_ranks)
    order = rng.permutation(n_genuine + n_impostor)
    return Pairs(
        index_a=np.concatenate((genuine_a, impostor_a))[order],
        index_b=np.concatenate((genuine_b, impostor_b))[order],
        is_same=np.concatenate((np.ones(n_genuine, bool), np.zeros(n_impostor, bool)))[order],
    )


def lfw_style_pairs(labels: npt.ArrayLike, n_folds: int = 10, per_fold: int = 300, seed: int = 0) -> Pairs:
    """``n_folds`` contiguous folds, each ``per_fold`` genuine + ``per_fold`` impostor pairs.

    Fold ``k`` is ``pairs[2 * per_fold * k : 2 * per_fold * (k + 1)]``, shuffled within itself;
    no pair occurs twice in the whole set. Identities may appear in several folds (LFW's View 2
    keeps them apart; a single scalar threshold learns little from a shared identity).
    """
    if n_folds < 1:
        raise ValueError(f"n_folds must be >= 1, got {n_folds!r}")
    if per_fold < 1:
        raise ValueError(f"per_fold must be >= 1, got {per_fold!r}")
    space = _PairSpace(labels)
    needed = n_folds * per_fold
    for kind, available in (("genuine", space.n_genuine), ("impostor", space.n_impostor)):
        if available < needed:
            raise ValueError(
                f"labels can supply only {available} distinct {kind} pairs, but n_folds={n_folds} "
                f"x per_fold={per_fold} needs {needed}; lower per_fold or add samples"
            )
    rng = np.random.default_rng(seed)
    genuine_a, genuine_b = space.genuine(rng.choice(space.n_genuine, size=needed, replace=False))
    impostor_a, impostor_b = space.impostor(rng.choice(space.n_impostor, size=needed, replace=False))

    fold_size = 2 * per_fold
    index_a = np.empty(n_folds * fold_size, dtype=np.int64)
    index_b = np.empty_like(index_a)
    is_same = np.empty(n_folds * fold_size, dtype=bool)
    for fold in range(n_folds):
        drawn = slice(fold * per_fold, (fold + 1) * per_fold)
        order = rng.permutation(fold_size)
        placed = slice(fold * fold_size, (fold + 1) * fold_size)
        index_a[placed] = np.concatenate((genuine_a[drawn], impostor_a[drawn]))[order]
        index_b[placed] = np.concatenate((genuine_b[drawn], impostor_b[drawn]))[order]
        is_same[placed] = np.concatenate((np.ones(per_fold, bool), np.zeros(per_fold, bool)))[order]
    return Pairs(index_a=index_a, index_b=index_b, is_same=is_same)


LFW_PAIRS_PER_FOLD = 300


def largest_lfw_style_pairs(labels: npt.ArrayLike, n_folds: int = 10, seed: int = 0, where: str = "labels") -> Pairs:
    """LFW-style folds as large as the labels allow, capped at LFW's 300 genuine pairs a fold.

    Small evaluation sets (a client's few identities, a tiny export eval set) cannot fill LFW's
    folds; this is the one place that decides how far to shrink them. ``where`` names the set
    in the error when not even one genuine pair per fold exists.
    """
    space = _PairSpace(labels)
    per_fold = min(LFW_PAIRS_PER_FOLD, space.n_genuine // n_folds, space.n_impostor // n_folds)
    if per_fold < 1:
        raise ValueError(
            f"{where}: too few pairs ({space.n_genuine} genuine, {space.n_impostor} impostor) for "
            f"{n_folds} folds; expected at least {n_folds} of each (add identities or images)"
        )
    return lfw_style_pairs(labels, n_folds=n_folds, per_fold=per_fold, seed=seed)


class _PairSpace:
    """Numbers every genuine and every impostor pair of a label list, and decodes the numbers.

    Samples are grouped by identity (``order``: sample indices sorted stably by label, so within
    an identity they ascend). Genuine rank ``r`` lies in an identity's block of ``c * (c - 1) / 2``
    pairs, enumerated (0,1), (0,2), (1,2), (0,3), ...; impostor rank ``r`` pairs position ``p`` of
    ``order`` with a position in a later identity's group.
    """

    def __init__(self, labels: npt.ArrayLike) -> None:
        label_array = np.asarray(labels)
        if label_array.ndim != 1:
            raise ValueError(f"labels must be 1-D (one per sample), got shape {label_array.shape}")
        identities, codes, counts = np.unique(label_array, return_inverse=True, return_counts=True)
        if len(identities) < 2:
            raise ValueError(f"labels must name at least 2 identities to form impostor pairs, got {len(identities)}")
        if counts.max() < 2:
            raise ValueError(
                "labels must give at least one identity 2 or more samples to form genuine pairs, "
                "but every identity has a single sample"
            )
        n_samples = label_array.size
        self.order = np.argsort(codes, kind="stable")
        counts = counts.astype(np.int64)
        self.group_start = np.cumsum(counts) - counts

        self.genuine_per_group = counts * (counts - 1) // 2
        self.genuine_end = np.cumsum(self.genuine_per_group)
        self.n_genuine = int(self.genuine_end[-1])

        # Impostor partners of a position are every position after the end of its group.
        self.group_end_of_position = np.repeat(self.group_start + counts, counts)
        self.impostor_per_position = n_samples - self.group_end_of_position
        self.impostor_end = np.cumsum(self.impostor_per_position)
        self.n_impostor = int(self.impostor_end[-1])

    def genuine(self, ranks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ranks = np.asarray(ranks, dtype=np.int64)
        group = np.searchsorted(self.genuine_end, ranks, side="right")
        local = ranks - (self.genuine_end[group] - self.genuine_per_group[group])
        # Largest j with j * (j - 1) / 2 <= local; float sqrt then an exact integer correction.
        second = ((1 + np.sqrt(1 + 8 * local.astype(np.float64))) // 2).astype(np.int64)
        second -= second * (second - 1) // 2 > local
        second += (second + 1) * second // 2 <= local
        first = local - second * (second - 1) // 2
        start = self.group_start[group]
        return self.order[start + first], self.order[start + second]

    def impostor(self, ranks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ranks = np.asarray(ranks, dtype=np.int64)
        position = np.searchsorted(self.impostor_end, ranks, side="right")
        offset = ranks - (self.impostor_end[position] - self.impostor_per_position[position])
        sample_a = self.order[position]
        sample_b = self.order[self.group_end_of_position[position] + offset]
        return np.minimum(sample_a, sample_b), np.maximum(sample_a, sample_b)
