"""Identity-level splits: train on some people, verify on people the model has never seen.

Face verification claims are about unseen identities (the open-set protocol of LFW and of the
NPT paper's evaluation), so the split is over classes, never over images: every image of a
held-out identity is kept out of training. :func:`split_identities` draws a seeded, disjoint
partition of the class ids and :func:`subset_by_classes` views a dataset through one side of it,
following the ``nptface.core`` dataset contract (``(uint8 HxWx3 image, int label)`` items,
``num_classes``, ``labels``, ``class_names``) without decoding a single image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from torch.utils.data import Dataset

DEFAULT_HELDOUT_FRACTION = 0.2


class LabelledDataset(Protocol):
    """What the ``nptface.core`` datasets provide beyond ``__getitem__`` and ``__len__``."""

    num_classes: int
    labels: np.ndarray
    class_names: list[str]

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]: ...


@dataclass(frozen=True, eq=False)
class IdentitySplit:
    """Class ids to train on and class ids held out for verification; sorted, disjoint, non-empty."""

    train_classes: np.ndarray
    heldout_classes: np.ndarray

    def __post_init__(self) -> None:
        for field_name in ("train_classes", "heldout_classes"):
            classes = np.sort(np.asarray(getattr(self, field_name), dtype=np.int64))
            if classes.ndim != 1 or classes.size == 0:
                raise ValueError(
                    f"IdentitySplit.{field_name} must be a non-empty 1-D array of class ids, got shape {classes.shape}"
                )
            object.__setattr__(self, field_name, classes)
        shared = np.intersect1d(self.train_classes, self.heldout_classes)
        if shared.size:
            raise ValueError(
                f"IdentitySplit classes must be disjoint; {shared.tolist()} are both trained on and held out"
            )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, IdentitySplit):
            return NotImplemented
        return np.array_equal(self.train_classes, other.train_classes) and np.array_equal(
            self.heldout_classes, other.heldout_classes
        )

    __hash__ = None  # type: ignore[assignment]  # equal by value, and arrays are mutable


def split_identities(
    num_classes: int,
    heldout_fraction: float | None = None,
    heldout_count: int | None = None,
    seed: int = 0,
) -> IdentitySplit:
    """Hold out a seeded random set of identities from ``0..num_classes-1``.

    Give either ``heldout_fraction`` (rounded half up to a count; 0.2 when neither is given) or
    ``heldout_count``. Both sides must end up non-empty, so a count of 0 or ``num_classes``, and a
    fraction that rounds to either, is an error rather than a silently degenerate split.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int | np.integer) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2 to split identities, got {num_classes!r}")
    if heldout_fraction is not None and heldout_count is not None:
        raise ValueError(
            f"give heldout_fraction or heldout_count, not both (got {heldout_fraction!r} and {heldout_count!r})"
        )
    if heldout_count is None:
        fraction = DEFAULT_HELDOUT_FRACTION if heldout_fraction is None else heldout_fraction
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"heldout_fraction must lie strictly between 0 and 1, got {fraction!r}")
        heldout_count = math.floor(num_classes * fraction + 0.5)
        source = f"heldout_fraction={fraction!r} of {num_classes} classes"
    else:
        source = f"heldout_count={heldout_count!r}"
    if not 1 <= heldout_count <= num_classes - 1:
        raise ValueError(
            f"{source} holds out {heldout_count} identities; expected between 1 and {num_classes - 1} "
            "so that both the train and the held-out side are non-empty"
        )
    heldout = np.random.default_rng(seed).permutation(num_classes)[:heldout_count]
    train = np.setdiff1d(np.arange(num_classes), heldout)
    return IdentitySplit(train_classes=train, heldout_classes=heldout)


class ClassSubset(Dataset):
    """The items of ``dataset`` whose label is in ``classes``, in the dataset's order.

    With ``relabel=True`` the labels become positions in ``classes`` (``classes[k]`` -> ``k``) and
    ``class_names``/``num_classes`` describe just those classes, ready for a classifier head of
    ``len(classes)`` outputs. With ``relabel=False`` labels keep the parent's label space, so
    ``num_classes`` and ``class_names`` are the parent's.
    """

    def __init__(self, dataset: LabelledDataset, classes: Sequence[int] | np.ndarray, relabel: bool = True) -> None:
        class_ids = np.asarray(classes)
        if class_ids.ndim != 1 or class_ids.size == 0 or not np.issubdtype(class_ids.dtype, np.integer):
            raise ValueError(f"classes must be a non-empty 1-D sequence of int class ids, got {classes!r}")
        class_ids = class_ids.astype(np.int64)
        out_of_range = class_ids[(class_ids < 0) | (class_ids >= dataset.num_classes)]
        if out_of_range.size:
            raise ValueError(f"classes {out_of_range.tolist()} are outside 0..{dataset.num_classes - 1} of the dataset")
        unique, counts = np.unique(class_ids, return_counts=True)
        if (counts > 1).any():
            raise ValueError(f"classes must not repeat; {unique[counts > 1].tolist()} appear more than once")

        parent_labels = np.asarray(dataset.labels, dtype=np.int64)
        self.dataset = dataset
        self.classes = class_ids
        self.relabel = relabel
        self.indices: np.ndarray = np.flatnonzero(np.isin(parent_labels, class_ids))
        if relabel:
            new_label_of = np.full(dataset.num_classes, -1, dtype=np.int64)
            new_label_of[class_ids] = np.arange(class_ids.size)
            self.labels: np.ndarray = new_label_of[parent_labels[self.indices]]
            self.class_names: list[str] = [dataset.class_names[class_id] for class_id in class_ids]
            self.num_classes: int = int(class_ids.size)
        else:
            self.labels = parent_labels[self.indices]
            self.class_names = list(dataset.class_names)
            self.num_classes = dataset.num_classes

    def __len__(self) -> int:
        return int(self.indices.size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        image, _ = self.dataset[int(self.indices[index])]
        return image, int(self.labels[index])


def subset_by_classes(
    dataset: LabelledDataset, classes: Sequence[int] | np.ndarray, relabel: bool = True
) -> ClassSubset:
    """View ``dataset`` restricted to ``classes``; see :class:`ClassSubset`."""
    return ClassSubset(dataset, classes, relabel=relabel)
