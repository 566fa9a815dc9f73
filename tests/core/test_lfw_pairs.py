"""Specification of nptface.core.lfw_pairs: LFW's pairs.txt over an ImageFolder of the LFW tree."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nptface.core.imagefolder import ImageFolderDataset, PairsFileError
from nptface.core.lfw_pairs import LFWPairsError, read_lfw_pairs

PEOPLE = {"Aaron_Peirsol": 3, "Abel_Pacheco": 2, "Zico": 1}

# LFW's View 2 layout in miniature: 2 folds of 1 genuine then 1 impostor pair, tab-separated.
PAIRS_TXT = (
    "2\t1\nAaron_Peirsol\t1\t2\nAaron_Peirsol\t3\tAbel_Pacheco\t1\nAbel_Pacheco\t1\t2\nAbel_Pacheco\t2\tZico\t1\n"
)


def write_lfw_tree(root: Path, extension: str = ".jpg") -> Path:
    for person, count in PEOPLE.items():
        (root / person).mkdir(parents=True)
        for number in range(1, count + 1):
            Image.new("RGB", (16, 16), (10 * number, 50, 90)).save(root / person / f"{person}_{number:04d}{extension}")
    return root


@pytest.fixture
def lfw(tmp_path: Path) -> ImageFolderDataset:
    return ImageFolderDataset(write_lfw_tree(tmp_path / "lfw"), image_size=16)


def image_index(dataset: ImageFolderDataset, person: str, number: int, extension: str = ".jpg") -> int:
    return [path.name for path, _ in dataset.samples].index(f"{person}_{number:04d}{extension}")


def write_pairs(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pairs.txt"
    path.write_text(text)
    return path


def test_pairs_map_to_dataset_indices_in_file_order(tmp_path: Path, lfw: ImageFolderDataset) -> None:
    pairs = read_lfw_pairs(write_pairs(tmp_path, PAIRS_TXT), lfw)

    expected = [
        (("Aaron_Peirsol", 1), ("Aaron_Peirsol", 2)),
        (("Aaron_Peirsol", 3), ("Abel_Pacheco", 1)),
        (("Abel_Pacheco", 1), ("Abel_Pacheco", 2)),
        (("Abel_Pacheco", 2), ("Zico", 1)),
    ]
    np.testing.assert_array_equal(pairs.index_a, [image_index(lfw, *a) for a, _ in expected])
    np.testing.assert_array_equal(pairs.index_b, [image_index(lfw, *b) for _, b in expected])
    np.testing.assert_array_equal(pairs.is_same, [True, False, True, False])
    assert np.array_equal(lfw.labels[pairs.index_a] == lfw.labels[pairs.index_b], pairs.is_same)


@pytest.mark.parametrize("header", ["2\n", "", "\n\n"], ids=["view-1-count", "no-header", "blank-lines"])
def test_a_single_count_header_or_none_at_all_is_accepted(tmp_path: Path, lfw: ImageFolderDataset, header: str) -> None:
    body = "Aaron_Peirsol 1 2\nAbel_Pacheco 1 2\nAaron_Peirsol 3 Abel_Pacheco 1\nAbel_Pacheco 2 Zico 1\n"

    pairs = read_lfw_pairs(write_pairs(tmp_path, header + body), lfw)

    np.testing.assert_array_equal(pairs.is_same, [True, True, False, False])


def test_extension_selects_aligned_png_copies(tmp_path: Path) -> None:
    dataset = ImageFolderDataset(write_lfw_tree(tmp_path / "lfw_png", ".png"), image_size=16)

    pairs = read_lfw_pairs(write_pairs(tmp_path, PAIRS_TXT), dataset, extension=".png")

    assert pairs.index_a[0] == image_index(dataset, "Aaron_Peirsol", 1, ".png")


# -- bad input: every error names the file and the line -------------------------------------------


def test_a_pair_naming_a_missing_image_is_refused(tmp_path: Path, lfw: ImageFolderDataset) -> None:
    path = write_pairs(tmp_path, PAIRS_TXT.replace("Abel_Pacheco\t1\t2", "Abel_Pacheco\t1\t7"))

    with pytest.raises(LFWPairsError, match=r"pairs\.txt:4: image .*Abel_Pacheco/Abel_Pacheco_0007\.jpg is not among"):
        read_lfw_pairs(path, lfw)


@pytest.mark.parametrize(
    "line",
    ["Aaron_Peirsol\t1", "Aaron_Peirsol 1 2 Abel_Pacheco 1", "Aaron_Peirsol one 2", "Aaron_Peirsol 2 2"],
    ids=["too-few-fields", "too-many-fields", "not-a-number", "image-with-itself"],
)
def test_a_malformed_line_is_refused(tmp_path: Path, lfw: ImageFolderDataset, line: str) -> None:
    path = write_pairs(tmp_path, PAIRS_TXT.replace("Aaron_Peirsol\t1\t2", line))

    with pytest.raises(LFWPairsError, match=r"pairs\.txt:2: ") as caught:
        read_lfw_pairs(path, lfw)
    assert isinstance(caught.value, PairsFileError)


def test_a_header_promising_more_pairs_than_the_file_holds_is_refused(tmp_path: Path, lfw: ImageFolderDataset) -> None:
    path = write_pairs(tmp_path, PAIRS_TXT.replace("2\t1\n", "10\t300\n"))

    with pytest.raises(
        LFWPairsError, match=r"pairs\.txt:1: the header promises 10 fold\(s\) .* 6000 pairs, but the file has 4"
    ):
        read_lfw_pairs(path, lfw)


def test_folds_out_of_genuine_then_impostor_order_are_refused(tmp_path: Path, lfw: ImageFolderDataset) -> None:
    lines = PAIRS_TXT.splitlines()
    path = write_pairs(tmp_path, "\n".join([lines[0], lines[2], lines[1], *lines[3:]]) + "\n")

    with pytest.raises(
        LFWPairsError, match=r"pairs\.txt:2: fold 1 should list 1 genuine then 1 impostor .* an impostor pair"
    ):
        read_lfw_pairs(path, lfw)


def test_an_empty_file_is_refused(tmp_path: Path, lfw: ImageFolderDataset) -> None:
    with pytest.raises(LFWPairsError, match=r"pairs\.txt: no pairs found"):
        read_lfw_pairs(write_pairs(tmp_path, "\n"), lfw)
