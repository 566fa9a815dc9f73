"""Specification of nptface.core.identities: splits over identities, and subsets by class."""

from __future__ import annotations

import numpy as np
import pytest
from torch.utils.data import Dataset

from nptface.core.identities import IdentitySplit, split_identities, subset_by_classes


class LabelOnlyDataset(Dataset):
    """A contract-following dataset whose images encode their own index, and count decodes."""

    def __init__(self, labels: list[int], class_names: list[str]) -> None:
        self.labels = np.asarray(labels, dtype=np.int64)
        self.class_names = class_names
        self.num_classes = len(class_names)
        self.decoded: list[int] = []

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        self.decoded.append(index)
        return np.full((2, 2, 3), index, dtype=np.uint8), int(self.labels[index])


@pytest.fixture
def four_people() -> LabelOnlyDataset:
    return LabelOnlyDataset([0, 1, 2, 3, 1, 0, 3, 2, 2], ["ann", "ben", "cat", "dan"])


def test_split_is_disjoint_and_covers_every_identity() -> None:
    split = split_identities(50, heldout_fraction=0.2, seed=3)

    assert np.intersect1d(split.train_classes, split.heldout_classes).size == 0
    assert np.union1d(split.train_classes, split.heldout_classes).tolist() == list(range(50))
    assert split.heldout_classes.size == 10
    assert (np.diff(split.train_classes) > 0).all() and (np.diff(split.heldout_classes) > 0).all()
    assert split.train_classes.dtype == split.heldout_classes.dtype == np.int64


def test_split_is_determined_by_the_seed() -> None:
    assert split_identities(100, seed=7) == split_identities(100, seed=7)
    assert split_identities(100, seed=7) != split_identities(100, seed=8)


def test_split_holds_out_a_random_set_not_the_last_classes() -> None:
    heldout = split_identities(100, heldout_count=10, seed=0).heldout_classes

    assert heldout.tolist() != list(range(90, 100))
    assert heldout.tolist() != list(range(10))


def test_default_holds_out_a_fifth() -> None:
    assert split_identities(40).heldout_classes.size == 8


def test_heldout_count_is_exact() -> None:
    split = split_identities(10, heldout_count=9)

    assert split.heldout_classes.size == 9
    assert split.train_classes.size == 1


def test_fraction_rounds_half_up() -> None:
    assert split_identities(10, heldout_fraction=0.25).heldout_classes.size == 3


@pytest.mark.parametrize(
    ("num_classes", "kwargs", "message"),
    [
        (1, {}, "num_classes must be an int >= 2"),
        (10, {"heldout_count": 0}, "expected between 1 and 9"),
        (10, {"heldout_count": 10}, "expected between 1 and 9"),
        (10, {"heldout_fraction": 0.01}, "holds out 0 identities"),
        (10, {"heldout_fraction": 0.97}, "holds out 10 identities"),
        (10, {"heldout_fraction": 1.0}, "strictly between 0 and 1"),
        (10, {"heldout_fraction": 0.2, "heldout_count": 2}, "not both"),
    ],
)
def test_degenerate_splits_are_errors(num_classes: int, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        split_identities(num_classes, **kwargs)


def test_identity_split_rejects_overlap() -> None:
    with pytest.raises(ValueError, match=r"disjoint; \[2\]"):
        IdentitySplit(train_classes=np.array([0, 1, 2]), heldout_classes=np.array([2, 3]))


def test_subset_relabels_in_the_given_order_without_decoding(four_people: LabelOnlyDataset) -> None:
    subset = subset_by_classes(four_people, [3, 1])

    assert subset.num_classes == 2
    assert subset.class_names == ["dan", "ben"]
    assert subset.labels.dtype == np.int64
    # parent items 1 (ben), 3 (dan), 4 (ben), 6 (dan), in the parent's order
    assert subset.labels.tolist() == [1, 0, 1, 0]
    assert len(subset) == 4
    assert four_people.decoded == []


def test_subset_items_come_from_the_parent_with_new_labels(four_people: LabelOnlyDataset) -> None:
    subset = subset_by_classes(four_people, [3, 1])

    items = [subset[index] for index in range(len(subset))]

    assert [int(image[0, 0, 0]) for image, _ in items] == [1, 3, 4, 6]
    assert [label for _, label in items] == subset.labels.tolist()
    assert all(isinstance(label, int) for _, label in items)


def test_subset_without_relabel_keeps_the_parent_label_space(four_people: LabelOnlyDataset) -> None:
    subset = subset_by_classes(four_people, np.array([2]), relabel=False)

    assert subset.labels.tolist() == [2, 2, 2]
    assert subset.num_classes == 4
    assert subset.class_names == ["ann", "ben", "cat", "dan"]
    assert subset[0][1] == 2


def test_subsets_of_a_split_partition_the_items(four_people: LabelOnlyDataset) -> None:
    split = split_identities(four_people.num_classes, heldout_count=1, seed=0)

    train = subset_by_classes(four_people, split.train_classes)
    heldout = subset_by_classes(four_people, split.heldout_classes)

    assert len(train) + len(heldout) == len(four_people)
    assert np.intersect1d(train.indices, heldout.indices).size == 0
    assert set(train.class_names).isdisjoint(heldout.class_names)


@pytest.mark.parametrize(
    ("classes", "message"),
    [
        ([], "non-empty"),
        ([1, 4], r"\[4\] are outside 0..3"),
        ([-1], "outside"),
        ([2, 2], r"\[2\] appear more than once"),
    ],
)
def test_subset_rejects_bad_class_lists(four_people: LabelOnlyDataset, classes: list[int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        subset_by_classes(four_people, classes)
