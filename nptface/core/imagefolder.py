"""Face images stored as one folder per identity, checked up front and served as uint8 RGB.

The usual layout of face data sets (ORL, LFW, CASIA-WebFace crops) is ``root/<identity>/<image>``.
This module turns such a tree into a dataset following the ``nptface.core`` contract: items are
``(image, label)`` with ``image`` an (H, W, 3) uint8 array prepared by
:func:`nptface.core.preprocess.to_rgb_array` and ``label`` an int, plus ``num_classes``,
``labels`` (so samplers and pair generators never decode an image) and ``class_names``.
Every image file is checked cheaply at construction (non-empty, header and ``PIL`` ``verify()``),
because a broken file found hours into training, or silently counted as a sample, costs far more
than one pass over the headers; ``skip_bad=True`` turns those failures into a listed report.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from nptface.core.image_policy import LIMITS, ImageInputError, ImageLimits
from nptface.core.pairs import Pairs
from nptface.core.preprocess import UnsupportedImageModeError, check_image_mode, to_rgb_array

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".pgm", ".ppm", ".bmp", ".webp")

# What PIL raises for files it cannot identify, parse or decode (UnidentifiedImageError and
# "image file is truncated" are OSErrors; broken PNG chunks raise SyntaxError or struct.error).
IMAGE_DECODE_ERRORS = (OSError, SyntaxError, ValueError, struct.error, Image.DecompressionBombError)


class BadImageError(ValueError):
    """A file with an image extension that is empty or cannot be decoded."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path} is not a decodable image (JPEG/PNG/PGM/PPM/BMP/WebP): {reason}")


class ImageFolderError(ValueError):
    """The folder tree does not have the one-folder-per-identity layout that was expected."""


def check_image_file(path: Path, limits: ImageLimits = LIMITS) -> None:
    """Raise :class:`BadImageError` unless ``path`` is non-empty, passes ``PIL`` ``verify()`` and
    has a size and pixel mode the one image policy accepts (:mod:`nptface.core.image_policy`).

    This reads headers (and, for PNG, chunk checksums) only; a file whose pixel data is cut short
    can pass and then fail when it is loaded.
    """
    size = path.stat().st_size
    if size == 0:
        raise BadImageError(path, "the file is empty (0 bytes)")
    if size > limits.max_bytes:
        raise BadImageError(path, f"{size} bytes; expected at most {limits.max_bytes} bytes")
    try:
        with Image.open(path) as image:
            limits.check(*image.size, "the image")
            check_image_mode(image.mode)
            image.verify()
    except (ImageInputError, UnsupportedImageModeError) as error:
        raise BadImageError(path, str(error)) from error
    except IMAGE_DECODE_ERRORS as error:
        raise BadImageError(path, f"{type(error).__name__}: {error}") from error


def load_image(path: Path, size: int | tuple[int, int]) -> np.ndarray:
    """Decode ``path`` into an RGB uint8 array of ``size``; raise :class:`BadImageError` if it cannot."""
    try:
        with Image.open(path) as image:
            image.load()
            return to_rgb_array(image, size)
    except IMAGE_DECODE_ERRORS as error:
        raise BadImageError(path, f"{type(error).__name__}: {error}") from error


def checked_image_size(image_size: int | tuple[int, int]) -> int | tuple[int, int]:
    if isinstance(image_size, int) and not isinstance(image_size, bool):
        if image_size > 0:
            return image_size
    elif (
        isinstance(image_size, tuple | list)
        and len(image_size) == 2
        and all(isinstance(side, int) and not isinstance(side, bool) and side > 0 for side in image_size)
    ):
        return (image_size[0], image_size[1])
    raise ValueError(
        f"image_size must be a positive int or a (height, width) pair of positive ints, got {image_size!r}"
    )


def _checked_extensions(extensions: Iterable[str]) -> frozenset[str]:
    normalised = frozenset(extension.lower() for extension in extensions)
    malformed = sorted(extension for extension in normalised if not extension.startswith(".") or len(extension) < 2)
    if not normalised or malformed:
        raise ValueError(
            f"extensions must be non-empty suffixes starting with '.', like '.jpg'; got {sorted(normalised)!r}"
        )
    return normalised


def _is_hidden(path: Path) -> bool:
    # Editor, OS and notebook droppings (.DS_Store, ._IMG_1.jpg, .ipynb_checkpoints) are not data.
    return path.name.startswith(".")


class ImageFolderDataset(Dataset):
    """Images under ``root/<identity>/``; identity folders sorted by name give labels 0..C-1.

    Files directly inside an identity folder whose suffix is in ``extensions`` (case-insensitive)
    are the samples, in sorted name order; other files, files and folders whose names start with
    ``.``, sub-folders of identity folders and files at the top of ``root`` (a README) are ignored.
    Every sample is checked at construction: an empty or undecodable file raises
    :class:`BadImageError`, or with ``skip_bad=True`` is left out and recorded in ``skipped``.
    A file that passes the check but fails to decode later raises :class:`BadImageError` from
    ``__getitem__`` whatever ``skip_bad`` says, since indices cannot shift at that point.
    ``min_identities`` is 2 for a data set to verify or train a classifier on; a phone's own
    folder in federated fine-tuning may hold only its owner (1).
    """

    def __init__(
        self,
        root: str | Path,
        image_size: int | tuple[int, int] = 112,
        skip_bad: bool = False,
        extensions: Iterable[str] = IMAGE_EXTENSIONS,
        min_identities: int = 2,
    ) -> None:
        self.root = Path(root)
        self.image_size = checked_image_size(image_size)
        self.skip_bad = skip_bad
        self.extensions = _checked_extensions(extensions)
        self.skipped: list[tuple[Path, str]] = []

        if not self.root.exists():
            raise ImageFolderError(f"image folder root {self.root} does not exist")
        if not self.root.is_dir():
            raise ImageFolderError(
                f"image folder root {self.root} is not a directory; expected a folder of identity folders"
            )

        identity_dirs = sorted(
            (entry for entry in self.root.iterdir() if entry.is_dir() and not _is_hidden(entry)),
            key=lambda entry: entry.name,
        )
        if len(identity_dirs) < min_identities:
            raise ImageFolderError(
                f"{self.root} holds {len(identity_dirs)} identity folder(s); expected at least {min_identities} "
                "(one sub-folder of images per identity)"
            )

        self.class_names: list[str] = [entry.name for entry in identity_dirs]
        self.samples: list[tuple[Path, int]] = []
        for label, identity_dir in enumerate(identity_dirs):
            self.samples.extend((path, label) for path in self._usable_images(identity_dir))
        self.labels: np.ndarray = np.fromiter(
            (label for _, label in self.samples), dtype=np.int64, count=len(self.samples)
        )
        self.num_classes: int = len(self.class_names)
        logger.info("%s", self.summary())

    def _usable_images(self, identity_dir: Path) -> list[Path]:
        candidates = sorted(
            entry
            for entry in identity_dir.iterdir()
            if entry.suffix.lower() in self.extensions and entry.is_file() and not _is_hidden(entry)
        )
        usable = []
        for path in candidates:
            try:
                check_image_file(path)
            except BadImageError as error:
                if not self.skip_bad:
                    raise
                logger.warning("skipping %s", error)
                self.skipped.append((path, error.reason))
                continue
            usable.append(path)
        if not usable:
            bad = len(candidates)
            detail = (
                f"all {bad} image files are bad (skipped)"
                if bad
                else f"no files with extensions {sorted(self.extensions)}"
            )
            raise ImageFolderError(f"empty identity folder {identity_dir}: {detail}; expected at least one image")
        return usable

    @property
    def names(self) -> list[str]:
        """Each sample's path under the root, ``identity/file`` with forward slashes (as pairs files name them)."""
        return [path.relative_to(self.root).as_posix() for path, _ in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        path, label = self.samples[index]
        return load_image(path, self.image_size), label

    def summary(self) -> str:
        """One line on what was loaded, plus one line per skipped file."""
        lines = [
            f"{self.root}: {len(self.samples)} images of {self.num_classes} identities, "
            f"{len(self.skipped)} bad files skipped"
        ]
        lines.extend(f"  skipped {path}: {reason}" for path, reason in self.skipped)
        return "\n".join(lines)


class PairsFileError(ValueError):
    """A verification pairs file with a malformed line or a path outside its ImageFolder."""


def read_pairs_file(path: str | Path, dataset: ImageFolderDataset) -> Pairs:
    """Pairs from lines ``path_a path_b 1|0`` (paths relative to the dataset root; 1 = same person).

    Blank lines and lines starting with ``#`` are ignored. Every error names the file and line.
    """
    path = Path(path)
    index = {name: i for i, name in enumerate(dataset.names)}
    index_a, index_b, is_same = [], [], []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split()
        if len(fields) != 3 or fields[2] not in ("0", "1"):
            raise PairsFileError(f"{path}:{number}: expected 'path_a path_b 1|0', got {line.strip()!r}")
        for name in fields[:2]:
            if name not in index:
                raise PairsFileError(f"{path}:{number}: {name!r} is not an image of {dataset.root}")
        index_a.append(index[fields[0]])
        index_b.append(index[fields[1]])
        is_same.append(fields[2] == "1")
    if not index_a:
        raise PairsFileError(f"{path}: no pairs found")
    return Pairs(np.array(index_a), np.array(index_b), np.array(is_same))
