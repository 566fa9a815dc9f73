"""LFW's ``pairs.txt`` protocol file, mapped onto an :class:`ImageFolderDataset` of the LFW tree.

Labeled Faces in the Wild (Huang et al., 2007) ships its verification protocol as text: View 2's
``pairs.txt`` opens with ``10 300`` (10 folds of 300 genuine then 300 impostor pairs each), View 1's
``pairsDevTrain.txt``/``pairsDevTest.txt`` with a single count ``N`` (N genuine then N impostor),
and some redistributions drop the header. A line ``name n1 n2`` is a genuine pair, ``name1 n1 name2
n2`` an impostor pair, image ``n`` of ``name`` being ``root/name/name_%04d.jpg``. The file order is
kept, because :func:`nptface.core.verification.kfold_accuracy` reads the folds as contiguous
blocks; a header is checked against the lines that follow it (count and fold layout), because a
truncated or re-sorted protocol file silently changes the benchmark.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from nptface.core.imagefolder import ImageFolderDataset, PairsFileError
from nptface.core.pairs import Pairs

logger = logging.getLogger(__name__)


class LFWPairsError(PairsFileError):
    """An LFW-style pairs file with a malformed line, a missing image or a wrong header."""


def _image_number(field: str, path: Path, number: int, line: str) -> int:
    if not field.isdigit():
        raise LFWPairsError(
            f"{path}:{number}: {field!r} is not an image number; expected 'name n1 n2' or 'name1 n1 name2 n2', got {line!r}"
        )
    return int(field)


def read_lfw_pairs(pairs_txt: str | Path, dataset: ImageFolderDataset, extension: str = ".jpg") -> Pairs:
    """Pairs of ``dataset`` indices from an LFW-style pairs file, in file order.

    ``extension`` is the suffix of the image files (``.jpg`` in LFW; aligned copies are often
    ``.png``). Blank lines are ignored. Every error names the file and line.
    """
    path = Path(pairs_txt)
    index = {name: i for i, name in enumerate(dataset.names)}
    lines = [
        (number, line.strip()) for number, line in enumerate(path.read_text().splitlines(), start=1) if line.strip()
    ]
    if not lines:
        raise LFWPairsError(f"{path}: no pairs found")

    folds = per_fold = None
    header_line, header_text = lines[0]
    header = header_text.split()
    if len(header) <= 2 and all(field.isdigit() for field in header):
        folds, per_fold = (int(header[0]), int(header[1])) if len(header) == 2 else (1, int(header[0]))
        lines = lines[1:]
        if folds < 1 or per_fold < 1:
            raise LFWPairsError(f"{path}:{header_line}: header {header_text!r} must give positive counts")

    index_a, index_b, is_same = [], [], []
    for number, line in lines:
        fields = line.split()
        if len(fields) == 3:
            names = (fields[0], fields[0])
            numbers = (_image_number(fields[1], path, number, line), _image_number(fields[2], path, number, line))
        elif len(fields) == 4:
            names = (fields[0], fields[2])
            numbers = (_image_number(fields[1], path, number, line), _image_number(fields[3], path, number, line))
        else:
            raise LFWPairsError(
                f"{path}:{number}: expected 'name n1 n2' (genuine) or 'name1 n1 name2 n2' (impostor), got {line!r}"
            )
        if names[0] == names[1] and numbers[0] == numbers[1]:
            raise LFWPairsError(f"{path}:{number}: pairs image {numbers[0]} of {names[0]} with itself")
        pair = []
        for name, image_number in zip(names, numbers):
            relative = f"{name}/{name}_{image_number:04d}{extension}"
            if relative not in index:
                raise LFWPairsError(
                    f"{path}:{number}: image {dataset.root / relative} is not among the images of {dataset.root}"
                )
            pair.append(index[relative])
        index_a.append(pair[0])
        index_b.append(pair[1])
        is_same.append(len(fields) == 3)

    if folds is not None and per_fold is not None:
        _check_header(path, header_line, folds, per_fold, [number for number, _ in lines], is_same)
    logger.info("%s: %d pairs (%d genuine)%s", path, len(is_same), sum(is_same), f" in {folds} folds" if folds else "")
    return Pairs(np.array(index_a, dtype=np.int64), np.array(index_b, dtype=np.int64), np.array(is_same, dtype=bool))


def _check_header(
    path: Path, header_line: int, folds: int, per_fold: int, numbers: list[int], is_same: list[bool]
) -> None:
    """Each fold is ``per_fold`` genuine pairs followed by ``per_fold`` impostor pairs."""
    expected = 2 * folds * per_fold
    if len(is_same) != expected:
        raise LFWPairsError(
            f"{path}:{header_line}: the header promises {folds} fold(s) x ({per_fold} genuine + {per_fold} impostor) = "
            f"{expected} pairs, but the file has {len(is_same)} pair lines ({sum(is_same)} genuine)"
        )
    for position, same in enumerate(is_same):
        should_be_same = position % (2 * per_fold) < per_fold
        if same != should_be_same:
            fold = position // (2 * per_fold)
            raise LFWPairsError(
                f"{path}:{numbers[position]}: fold {fold + 1} should list {per_fold} genuine then {per_fold} impostor "
                f"pairs (header on line {header_line}), but this line is {'a genuine' if same else 'an impostor'} pair"
            )
