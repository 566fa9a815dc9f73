"""A real SuperNode's own images: the ImageFolder its node config names, split into train and held-out.

In simulation every node computes its share of one partition plan from the settings the server
sends. A real device holds its own photos instead, so a SuperNode started with
``--node-config "partition-id=17 data-path=/data/phone-17"`` trains on ``/data/phone-17/<identity>/<image>``
(one sub-folder per person; a phone may hold only its owner), read and checked like any
ImageFolder (:class:`~nptface.core.imagefolder.ImageFolderDataset`). As in a partition plan, the
last ``eval-images`` files of an identity (in name order) are held out for the node's local
evaluation, unless that would leave fewer than two to train on: a phone with three selfies
trains on all three. Identity ids are the folder names prefixed with the node's partition
(``partition-17/owner``): folder names are local to a device, bank rows are global, and two phones
that both call their owner "owner" must not claim the same row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from nptface.core.imagefolder import BadImageError, ImageFolderDataset, ImageFolderError

DATA_PATH = "data-path"  # node-config key: this node's own ImageFolder
MIN_TRAIN_IMAGES = 2  # BatchNorm cannot train on a single image


class NodeDataError(ValueError):
    """The folder a node config names cannot serve as this node's data (names the key and the path)."""


class NodeImages(Dataset):
    """Chosen images of a node's folder, under the dataset contract (``labels``, ``class_names``, ``num_classes``)."""

    def __init__(self, folder: ImageFolderDataset, indices: Sequence[int], class_names: list[str]) -> None:
        self.folder = folder
        self.indices = np.asarray(indices, dtype=np.int64)
        self.labels: np.ndarray = folder.labels[self.indices]
        self.class_names = class_names
        self.num_classes = len(class_names)

    def __len__(self) -> int:
        return int(self.indices.size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        return self.folder[int(self.indices[index])]


def data_path(node_config: Mapping[str, Any]) -> Path | None:
    """The node's own ImageFolder, or None when the node serves a partition of the plan."""
    if DATA_PATH not in node_config:
        return None
    value = str(node_config[DATA_PATH]).strip()
    if not value:
        raise NodeDataError(f"node config {DATA_PATH!r} is empty; expected the path of this node's ImageFolder")
    return Path(value)


def node_datasets(
    path: Path, partition: int, image_size: int, eval_images: int
) -> tuple[NodeImages, NodeImages | None]:
    """``(train, held_out)`` of the node's folder; held_out is None when nothing is held out."""
    try:
        folder = ImageFolderDataset(path, image_size, min_identities=1)
    except (ImageFolderError, BadImageError) as error:
        raise NodeDataError(f"node config {DATA_PATH}={path}: {error}") from None
    names = [f"partition-{partition}/{name}" for name in folder.class_names]
    train, held_out = [], []
    for label in range(folder.num_classes):
        indices = np.flatnonzero(folder.labels == label).tolist()
        cut = len(indices) - eval_images if len(indices) - eval_images >= MIN_TRAIN_IMAGES else len(indices)
        train.extend(indices[:cut])
        held_out.extend(indices[cut:])
    if len(train) < MIN_TRAIN_IMAGES:
        raise NodeDataError(
            f"node config {DATA_PATH}={path}: {len(train)} image(s); expected at least {MIN_TRAIN_IMAGES} to train on"
        )
    return NodeImages(folder, train, names), (NodeImages(folder, held_out, names) if held_out else None)
