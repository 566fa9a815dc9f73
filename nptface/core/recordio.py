"""insightface RecordIO packs (``train.rec`` + ``train.idx`` + ``property``), read and written without mxnet.

CASIA-WebFace, MS1MV2 (faces_emore) and Glint360K are distributed by insightface as mxnet RecordIO
packs; mxnet itself is unmaintained and has no wheels for current Pythons, so this module speaks the
format with ``struct`` and ``os.pread``. The ``.rec`` file is a run of frames (dmlc-core
``recordio.h``): a little-endian uint32 magic ``0xced7230a``, a uint32 ``lrecord`` whose upper 3 bits
are ``cflag`` and lower 29 bits a length, that many bytes, zero padding to a multiple of 4. A record
whose bytes contain the magic at a 4-byte-aligned position is split there into parts with cflag 1
(first), 2 (middle), 3 (last), the magic itself dropped and restored on reading. Each record is an
mxnet ``IRHeader`` (``IfQQ``: flag, label, id, id2; 24 bytes), then, when ``flag > 0``, ``flag``
float32 labels (the header's own label field is then 0), then the encoded image. The ``.idx`` text
file maps ``key<TAB>byte offset`` for random access. insightface's ``face2rec2.py`` layout stores
the images at keys ``1..N`` grouped by identity, then record 0 (no image, ``flag > 0``, labels
``(N + 1, N + 1 + C)``: the key range of the identity records), then one record per identity
(labels ``(first image key, end key)``); ``property`` reads ``num_classes,height,width``. Packs from
mxnet's plain ``im2rec`` hold only image records. :class:`RecordIODataset` serves either layout
under the ``nptface.core`` contract; its ``labels`` come from record headers alone, because a
sampler must never decode millions of JPEGs to learn who is who.
"""

from __future__ import annotations

import io
import logging
import math
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from nptface.core.imagefolder import IMAGE_DECODE_ERRORS, BadImageError, checked_image_size
from nptface.core.preprocess import to_rgb_array

logger = logging.getLogger(__name__)

RECORD_MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", RECORD_MAGIC)
_FRAME = struct.Struct("<II")  # magic, lrecord
_LENGTH_BITS = 29
_MAX_LENGTH = (1 << _LENGTH_BITS) - 1
# mxnet's IRHeader: flag (uint32), label (float32), id (uint64), id2 (uint64).
HEADER = struct.Struct("<IfQQ")
# Read per image when scanning: frame, header, two float32 labels, the payload's first 8 bytes.
_SCAN_BYTES = _FRAME.size + HEADER.size + 2 * 4 + 8
# Formats OpenCV's imencode (what insightface packs with) produces and Pillow decodes; other
# Pillow parsers stay unreachable from a downloaded pack.
IMAGE_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "BMP")
_SIGNATURES: tuple[bytes, ...] = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"BM")
# What decoding encoded image bytes can raise (the same set ImageFolderDataset catches).


class RecordIOError(ValueError):
    """A ``.rec``, ``.idx`` or ``property`` file that does not hold what the format promises."""


class RecordImageError(RecordIOError, BadImageError):
    """An image record whose payload cannot be decoded.

    Constructible from the message alone, so a DataLoader worker re-raises it under its own type.
    """

    def __init__(
        self,
        message: str,
        path: Path | None = None,
        key: int | None = None,
        offset: int | None = None,
        reason: str = "",
    ) -> None:
        ValueError.__init__(self, message)
        self.path = path
        self.key = key
        self.offset = offset
        self.reason = reason or message

    @classmethod
    def for_record(cls, rec_path: Path, key: int, offset: int, reason: str) -> RecordImageError:
        return cls(
            f"{rec_path}: record key {key} (byte offset {offset}) is not a decodable image "
            f"({'/'.join(IMAGE_FORMATS)}): {reason}",
            rec_path,
            key,
            offset,
            reason,
        )


@dataclass(frozen=True)
class RecordHeader:
    """mxnet's ``IRHeader``: ``flag == 0`` keeps one label in ``label``; ``flag == n > 0`` means
    ``n`` float32 labels followed the header, and ``label`` is their tuple."""

    flag: int
    label: float | tuple[float, ...]
    id: int
    id2: int = 0

    @property
    def first_label(self) -> float:
        """The class label as insightface reads it: ``label``, or ``label[0]`` when ``flag > 0``."""
        return self.label[0] if isinstance(self.label, tuple) else self.label


@dataclass(frozen=True)
class PackProperty:
    """The one line of insightface's ``property`` file: ``num_classes,height,width``."""

    num_classes: int
    height: int
    width: int


def pack_record(label: float | Sequence[float], payload: bytes, record_id: int = 0, id2: int = 0) -> bytes:
    """Header plus payload, as mxnet's ``recordio.pack``: a sequence label sets ``flag = len``."""
    if isinstance(label, int | float | np.number) and not isinstance(label, bool):
        return HEADER.pack(0, float(label), record_id, id2) + bytes(payload)
    labels = np.asarray(label, dtype="<f4").ravel()
    if labels.size == 0:
        raise ValueError("label must be a number or a non-empty sequence of numbers")
    return HEADER.pack(labels.size, 0.0, record_id, id2) + labels.tobytes() + bytes(payload)


def unpack_record(record: bytes, where: str = "record") -> tuple[RecordHeader, bytes]:
    """Split a record into its :class:`RecordHeader` and payload (mxnet's ``recordio.unpack``)."""
    if len(record) < HEADER.size:
        raise RecordIOError(f"{where}: {len(record)} bytes, shorter than the {HEADER.size}-byte IRHeader")
    flag, label, record_id, id2 = HEADER.unpack_from(record)
    if flag == 0:
        return RecordHeader(0, float(label), record_id, id2), record[HEADER.size :]
    end = HEADER.size + 4 * flag
    if end > len(record):
        raise RecordIOError(
            f"{where}: the header announces {flag} float32 labels ({4 * flag} bytes) but only "
            f"{len(record) - HEADER.size} bytes follow it"
        )
    labels = tuple(float(value) for value in np.frombuffer(record, dtype="<f4", count=flag, offset=HEADER.size))
    return RecordHeader(flag, labels, record_id, id2), record[end:]


def frame_record(record: bytes) -> bytes:
    """The bytes dmlc-core's ``RecordIOWriter::WriteRecord`` writes for one record."""
    if len(record) > _MAX_LENGTH:
        raise ValueError(f"a record holds at most {_MAX_LENGTH} bytes, got {len(record)}")
    cuts = []
    position = record.find(_MAGIC_BYTES)
    while position != -1:
        if position % 4 == 0:
            cuts.append(position)
            position = record.find(_MAGIC_BYTES, position + 4)
        else:
            position = record.find(_MAGIC_BYTES, position + 1)
    starts = [0] + [cut + 4 for cut in cuts]
    ends = cuts + [len(record)]
    framed = bytearray()
    for part, (start, end) in enumerate(zip(starts, ends)):
        if len(starts) == 1:
            cflag = 0
        else:
            cflag = 1 if part == 0 else 3 if part == len(starts) - 1 else 2
        length = end - start
        framed += _FRAME.pack(RECORD_MAGIC, (cflag << _LENGTH_BITS) | length)
        framed += record[start:end]
        framed += b"\0" * (-length % 4)
    return bytes(framed)


def encode_image(image: np.ndarray, image_format: str = "png", quality: int = 95) -> bytes:
    """Encode an (H, W, 3) uint8 RGB array as PNG or JPEG bytes."""
    formats = {"png": "PNG", "jpeg": "JPEG", "jpg": "JPEG"}
    if image_format.lower() not in formats:
        raise ValueError(f"image_format must be 'png' or 'jpeg', got {image_format!r}")
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be a uint8 (H, W, 3) array, got {image.dtype} {image.shape}")
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=formats[image_format.lower()], quality=quality)
    return buffer.getvalue()


def decode_image_bytes(data: bytes, size: int | tuple[int, int]) -> np.ndarray:
    """Decode JPEG/PNG/BMP bytes into an RGB uint8 array of ``size`` via :func:`to_rgb_array`.

    Raises one of :data:`IMAGE_DECODE_ERRORS` when ``data`` is not such an image.
    """
    with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as image:
        image.load()
        return to_rgb_array(image, size)


def read_property(path: str | Path) -> PackProperty:
    """Parse insightface's ``property`` file (one line, ``num_classes,height,width``)."""
    path = Path(path)
    lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    fields = lines[0].split(",") if len(lines) == 1 else []
    values = [int(field) for field in fields if field.strip().isdigit()]
    if len(fields) != 3 or len(values) != 3 or min(values) < 1:
        raise RecordIOError(
            f"{path}: expected one line 'num_classes,height,width' of positive integers "
            f"(like '85742,112,112'), got {path.read_text()[:200]!r}"
        )
    return PackProperty(*values)


def read_index(path: str | Path) -> dict[int, int]:
    """The ``.idx`` file as ``{key: byte offset}``, in the file's order."""
    path = Path(path)
    index: dict[int, int] = {}
    first_line: dict[int, int] = {}
    with path.open() as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            fields = line.split()
            try:
                key, offset = (int(field) for field in fields) if len(fields) == 2 else (None, None)
            except ValueError:
                key = offset = None
            if key is None or offset is None or key < 0 or offset < 0:
                raise RecordIOError(
                    f"{path}:{number}: expected 'key<TAB>offset' (two non-negative integers), got {line.rstrip()!r}"
                )
            if key in index:
                raise RecordIOError(f"{path}:{number}: key {key} appears again (first on line {first_line[key]})")
            index[key] = offset
            first_line[key] = number
    if not index:
        raise RecordIOError(f"{path}: the index is empty; expected one 'key<TAB>offset' line per record")
    return index


def _pread(descriptor: int, size: int, offset: int) -> bytes:
    chunks = []
    while size > 0:
        chunk = os.pread(descriptor, size, offset)
        if not chunk:
            break
        chunks.append(chunk)
        size -= len(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def _frame_at(data: bytes, position: int, file_size: int, first: bool, where: str, rec_path: Path) -> tuple[int, int]:
    """Validate the frame whose 8 bytes are ``data``; return (cflag, length)."""
    if len(data) < _FRAME.size:
        raise RecordIOError(
            f"{where}: {rec_path} ends at byte {file_size}, before the record frame at byte {position} "
            "(a truncated .rec, or an .idx that belongs to another pack)"
        )
    magic, lrecord = _FRAME.unpack(data[: _FRAME.size])
    if magic != RECORD_MAGIC:
        what = "no record starts there" if first else "the next part of a split record is missing"
        raise RecordIOError(
            f"{where}: expected the RecordIO magic 0x{RECORD_MAGIC:08x} at byte {position}, found 0x{magic:08x}: "
            f"{what} (the .idx does not match this .rec, or the .rec is corrupt)"
        )
    cflag, length = lrecord >> _LENGTH_BITS, lrecord & _MAX_LENGTH
    if cflag not in ((0, 1) if first else (2, 3)):
        expected = "0 (whole record) or 1 (first part)" if first else "2 or 3 (continuation)"
        raise RecordIOError(f"{where}: frame at byte {position} has cflag {cflag}, expected {expected}")
    if position + _FRAME.size + length > file_size:
        raise RecordIOError(
            f"{where}: the record runs to byte {position + _FRAME.size + length} but {rec_path} ends at byte "
            f"{file_size}: the .rec is truncated (an interrupted download or copy?)"
        )
    return cflag, length


def _read_record(descriptor: int, offset: int, file_size: int, where: str, rec_path: Path) -> bytes:
    """The whole record starting at ``offset``, split parts joined with their magic restored."""
    parts = []
    position = offset
    while True:
        cflag, length = _frame_at(
            _pread(descriptor, _FRAME.size, position), position, file_size, not parts, where, rec_path
        )
        parts.append(_pread(descriptor, length, position + _FRAME.size))
        position += _FRAME.size + length + (-length % 4)
        if cflag in (0, 3):
            return _MAGIC_BYTES.join(parts)


def _whole_number(value: float, what: str, where: str) -> int:
    if not math.isfinite(value) or value != int(value):
        raise RecordIOError(f"{where}: {what} is {value!r}, expected a whole number")
    return int(value)


def _pack_paths(prefix_or_dir: str | Path) -> tuple[Path, Path, Path]:
    path = Path(prefix_or_dir)
    if path.is_dir():
        return path / "train.rec", path / "train.idx", path / "property"
    stem = path.with_suffix("") if path.suffix in (".rec", ".idx") else path
    return stem.with_name(stem.name + ".rec"), stem.with_name(stem.name + ".idx"), stem.parent / "property"


class RecordIODataset(Dataset):
    """The images of a RecordIO pack as ``(uint8 (H, W, 3) RGB array, label)`` items.

    ``prefix_or_dir`` is a directory holding ``train.rec``, ``train.idx`` and optionally
    ``property``, or a prefix (``data/train`` or ``data/train.rec``) with ``property`` beside it.
    Key 0 is insightface's index header when it has ``flag > 0`` and no payload; the images are
    then keys ``1 .. label[0] - 1``, otherwise every key of the ``.idx`` in file order.

    Construction reads each image record's frame and header with one small ``pread`` (for MS1MV2's
    5.8 M records that is a pass of tens of seconds over the disk, not over the pixels), checks
    that the ``.idx`` points at records inside the ``.rec``, that labels are whole numbers in
    ``[0, num_classes)`` (``num_classes`` from ``property``, else the largest label + 1), and that
    each payload starts like a JPEG, PNG or BMP. With ``skip_bad=True`` it also decodes every
    image (a full read of the pack) and leaves out those that fail, listed in ``skipped``; a
    structural fault (truncation, wrong ``.idx``, bad label) raises :class:`RecordIOError` either
    way, because it means the pack, not one image, is broken. The ``.rec`` is opened lazily once
    per process, so DataLoader workers never share a descriptor.
    """

    def __init__(
        self, prefix_or_dir: str | Path, image_size: int | tuple[int, int] = 112, skip_bad: bool = False
    ) -> None:
        self.rec_path, self.idx_path, self.property_path = _pack_paths(prefix_or_dir)
        self.image_size = checked_image_size(image_size)
        self.skip_bad = skip_bad
        self.skipped: list[tuple[int, str]] = []
        for path, role in ((self.rec_path, "record file"), (self.idx_path, "index file")):
            if not path.is_file():
                raise RecordIOError(
                    f"{path} does not exist; expected the pack's {role} (a directory with train.rec + "
                    "train.idx, or a prefix such that prefix.rec and prefix.idx exist)"
                )
        self.pack_property = read_property(self.property_path) if self.property_path.is_file() else None
        index = read_index(self.idx_path)
        self._file_size = self.rec_path.stat().st_size
        self._fd: int | None = None
        self._fd_pid: int | None = None

        descriptor = os.open(self.rec_path, os.O_RDONLY)
        try:
            self.layout, image_keys = self._image_keys(descriptor, index)
            keys, labels = self._scan(descriptor, index, image_keys)
        finally:
            os.close(descriptor)
        if not keys:
            raise RecordIOError(f"{self.rec_path}: no usable image records ({len(self.skipped)} skipped as bad)")
        self.keys = np.asarray(keys, dtype=np.int64)
        self.offsets = np.asarray([index[key] for key in keys], dtype=np.int64)
        self.labels: np.ndarray = np.asarray(labels, dtype=np.int64)
        self.num_classes: int = self.pack_property.num_classes if self.pack_property else int(self.labels.max()) + 1
        outside = np.flatnonzero(self.labels >= self.num_classes)
        if outside.size:
            first = int(outside[0])
            raise RecordIOError(
                f"{self.rec_path}: record key {int(self.keys[first])} has label {int(self.labels[first])}, outside "
                f"[0, {self.num_classes}) as given by {self.property_path} ({outside.size} records like it)"
            )
        self.class_names: list[str] = [str(label) for label in range(self.num_classes)]
        logger.info("%s", self.summary())

    def _image_keys(self, descriptor: int, index: dict[int, int]) -> tuple[str, list[int]]:
        if 0 not in index:
            return "plain", list(index)
        where = f"{self.rec_path}: record key 0 (byte offset {index[0]})"
        header, payload = unpack_record(
            _read_record(descriptor, index[0], self._file_size, where, self.rec_path), where
        )
        if header.flag == 0 or payload:
            return "plain", list(index)
        if header.flag < 2:
            raise RecordIOError(
                f"{where}: an index header needs 2 labels (first identity key, end key), got {header.label}"
            )
        first_identity = _whole_number(header.label[0], "label[0] (first identity-record key)", where)
        if first_identity < 2:
            raise RecordIOError(
                f"{where}: label[0] = {first_identity} leaves no image keys; expected images at keys 1 .. label[0] - 1"
            )
        image_keys = list(range(1, first_identity))
        missing = [key for key in image_keys if key not in index]
        if missing:
            raise RecordIOError(
                f"{self.idx_path}: record 0 of {self.rec_path} puts the images at keys 1..{first_identity - 1}, "
                f"but {len(missing)} of them are missing from the index, starting with {missing[:5]}"
            )
        return "insightface", image_keys

    def _scan(self, descriptor: int, index: dict[int, int], image_keys: list[int]) -> tuple[list[int], list[int]]:
        keys, labels = [], []
        for key in image_keys:
            offset = index[key]
            where = f"{self.rec_path}: record key {key} (byte offset {offset})"
            prefix = _pread(descriptor, _SCAN_BYTES, offset)
            cflag, length = _frame_at(prefix, offset, self._file_size, True, where, self.rec_path)
            if cflag == 0 and not self.skip_bad:
                # The header, its labels and the first payload bytes; rarely more than the prefix.
                head = prefix[_FRAME.size : _FRAME.size + length]
                if len(head) >= HEADER.size:
                    wanted = min(length, HEADER.size + 4 * HEADER.unpack_from(head)[0] + 8)
                    if len(head) < wanted:
                        head = _pread(descriptor, wanted, offset + _FRAME.size)
                header, payload = unpack_record(head, where)
                payload_length = length - (len(head) - len(payload))
            else:
                header, payload = unpack_record(
                    _read_record(descriptor, offset, self._file_size, where, self.rec_path), where
                )
                payload_length = len(payload)
            label = _whole_number(header.first_label, "the label", where)
            if label < 0:
                raise RecordIOError(f"{where}: label {label} is outside [0, num_classes); expected a class index >= 0")
            reason = self._payload_problem(payload, payload_length)
            if reason is not None:
                if not self.skip_bad:
                    raise RecordImageError.for_record(self.rec_path, key, offset, reason)
                logger.warning("skipping %s: record key %d: %s", self.rec_path, key, reason)
                self.skipped.append((key, reason))
                continue
            keys.append(key)
            labels.append(label)
        return keys, labels

    def _payload_problem(self, payload: bytes, payload_length: int) -> str | None:
        """Why a payload (whole, or its first bytes when scanning headers only) is no image, or None."""
        if payload_length == 0:
            return "the record holds no image bytes"
        if not any(payload.startswith(signature) for signature in _SIGNATURES):
            return f"the payload starts with {payload[:8].hex()}, not a JPEG, PNG or BMP signature"
        if self.skip_bad:
            try:
                decode_image_bytes(payload, self.image_size)
            except IMAGE_DECODE_ERRORS as error:
                return f"{type(error).__name__}: {error}"
        return None

    def _descriptor(self) -> int:
        pid = os.getpid()
        if self._fd is None or self._fd_pid != pid:
            if self._fd is not None:
                os.close(self._fd)  # this process's copy of a descriptor inherited through fork
            self._fd = os.open(self.rec_path, os.O_RDONLY)
            self._fd_pid = pid
        return self._fd

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        key, offset = int(self.keys[index]), int(self.offsets[index])
        where = f"{self.rec_path}: record key {key} (byte offset {offset})"
        _, payload = unpack_record(
            _read_record(self._descriptor(), offset, self._file_size, where, self.rec_path), where
        )
        try:
            image = decode_image_bytes(payload, self.image_size)
        except IMAGE_DECODE_ERRORS as error:
            raise RecordImageError.for_record(self.rec_path, key, offset, f"{type(error).__name__}: {error}") from error
        return image, int(self.labels[index])

    def close(self) -> None:
        """Close this process's descriptor of the ``.rec`` (reopened on the next item)."""
        if self._fd is not None and self._fd_pid == os.getpid():
            os.close(self._fd)
        self._fd = self._fd_pid = None

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None:
            self.close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_fd"] = state["_fd_pid"] = None  # a spawned worker opens its own
        return state

    def summary(self) -> str:
        """One line on what was loaded, plus one line per skipped record."""
        lines = [
            f"{self.rec_path}: {len(self.keys)} images of {self.num_classes} identities ({self.layout} layout), "
            f"{len(self.skipped)} bad records skipped"
        ]
        lines.extend(f"  skipped record key {key}: {reason}" for key, reason in self.skipped)
        return "\n".join(lines)


class RecordIOWriter:
    """Appends records to a ``.rec`` and their ``key<TAB>offset`` lines to an ``.idx``.

    Byte-compatible with mxnet's ``MXIndexedRecordIO(idx, rec, "w").write_idx``.
    """

    def __init__(self, rec_path: str | Path, idx_path: str | Path) -> None:
        self.rec_path = Path(rec_path)
        self.idx_path = Path(idx_path)
        self._rec = self.rec_path.open("wb")
        self._idx = self.idx_path.open("w")
        self._keys: set[int] = set()

    def write_record(self, key: int, record: bytes) -> int:
        """Write one packed record (see :func:`pack_record`) under ``key``; return its offset."""
        if key < 0 or key in self._keys:
            raise ValueError(f"key {key} is negative or already written to {self.idx_path}")
        offset = self._rec.tell()
        self._rec.write(frame_record(record))
        self._idx.write(f"{key}\t{offset}\n")
        self._keys.add(key)
        return offset

    def write_image(
        self,
        key: int,
        label: float | Sequence[float],
        image: np.ndarray | bytes,
        image_format: str = "png",
        quality: int = 95,
    ) -> int:
        """Write an image (an RGB array to encode, or bytes already encoded) with its label(s)."""
        payload = image if isinstance(image, bytes) else encode_image(image, image_format, quality)
        return self.write_record(key, pack_record(label, payload, record_id=key))

    def close(self) -> None:
        self._rec.close()
        self._idx.close()

    def __enter__(self) -> RecordIOWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _checked_images(images: Sequence[np.ndarray] | np.ndarray, labels: Sequence[int] | np.ndarray) -> np.ndarray:
    label_array = np.asarray(labels)
    if len(label_array) != len(images) or len(images) == 0:
        raise ValueError(
            f"need one label per image and at least one image, got {len(label_array)} labels for {len(images)} images"
        )
    if label_array.ndim != 1 or not np.issubdtype(label_array.dtype, np.integer) or label_array.min() < 0:
        raise ValueError("labels must be a 1-D sequence of non-negative integers")
    if label_array.max() >= 1 << 24:
        raise ValueError("labels must stay below 2**24 so float32 headers hold them exactly")
    return label_array.astype(np.int64)


def write_insightface_pack(
    directory: str | Path,
    images: Sequence[np.ndarray] | np.ndarray,
    labels: Sequence[int] | np.ndarray,
    image_format: str = "png",
    quality: int = 95,
    num_classes: int | None = None,
) -> Path:
    """Write ``train.rec``, ``train.idx`` and ``property`` in ``face2rec2.py``'s layout.

    Images are grouped by label (stable within a label) at keys ``1..N``; record 0 and the
    identity-range records follow them, as insightface writes them. ``property`` gets
    ``num_classes`` (default: largest label + 1) and the first image's height and width.
    """
    directory = Path(directory)
    label_array = _checked_images(images, labels)
    directory.mkdir(parents=True, exist_ok=True)
    order = np.argsort(label_array, kind="stable")
    identity_ranges = []
    with RecordIOWriter(directory / "train.rec", directory / "train.idx") as writer:
        key = 1
        for label in np.unique(label_array):
            start = key
            for i in order[label_array[order] == label]:
                writer.write_image(key, float(label), images[i], image_format, quality)
                key += 1
            identity_ranges.append((start, key))
        first_identity = key
        if first_identity + len(identity_ranges) >= 1 << 24:
            raise ValueError("insightface packs of 2**24 records or more do not fit float32 header labels exactly")
        writer.write_record(
            0, pack_record([float(first_identity), float(first_identity + len(identity_ranges))], b"", 0)
        )
        for start, end in identity_ranges:
            writer.write_record(key, pack_record([float(start), float(end)], b"", key))
            key += 1
    height, width = np.asarray(images[0]).shape[:2]
    classes = int(label_array.max()) + 1 if num_classes is None else num_classes
    (directory / "property").write_text(f"{classes},{height},{width}\n")
    logger.info("wrote %d images of %d identities to %s", len(label_array), len(identity_ranges), directory)
    return directory


def write_plain_pack(
    prefix: str | Path,
    images: Sequence[np.ndarray] | np.ndarray,
    labels: Sequence[int] | np.ndarray,
    image_format: str = "png",
    quality: int = 95,
) -> Path:
    """Write ``prefix.rec`` + ``prefix.idx`` as mxnet's ``im2rec`` does: image ``i`` at key ``i``."""
    prefix = Path(prefix)
    label_array = _checked_images(images, labels)
    rec_path = prefix.with_name(prefix.name + ".rec")
    with RecordIOWriter(rec_path, prefix.with_name(prefix.name + ".idx")) as writer:
        for key, (image, label) in enumerate(zip(images, label_array)):
            writer.write_image(key, float(label), image, image_format, quality)
    return rec_path
