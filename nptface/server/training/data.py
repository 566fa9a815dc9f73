"""From a config's data and eval sections to datasets and verification pairs.

Training data: synthetic server identities (rendered once into memory, or streamed and rendered
in DataLoader workers), an ImageFolder, or an insightface RecordIO pack. Evaluation sets: held-out
synthetic identities (never trained on), an ImageFolder with a pairs file or generated pairs (all
genuine pairs, or LFW-style folds), an insightface verification ``.bin`` or an LFW folder with its
``pairs.txt``; ``nptface eval`` builds its set here too, so a run is judged the same way
during training and after it. An eval set is a function of its spec alone (its data and its
protocol seed), never of the run's seed: runs of different seeds are scored on the same pairs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from nptface.core.datasets import SyntheticFaceDataset, materialize
from nptface.core.identities import split_identities, subset_by_classes
from nptface.core.imagefolder import ImageFolderDataset, read_pairs_file
from nptface.core.pairs import Pairs, all_genuine_pairs, lfw_style_pairs
from nptface.core.synthetic import HELDOUT_IDS, SERVER_IDS
from nptface.server.training.config import DataSection, EvalSet

logger = logging.getLogger(__name__)


@dataclass
class EvalData:
    name: str
    dataset: Dataset
    pairs: Pairs


def build_train_data(
    data: DataSection, image_size: int, seed: int, progress: bool = False
) -> tuple[Dataset, EvalData | None]:
    """The training set and, with ``data.heldout_identities``, an eval set of the identities held out of it."""
    dataset = _load_train_dataset(data, image_size, seed, progress)
    if not data.heldout_identities:
        return dataset, None
    split = split_identities(dataset.num_classes, heldout_count=data.heldout_identities, seed=seed)
    heldout = subset_by_classes(dataset, split.heldout_classes)
    pairs = all_genuine_pairs(heldout.labels, seed=EvalSet.seed)  # the protocol seed, as for every eval set
    return subset_by_classes(dataset, split.train_classes), EvalData("heldout-identities", heldout, pairs)


def _load_train_dataset(data: DataSection, image_size: int, seed: int, progress: bool) -> Dataset:
    if data.kind == "synthetic":
        dataset = SyntheticFaceDataset(
            SERVER_IDS[: data.identities], data.images_per_identity, data.domain, seed, image_size, data.lookalike_share
        )
        return materialize(dataset, "rendering training faces", progress) if data.in_memory else dataset
    if data.kind == "imagefolder":
        dataset = ImageFolderDataset(data.path, image_size=image_size, skip_bad=data.skip_bad)
        if dataset.skipped:
            logger.warning("%s", dataset.summary())
        return dataset
    if data.kind == "recordio":
        from nptface.core.recordio import RecordIODataset

        return RecordIODataset(data.path, image_size=image_size, skip_bad=data.skip_bad)
    raise ValueError(f"data.kind must be synthetic, imagefolder or recordio, got {data.kind!r}")


def build_eval_set(spec: EvalSet, image_size: int, lookalike_share: float = DataSection.lookalike_share) -> EvalData:
    """The images and verification pairs of one eval set (the trainer's sets, and ``nptface eval``)."""
    name, seed = spec.name or spec.kind, spec.seed
    if spec.kind == "synthetic":
        dataset = materialize(
            SyntheticFaceDataset(
                HELDOUT_IDS[: spec.identities], spec.images_per_identity, spec.domain, seed, image_size, lookalike_share
            ),
            progress=False,
        )
        return EvalData(name, dataset, _generated_pairs(spec, dataset.labels, seed))
    if spec.kind == "bin":
        from nptface.core.verification_bin import load_verification_bin

        dataset, pairs = load_verification_bin(spec.path, image_size=image_size)
        return EvalData(spec.name or Path(spec.path).stem, dataset, pairs)
    if spec.kind not in ("imagefolder", "lfw"):
        raise ValueError(f"eval set kind must be synthetic, imagefolder, bin or lfw, got {spec.kind!r}")
    folder = ImageFolderDataset(spec.path, image_size=image_size, skip_bad=spec.skip_bad)
    if folder.skipped:
        logger.warning("%s", folder.summary())
    if spec.kind == "lfw":
        from nptface.core.lfw_pairs import read_lfw_pairs

        return EvalData(name, folder, read_lfw_pairs(spec.pairs, folder))
    pairs = read_pairs_file(spec.pairs, folder) if spec.pairs else _generated_pairs(spec, folder.labels, seed)
    return EvalData(name, folder, pairs)


def _generated_pairs(spec: EvalSet, labels: np.ndarray, seed: int) -> Pairs:
    if spec.pair_protocol == "lfw":
        return lfw_style_pairs(labels, per_fold=spec.per_fold, seed=seed)
    if spec.pair_protocol == "all":
        return all_genuine_pairs(labels, seed=seed)
    raise ValueError(f"eval set pair_protocol must be all or lfw, got {spec.pair_protocol!r}")
