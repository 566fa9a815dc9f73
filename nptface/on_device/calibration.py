"""Thresholds from the user's own faces: an operating point calibrated on a labelled folder.

A bundle ships thresholds calibrated on its export's evaluation set (synthetic faces, for the
quickstart), and a threshold moves with the population: on real faces the synthetic FAR=1e-3
threshold can reject everyone. :func:`calibrate` embeds a labelled ImageFolder with the model
verification runs (the same variant, runtime and image loading), scores every pair of images
(:func:`nptface.core.verification.all_pair_scores`) and takes the threshold at each FAR the bundle
already carries (:func:`nptface.core.verification.tar_at_far`). A FAR of ``f`` is observable only
with at least ``1 / f`` impostor pairs (the rule the export's thresholds follow too), so a folder
with fewer is refused before any image is embedded, with the number of identities it would take.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from nptface.core.imagefolder import ImageFolderDataset
from nptface.core.verification import all_pair_scores, tar_at_far
from nptface.edge_export.bundle import sha256_file
from nptface.on_device.runtime import DeviceModel

BATCH = 64  # images embedded at once: bounds memory on large folders


class CalibrationError(ValueError):
    """A folder that cannot calibrate the asked FARs: too few identities, images or pairs."""


def pair_counts(labels: Sequence[int]) -> tuple[int, int]:
    """(genuine, impostor) pairs among all unordered pairs of images with these identity labels."""
    sizes = np.bincount(np.asarray(labels, np.int64)).astype(np.int64)
    total = int(sizes.sum())
    genuine = int((sizes * (sizes - 1) // 2).sum())
    return genuine, total * (total - 1) // 2 - genuine


def identities_needed(impostor_pairs: int, images_per_identity: float) -> int:
    """Fewest identities of ``images_per_identity`` images each giving ``impostor_pairs`` impostor pairs.

    ``n`` identities of ``k`` images give ``k^2 n (n - 1) / 2`` impostor pairs.
    """
    k2 = images_per_identity**2
    n = math.ceil((1 + math.sqrt(1 + 8 * impostor_pairs / k2)) / 2)
    while k2 * n * (n - 1) / 2 < impostor_pairs:
        n += 1
    return max(n, 2)


def impostors_needed(far: float) -> int:
    # Rounding first keeps 1 / 1e-4 from becoming 10001 through float noise.
    return math.ceil(round(1.0 / far, 9))


def folder_sha256(root: Path, paths: Sequence[Path]) -> str:
    """One hash of the calibration images: their paths under ``root`` and their contents."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(f"{path.relative_to(root).as_posix()}\0{sha256_file(path)}\n".encode())
    return digest.hexdigest()


def check_support(labels: np.ndarray, fars: Sequence[float], where: str) -> tuple[int, int]:
    """(genuine, impostor) pair counts, or a :class:`CalibrationError` saying what the folder lacks."""
    genuine, impostor = pair_counts(labels)
    identities = len(np.unique(labels))
    per_identity = len(labels) / identities
    if genuine == 0:
        raise CalibrationError(f"{where}: every identity has one image; calibration needs >= 2 images of a person")
    for far in sorted(fars):
        needed = impostors_needed(far)
        if impostor < needed:
            raise CalibrationError(
                f"{where}: FAR={far:.0e} needs at least {needed} impostor pairs (images of two different "
                f"people); {identities} identities with {per_identity:.1f} images each on average give {impostor}. "
                f"About {identities_needed(needed, per_identity)} identities of {per_identity:.1f} images would do, "
                f"or calibrate only the larger FARs (--fars)"
            )
    return genuine, impostor


def calibrate(model: DeviceModel, data: str | Path, fars: Sequence[float] | None = None) -> dict[str, Any]:
    """The operating point (a manifest entry) of ``model`` on the labelled ImageFolder ``data``.

    ``fars`` default to the FARs of the bundle's own thresholds.
    """
    folder = ImageFolderDataset(data, model.bundle.input_size)
    fars = sorted(fars if fars is not None else (float(key) for key in model.bundle.manifest["thresholds"]["cosine"]))
    genuine, impostor = check_support(folder.labels, fars, str(folder.root))
    paths = [path for path, _ in folder.samples]
    embeddings = np.concatenate([model.embed_files(paths[i : i + BATCH]) for i in range(0, len(paths), BATCH)])
    scores, same = all_pair_scores(embeddings, folder.labels)
    points = tar_at_far(scores, same, fars)
    return {
        "cosine": {f"{far:.0e}": float(points[far].threshold) for far in fars},
        "tar": {f"{far:.0e}": float(points[far].tar) for far in fars},
        "identities": int(folder.num_classes),
        "images": len(paths),
        "pairs": {"genuine": genuine, "impostor": impostor},
        "data": str(folder.root.resolve()),
        "data_sha256": folder_sha256(folder.root, paths),
        "checkpoint_sha256": model.model_sha256,
        "variant": model.variant,
        "runtime": model.runtime,
        "created": datetime.now(UTC).isoformat(),
        "protocol": "every pair of images of the folder; threshold = the smallest cosine whose false-accept "
        "rate on its impostor pairs is <= FAR",
    }
