"""From photos to aligned face crops: detect, take the largest face, warp it onto the template.

Every entry point that takes photos (``nptface data align``, the device commands) goes through
:class:`FaceCropper`, so a photo is cropped one way everywhere. The policy for odd inputs: no face
is reported by name (:class:`NoFaceError` for one photo, a listed skip for a folder); several
faces give the largest one, with a note, unless every face is asked for (``identify --all-faces``).
A folder keeps its tree: ``SRC/person/x.jpg`` becomes ``DST/person/x.png`` (PNG, so the crop is
not degraded a second time).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from nptface.core.alignment import align_face
from nptface.core.imagefolder import IMAGE_EXTENSIONS
from nptface.on_device.face_detection import Face, FaceDetector
from nptface.on_device.images import load_photo

logger = logging.getLogger(__name__)

ALIGNED_SIZE = 112


class NoFaceError(ValueError):
    """A photo in which the detector finds no face."""


@dataclass(frozen=True)
class FaceCrop:
    """The aligned crop of one face (the largest, unless every face was asked for), the face, and the photo's count."""

    image: Image.Image
    face: Face
    faces_found: int


class FaceCropper:
    """Detect faces with ``detector`` and align the largest one to a ``size`` x ``size`` crop."""

    def __init__(self, detector: FaceDetector, size: int = ALIGNED_SIZE) -> None:
        self.detector = detector
        self.size = size

    def crop(self, photo: Image.Image) -> FaceCrop | None:
        """The crop of the largest face, or ``None`` when there is none."""
        faces = self.detector.detect(photo)
        return self._aligned(photo, faces[0], len(faces)) if faces else None

    def crop_all(self, photo: Image.Image) -> list[FaceCrop]:
        """The crop of every face, largest first."""
        faces = self.detector.detect(photo)
        return [self._aligned(photo, face, len(faces)) for face in faces]

    def _aligned(self, photo: Image.Image, face: Face, faces_found: int) -> FaceCrop:
        aligned, _ = align_face(photo, face.alignment_points, self.size, mouth="centre")
        return FaceCrop(aligned, face, faces_found)

    def crop_file(self, path: str | Path) -> FaceCrop:
        """The crop of the photo at ``path``; several faces are logged, none raises naming the file."""
        found = self.crop(load_photo(path))
        if found is None:
            raise _no_face(path)
        if found.faces_found > 1:
            logger.warning("%s: %d faces found; using the largest", path, found.faces_found)
        return found

    def crop_file_all(self, path: str | Path) -> list[FaceCrop]:
        """The crops of every face in the photo at ``path``, largest first; none raises naming the file."""
        found = self.crop_all(load_photo(path))
        if not found:
            raise _no_face(path)
        return found


def _no_face(path: str | Path) -> NoFaceError:
    return NoFaceError(f"{path}: no face found (the detector needs a face at least ~5% of the photo's width)")


@dataclass
class FolderReport:
    """What ``crop_folder`` did: the crop written for each photo, and the photos with no face or several faces."""

    crops: dict[Path, Path] = field(default_factory=dict)
    no_face: list[Path] = field(default_factory=list)
    several_faces: list[tuple[Path, int]] = field(default_factory=list)

    @property
    def written(self) -> int:
        return len(self.crops)

    def summary(self) -> str:
        lines = [f"{self.written} aligned crops written; {len(self.no_face)} photos without a face skipped"]
        lines += [f"  no face: {path}" for path in self.no_face]
        lines += [f"  {count} faces, largest taken: {path}" for path, count in self.several_faces]
        return "\n".join(lines)


def crop_folder(
    src: str | Path, dst: str | Path, cropper: FaceCropper, photos: Sequence[Path] | None = None
) -> FolderReport:
    """Write the aligned crop of every image under ``src`` to the same place under ``dst`` (as PNG).

    ``photos``: the images under ``src`` to crop (an eval set's own files), instead of every image
    file found there. An unreadable image stops the run with an error naming it: a folder of faces
    with a broken file in it is a mistake worth fixing, not a photo without a face. Two photos that
    would share one crop (``x.jpg`` and ``x.png``) are refused by name too.
    """
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: no such folder; expected a folder of photos (one sub-folder per person)")
    if dst.resolve() == src.resolve() or dst.resolve().is_relative_to(src.resolve()):
        raise ValueError(f"{dst}: the output folder must lie outside the source folder {src}")
    if photos is None:
        files = sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    else:
        files = list(photos)
    if not files:
        raise FileNotFoundError(f"{src}: no images ({', '.join(IMAGE_EXTENSIONS)}) found")
    report = FolderReport()
    source_of: dict[Path, Path] = {}  # crop -> photo
    for path in files:
        found = cropper.crop(load_photo(path))
        if found is None:
            report.no_face.append(path)
            continue
        if found.faces_found > 1:
            report.several_faces.append((path, found.faces_found))
        target = (dst / path.relative_to(src)).with_suffix(".png")
        if target in source_of:
            raise ValueError(f"{source_of[target]} and {path} would both be cropped to {target}; rename one")
        source_of[target] = path
        target.parent.mkdir(parents=True, exist_ok=True)
        found.image.save(target)
        report.crops[path] = target
    return report
