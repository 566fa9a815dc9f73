"""Datasets of face images under one contract, plus the ways to materialise and look at them.

Every nptface dataset is a ``torch.utils.data.Dataset`` whose items are ``(image, label)`` with
``image`` a ``(H, W, 3)`` uint8 RGB array and ``label`` an int, and which exposes ``labels``
(every item's label, so pair generation and sampling never decode an image), ``num_classes`` and
``class_names``; a dataset of files also names each image (``names``, its path under the root).
Normalisation happens once per batch (:func:`nptface.core.preprocess.normalize`).

:class:`SyntheticFaceDataset` renders on the fly from :mod:`nptface.core.synthetic` (any worker
renders the same pixels); :class:`InMemoryFaceDataset` is the one in-memory container: decoded
images in one array with their labels, a name per image and where they came from. Short CPU runs
train from it for several epochs without re-rendering, federated evaluation reuses it, and the
export judges every variant on one, whose :meth:`~InMemoryFaceDataset.content_hash` ties a
bundle's reference embeddings to the very pixels they were computed on.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset
from tqdm import tqdm

from nptface.core.atomic import atomic_write_bytes
from nptface.core.synthetic import IMAGE_SIZE, Domain, FaceRenderer, get_domain

logger = logging.getLogger(__name__)


class SyntheticFaceDataset(Dataset):
    """``images_per_identity`` renders of each of ``identities``; label = position in that list."""

    def __init__(
        self,
        identities: Sequence[int],
        images_per_identity: int,
        domain: Domain | str = "wild",
        seed: int = 0,
        image_size: int = IMAGE_SIZE,
        lookalike_share: float = 0.3,
        first_index: int = 0,
    ) -> None:
        self.identities = [int(i) for i in identities]
        if len(set(self.identities)) != len(self.identities):
            raise ValueError("identities must be distinct")
        if len(self.identities) < 2:
            raise ValueError(f"a synthetic dataset needs >= 2 identities, got {len(self.identities)}")
        if images_per_identity < 1:
            raise ValueError(f"images_per_identity must be >= 1, got {images_per_identity}")
        self.images_per_identity = images_per_identity
        self.first_index = first_index
        self.domain = get_domain(domain) if isinstance(domain, str) else domain
        self.renderer = FaceRenderer(image_size, seed, lookalike_share)
        self.num_classes = len(self.identities)
        self.labels = np.repeat(np.arange(self.num_classes, dtype=np.int64), images_per_identity)
        self.class_names = [f"synth-{identity:07d}" for identity in self.identities]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        label, image_index = divmod(index, self.images_per_identity)
        image = self.renderer.render(self.identities[label], self.first_index + image_index, self.domain)
        return image, label


class InMemoryFaceDataset(Dataset):
    """Decoded images ``(N, H, W, 3)`` uint8 with their labels, class names and a name per image.

    ``names`` default to ``<class name>/<index>``; ``source`` says where the images came from,
    for messages and reports.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        class_names: Sequence[str],
        names: Sequence[str] | None = None,
        source: str = "images in memory",
    ) -> None:
        if images.ndim != 4 or images.shape[3] != 3 or images.dtype != np.uint8:
            raise ValueError(f"{source}: images must be a uint8 (N, H, W, 3) array, got {images.dtype} {images.shape}")
        if len(labels) != len(images):
            raise ValueError(f"{source}: labels has {len(labels)} entries for {len(images)} images")
        self.images = images
        self.labels = np.asarray(labels, dtype=np.int64)
        self.class_names = list(class_names)
        self.num_classes = len(self.class_names)
        self.source = source
        if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= self.num_classes):
            raise ValueError(f"{source}: labels must lie in [0, {self.num_classes - 1}] (one per class name)")
        self.names = (
            list(names)
            if names is not None
            else [f"{self.class_names[label]}/{i:06d}" for i, label in enumerate(self.labels)]
        )
        if len(self.names) != len(images):
            raise ValueError(f"{source}: {len(self.names)} names for {len(images)} images")

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        return self.images[index], int(self.labels[index])

    def content_hash(self) -> str:
        """sha256 over names, labels and pixels: equal hashes mean the very same images."""
        digest = hashlib.sha256()
        for name in self.names:
            digest.update(name.encode() + b"\0")
        digest.update(np.ascontiguousarray(self.labels, dtype=np.int64).tobytes())
        digest.update(np.ascontiguousarray(self.images).tobytes())
        return digest.hexdigest()


def materialize(
    dataset: Dataset,
    description: str = "rendering",
    progress: bool = True,
    *,
    limit: int | None = None,
    source: str = "images in memory",
) -> InMemoryFaceDataset:
    """Decode or render every item (or the first ``limit``) of a dataset once into memory."""
    n = len(dataset) if limit is None else min(limit, len(dataset))
    first, _ = dataset[0]
    images = np.empty((n, *first.shape), dtype=np.uint8)
    for i in tqdm(range(n), desc=description, unit="img", disable=not progress, leave=False):
        images[i] = dataset[i][0]
    names = getattr(dataset, "names", None)
    return InMemoryFaceDataset(
        images, np.asarray(dataset.labels)[:n], dataset.class_names, None if names is None else names[:n], source
    )


def write_image_folder(dataset: Dataset, root: str | Path, image_format: str = "png", progress: bool = True) -> Path:
    """Write a dataset as an ImageFolder (one sub-folder per class); each file lands atomically.

    Each file is written under a hidden temporary name and renamed (:mod:`nptface.core.atomic`),
    so an interrupted run never leaves a truncated image behind that a later reader trips over.
    """
    root = Path(root)
    extension = {"png": ".png", "jpeg": ".jpg", "jpg": ".jpg"}.get(image_format.lower())
    if extension is None:
        raise ValueError(f"image_format must be 'png' or 'jpeg', got {image_format!r}")
    counts: dict[int, int] = {}
    for i in tqdm(range(len(dataset)), desc=f"writing {root}", unit="img", disable=not progress, leave=False):
        image, label = dataset[i]
        folder = root / dataset.class_names[label]
        folder.mkdir(parents=True, exist_ok=True)
        number = counts.get(label, 0)
        counts[label] = number + 1
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG" if extension == ".png" else "JPEG", quality=95)
        atomic_write_bytes(folder / f"{number:05d}{extension}", buffer.getvalue())
    logger.info("wrote %d images of %d identities to %s", len(dataset), len(counts), root)
    return root


def preview_grid(dataset: Dataset, identities: int = 8, per_identity: int = 8) -> Image.Image:
    """A grid image: one row per class (the first ``identities``), ``per_identity`` images each."""
    labels = np.asarray(dataset.labels)
    rows = []
    for label in range(min(identities, dataset.num_classes)):
        indices = np.flatnonzero(labels == label)[:per_identity]
        row = [dataset[int(i)][0] for i in indices]
        blank = np.zeros_like(row[0])
        rows.append(np.concatenate(row + [blank] * (per_identity - len(row)), axis=1))
    return Image.fromarray(np.concatenate(rows, axis=0))
