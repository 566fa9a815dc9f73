"""An evaluation set of photos turned into one of aligned crops, for ``nptface eval --align``.

A folder of raw photos is judged the way a device would see it: every image goes through
:func:`nptface.on_device.face_crops.crop_folder` (the one path from photos to crops, the same as
``nptface data align``) into a working folder, and the eval set's pairs, drawn or read on the
photos' own names, are carried over to the crops. A photo with no face is left out together with
every pair that uses it, and reported, rather than scored as a failed match: the number then
describes the model on the faces the detector found, and the report says how many it did not.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nptface.core.imagefolder import ImageFolderDataset
from nptface.core.pairs import Pairs
from nptface.on_device.face_crops import FaceCropper, FolderReport, crop_folder
from nptface.on_device.face_detection import NAME as DETECTOR_NAME

SHOWN_NAMES = 5  # photos without a face named in the printed line (the metrics JSON names them all)


class NoFacesError(ValueError):
    """Not one photo of an eval folder holds a face the detector finds."""


@dataclass(frozen=True, eq=False)
class AlignedEvalSet:
    """The crops of an eval folder's photos, the pairs among them, and what was left out."""

    dataset: ImageFolderDataset
    pairs: Pairs
    photos: ImageFolderDataset
    report: FolderReport
    pairs_dropped: int

    def _no_face_names(self) -> list[str]:
        return [path.relative_to(self.photos.root).as_posix() for path in self.report.no_face]

    def summary_line(self) -> str:
        several = len(self.report.several_faces)
        head = f"aligned ({DETECTOR_NAME}, largest face{f' of {several} photos with several' if several else ''})"
        names = self._no_face_names()
        if not names:
            return f"{head}: all {len(self.photos)} photos"
        more = f", ... ({len(names) - SHOWN_NAMES} more)" if len(names) > SHOWN_NAMES else ""
        return (
            f"{head}: {self.report.written} of {len(self.photos)} photos; {len(names)} without a face left out, "
            f"with the {self.pairs_dropped} pairs that used them: {', '.join(names[:SHOWN_NAMES])}{more}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "detector": DETECTOR_NAME,
            "photos": len(self.photos),
            "aligned": self.report.written,
            "no_face_count": len(self.report.no_face),
            "no_face": self._no_face_names(),
            "several_faces_count": len(self.report.several_faces),
            "pairs_kept": len(self.pairs),
            "pairs_dropped": self.pairs_dropped,
        }


def align_eval_set(
    photos: ImageFolderDataset, pairs: Pairs, cropper: FaceCropper, workdir: str | Path
) -> AlignedEvalSet:
    """Crop every photo of ``photos`` into ``workdir`` and map ``pairs`` onto the crops.

    Raises :class:`NoFacesError` naming the folder when no photo holds a face, and when no pair
    is left between photos that do.
    """
    report = crop_folder(photos.root, workdir, cropper, photos=[path for path, _ in photos.samples])
    if not report.written:
        raise NoFacesError(f"{photos.root}: no face found in any of its {len(photos)} photos")
    crops = ImageFolderDataset(workdir, image_size=photos.image_size, min_identities=1)
    index_of_crop = {path: index for index, (path, _) in enumerate(crops.samples)}
    new_index = np.array([index_of_crop.get(report.crops.get(path), -1) for path, _ in photos.samples])
    kept = pairs.reindexed(new_index)
    if not len(kept):
        raise NoFacesError(
            f"{photos.root}: every one of its {len(pairs)} pairs uses a photo without a face "
            f"({len(report.no_face)} of {len(photos)} photos)"
        )
    return AlignedEvalSet(crops, kept, photos, report, len(pairs) - len(kept))
