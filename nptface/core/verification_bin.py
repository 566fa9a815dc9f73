"""insightface verification ``.bin`` files (lfw.bin, cfp_fp.bin, agedb_30.bin), read without running them.

Such a file is a pickle of ``(bins, issame_list)``: ``bins`` holds ``2 * P`` encoded images, image
``2i`` and ``2i + 1`` forming pair ``i``, and ``issame_list`` ``P`` booleans (insightface
``src/data/lfw2pack.py``). ``bins`` entries are ``bytes`` when the script read JPEG files from
disk, and numpy uint8 arrays when it stored ``cv2.imencode`` output (``src/data/cfp2pack.py``);
the older files were written by Python 2, whose ``str`` loads as ``bytes`` only with
``encoding="bytes"`` (what insightface's ``load_bin`` falls back to). A pickle may call any
importable callable while it loads, and these files travel through download mirrors, so they are
read with an unpickler that resolves only the numpy names that rebuild an array
(``_reconstruct``, ``ndarray``, ``dtype``, ``_frombuffer``, ``scalar``, under both ``numpy.core``
and numpy 2's ``numpy._core``) and a latin-1-only ``_codecs.encode`` (how Python 3 protocol-2
pickles spell ``bytes``); any other global is refused before anything is called.
"""

from __future__ import annotations

import codecs
import io
import logging
import pickle
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nptface.core.datasets import InMemoryFaceDataset
from nptface.core.imagefolder import IMAGE_DECODE_ERRORS, checked_image_size
from nptface.core.pairs import Pairs
from nptface.core.recordio import decode_image_bytes, encode_image

try:  # numpy >= 2
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # numpy 1.x
    from numpy.core import multiarray as _multiarray  # type: ignore[no-redef]
    from numpy.core import numeric as _numeric  # type: ignore[no-redef]

logger = logging.getLogger(__name__)


class VerificationBinError(ValueError):
    """A verification ``.bin`` that is refused, unreadable, or not ``(bins, issame_list)``."""


def _latin1_encode(text: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    # Python 3 pickles bytes at protocol < 3 as _codecs.encode(text, "latin1"); nothing else.
    if encoding.replace("-", "").lower() not in ("latin1", "iso88591") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"_codecs.encode is admitted only for latin-1 text, got encoding {encoding!r}")
    return codecs.encode(text, "latin1", errors)


def _admitted_globals() -> dict[tuple[str, str], Callable[..., Any]]:
    admitted: dict[tuple[str, str], Callable[..., Any]] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }
    for package in ("numpy.core", "numpy._core"):
        admitted[(f"{package}.multiarray", "_reconstruct")] = _multiarray._reconstruct
        admitted[(f"{package}.multiarray", "scalar")] = _multiarray.scalar
        admitted[(f"{package}.numeric", "_frombuffer")] = _numeric._frombuffer
    return admitted


class _RefusedGlobal(pickle.UnpicklingError):
    def __init__(self, module: str, name: str) -> None:
        super().__init__(f"{module}.{name}")
        self.qualified_name = f"{module}.{name}"


class _VerificationBinUnpickler(pickle.Unpickler):
    """Resolves only :func:`_admitted_globals`; every other global raises before it is called."""

    _admitted = _admitted_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._admitted[(module, name)]
        except KeyError:
            raise _RefusedGlobal(module, name) from None


def _load_pickle(path: Path) -> Any:
    try:
        with path.open("rb") as file:
            return _VerificationBinUnpickler(file, encoding="bytes").load()
    except _RefusedGlobal as refused:
        raise VerificationBinError(
            f"{path}: refused: the pickle asks for {refused.qualified_name}, which a verification .bin never "
            "needs (it holds only bytes, lists, tuples, booleans and numpy arrays); nothing in the file was "
            "run. It is not an insightface .bin, or it has been tampered with"
        ) from None
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
        MemoryError,
    ) as error:
        raise VerificationBinError(
            f"{path}: not a readable pickle ({type(error).__name__}: {error}); expected an insightface "
            "verification .bin, a pickle of (bins, issame_list)"
        ) from error


def _as_image_bytes(entry: object, index: int, path: Path) -> bytes:
    if isinstance(entry, bytes | bytearray):
        return bytes(entry)
    if isinstance(entry, np.ndarray) and entry.dtype == np.uint8:
        return np.ascontiguousarray(entry).tobytes()
    raise VerificationBinError(
        f"{path}: bins[{index}] is a {type(entry).__name__}"
        f"{f' of {entry.dtype}' if isinstance(entry, np.ndarray) else ''}; expected encoded image bytes "
        "(bytes, or a uint8 numpy array as cv2.imencode returns)"
    )


def _as_issame(issame_list: object, path: Path) -> np.ndarray:
    if isinstance(issame_list, np.ndarray):
        values = issame_list.ravel().tolist() if issame_list.dtype.kind in "bui" else None
    elif isinstance(issame_list, list | tuple):
        values = [value.item() if isinstance(value, np.generic) else value for value in issame_list]
    else:
        values = None
    if values is None:
        raise VerificationBinError(
            f"{path}: issame_list is a {type(issame_list).__name__}; expected a list or array of booleans"
        )
    for position, value in enumerate(values):
        if not isinstance(value, bool | int) or value not in (0, 1):
            raise VerificationBinError(f"{path}: issame_list[{position}] is {value!r}; expected True or False")
    return np.asarray(values, dtype=bool)


def load_verification_bin(
    path: str | Path, image_size: int | tuple[int, int] = 112
) -> tuple[InMemoryFaceDataset, Pairs]:
    """Images of a verification ``.bin`` as a dataset, and pair ``i`` = images ``2i``, ``2i + 1``.

    The file has no identities, so each image is its own class (label = its index, class name =
    the index as text). Every image is decoded here, as insightface's ``load_bin`` does, so a
    broken one is reported with its index at load time rather than midway through an evaluation.
    """
    path = Path(path)
    size = checked_image_size(image_size)
    content = _load_pickle(path)
    if not isinstance(content, tuple | list) or len(content) != 2:
        shape = f"a {type(content).__name__}" + (
            f" of {len(content)} items" if isinstance(content, tuple | list) else ""
        )
        raise VerificationBinError(f"{path}: holds {shape}; expected the pair (bins, issame_list)")
    bins, issame_list = content
    if not isinstance(bins, list | tuple):
        raise VerificationBinError(f"{path}: bins is a {type(bins).__name__}; expected a list of encoded images")
    is_same = _as_issame(issame_list, path)
    if len(is_same) == 0 or len(bins) != 2 * len(is_same):
        raise VerificationBinError(
            f"{path}: {len(bins)} images for {len(is_same)} pairs; expected exactly 2 images per pair (and at least one pair)"
        )
    encoded = [_as_image_bytes(entry, index, path) for index, entry in enumerate(bins)]
    images = np.empty((len(bins), *((size, size) if isinstance(size, int) else size), 3), dtype=np.uint8)
    for index, data in enumerate(encoded):
        try:
            images[index] = decode_image_bytes(data, size)
        except IMAGE_DECODE_ERRORS as error:
            side = "first" if index % 2 == 0 else "second"
            raise VerificationBinError(
                f"{path}: bins[{index}] ({side} image of pair {index // 2}) is not a decodable JPEG/PNG/BMP image: "
                f"{type(error).__name__}: {error}"
            ) from error
    logger.info("%s: %d pairs (%d genuine) over %d images", path, len(is_same), int(is_same.sum()), len(bins))
    dataset = InMemoryFaceDataset(images, np.arange(len(bins), dtype=np.int64), [str(i) for i in range(len(bins))])
    first = np.arange(0, len(bins), 2, dtype=np.int64)
    return dataset, Pairs(first, first + 1, is_same)


def write_verification_bin(
    path: str | Path,
    images: Sequence[np.ndarray | bytes] | np.ndarray,
    issame: Sequence[bool] | np.ndarray,
    image_format: str = "png",
) -> Path:
    """Write ``(bins, issame_list)`` as insightface does: a list of encoded images (RGB arrays are
    encoded as ``image_format``, bytes kept as they are) and a list of bools; pickle protocol 4."""
    path = Path(path)
    issame_list = [bool(value) for value in issame]
    if len(images) != 2 * len(issame_list):
        raise ValueError(f"need 2 images per pair, got {len(images)} images for {len(issame_list)} pairs")
    bins = [image if isinstance(image, bytes) else encode_image(np.asarray(image), image_format) for image in images]
    buffer = io.BytesIO()
    pickle.dump((bins, issame_list), buffer, protocol=4)
    path.write_bytes(buffer.getvalue())
    return path
