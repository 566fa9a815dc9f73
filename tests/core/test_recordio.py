"""Specification of nptface.core.recordio: insightface RecordIO packs, read and written without mxnet."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from nptface.core import recordio
from nptface.core.imagefolder import BadImageError
from nptface.core.recordio import (
    RECORD_MAGIC,
    RecordImageError,
    RecordIODataset,
    RecordIOError,
    RecordIOWriter,
    encode_image,
    frame_record,
    pack_record,
    read_index,
    unpack_record,
    write_insightface_pack,
    write_plain_pack,
)
from nptface.core.synthetic import FaceRenderer

SIZE = 32
MAGIC = struct.pack("<I", RECORD_MAGIC)


def faces(labels: list[int]) -> np.ndarray:
    renderer = FaceRenderer(image_size=SIZE)
    return np.stack([renderer.render(100 + label, index, "studio") for index, label in enumerate(labels)])


def plain_pack(tmp_path: Path, payloads: list[tuple[float | list[float], bytes]]) -> Path:
    """``prefix.rec``/``prefix.idx`` holding the given (label, payload) records at keys 0, 1, ..."""
    prefix = tmp_path / "pack"
    with RecordIOWriter(prefix.with_suffix(".rec"), prefix.with_suffix(".idx")) as writer:
        for key, (label, payload) in enumerate(payloads):
            writer.write_record(key, pack_record(label, payload, record_id=key))
    return prefix


def png(seed: int) -> bytes:
    return encode_image(np.random.default_rng(seed).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))


def rewrite_idx_line(idx_path: Path, key: int, new_line: str | None) -> None:
    lines = [line for line in idx_path.read_text().splitlines() if line.split("\t")[0] != str(key)]
    if new_line is not None:
        lines.append(new_line)
    idx_path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def insightface_pack(tmp_path: Path) -> tuple[Path, np.ndarray, list[int]]:
    labels = [2, 0, 1, 0, 2, 1, 0]
    images = faces(labels)
    return write_insightface_pack(tmp_path / "faces_emore", images, labels), images, labels


# -- reading back what was written ----------------------------------------------------------------


def test_insightface_pack_round_trips_png_pixels_grouped_by_identity(insightface_pack) -> None:
    root, images, labels = insightface_pack
    dataset = RecordIODataset(root, image_size=SIZE)

    assert dataset.layout == "insightface"
    assert len(dataset) == 7
    np.testing.assert_array_equal(dataset.labels, [0, 0, 0, 1, 1, 2, 2])
    assert dataset.labels.dtype == np.int64
    assert dataset.num_classes == 3 and dataset.class_names == ["0", "1", "2"]
    written_order = np.argsort(labels, kind="stable")
    for item, source in enumerate(written_order):
        image, label = dataset[item]
        assert image.dtype == np.uint8 and image.shape == (SIZE, SIZE, 3)
        np.testing.assert_array_equal(image, images[source])
        assert label == labels[source] and isinstance(label, int)


def test_pack_layout_is_face2rec2s_images_then_record_0_then_identity_ranges(insightface_pack) -> None:
    root, _, _ = insightface_pack
    index = read_index(root / "train.idx")
    rec = (root / "train.rec").read_bytes()

    def record(key: int) -> tuple[recordio.RecordHeader, bytes]:
        magic, lrecord = struct.unpack_from("<II", rec, index[key])
        assert magic == RECORD_MAGIC and lrecord >> 29 == 0
        return unpack_record(rec[index[key] + 8 : index[key] + 8 + (lrecord & (1 << 29) - 1)])

    assert list(index) == [1, 2, 3, 4, 5, 6, 7, 0, 8, 9, 10]
    assert index[1] == 0 and all(offset % 4 == 0 for offset in index.values())
    header0, payload0 = record(0)
    assert (header0.flag, header0.label, payload0) == (2, (8.0, 11.0), b"")
    assert [record(key)[0].label for key in (8, 9, 10)] == [(1.0, 4.0), (4.0, 6.0), (6.0, 8.0)]
    image_header, _ = record(1)
    assert (image_header.flag, image_header.label, image_header.id) == (0, 0.0, 1)
    assert (root / "property").read_text() == f"3,{SIZE},{SIZE}\n"


def test_plain_pack_serves_every_idx_key_in_file_order_with_jpeg(tmp_path: Path) -> None:
    labels = [1, 0, 3, 1]
    rec_path = write_plain_pack(tmp_path / "train", faces(labels), labels, image_format="jpeg")

    dataset = RecordIODataset(rec_path, image_size=(24, 20))

    assert dataset.layout == "plain"
    np.testing.assert_array_equal(dataset.keys, [0, 1, 2, 3])
    np.testing.assert_array_equal(dataset.labels, labels)
    assert dataset.num_classes == 4  # no property file: largest label + 1
    image, label = dataset[2]
    assert image.shape == (24, 20, 3) and image.dtype == np.uint8 and label == 3


def test_a_directory_a_prefix_and_the_rec_path_name_the_same_pack(insightface_pack) -> None:
    root, _, _ = insightface_pack
    for form in (root, root / "train", root / "train.rec", str(root / "train.idx")):
        np.testing.assert_array_equal(RecordIODataset(form, image_size=SIZE).labels, [0, 0, 0, 1, 1, 2, 2])


def test_labels_are_read_from_headers_without_decoding_a_single_image(insightface_pack, monkeypatch) -> None:
    root, _, _ = insightface_pack

    def no_decoding(*args: object) -> None:
        raise AssertionError("an image was decoded while reading labels")

    monkeypatch.setattr(recordio, "decode_image_bytes", no_decoding)
    dataset = RecordIODataset(root, image_size=SIZE)
    np.testing.assert_array_equal(dataset.labels, [0, 0, 0, 1, 1, 2, 2])


def test_records_with_a_label_array_take_the_first_label_as_the_class(tmp_path: Path) -> None:
    # face2rec2 packs [label, aligned]; an image at key 0 with flag > 0 is still an image.
    prefix = plain_pack(tmp_path, [([1.0, 1.0], png(0)), ([0.0, 1.0], png(1)), ([1.0, 0.0], png(2))])

    dataset = RecordIODataset(prefix, image_size=SIZE)

    assert dataset.layout == "plain"
    np.testing.assert_array_equal(dataset.labels, [1, 0, 1])


def test_a_record_containing_the_magic_is_framed_in_parts_as_dmlc_does() -> None:
    record = pack_record(1.0, b"ab" + MAGIC + b"cd" + MAGIC + MAGIC + b"x")  # aligned magic at 32 and 36

    framed = frame_record(record)

    parts = [
        (1 << 29 | 32, record[:32]),  # cflag 1: first part, up to the first aligned magic
        (2 << 29 | 0, b""),  # cflag 2: the empty middle part between two magics
        (3 << 29 | 1, b"x" + b"\0\0\0"),  # cflag 3: last part, padded to 4 bytes
    ]
    assert framed == b"".join(MAGIC + struct.pack("<I", lrecord) + data for lrecord, data in parts)


def test_a_split_record_is_read_back_whole(tmp_path: Path) -> None:
    image = np.random.default_rng(3).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    payload = encode_image(image)
    payload += b"\0" * (-(recordio.HEADER.size + len(payload)) % 4) + MAGIC + b"tail"  # ignored after IEND
    assert frame_record(pack_record(1.0, payload)).count(MAGIC) == 2  # stored as two parts
    prefix = plain_pack(tmp_path, [(0.0, png(1)), (1.0, payload)])

    decoded, label = RecordIODataset(prefix, image_size=SIZE)[1]

    np.testing.assert_array_equal(decoded, image)
    assert label == 1


def test_dataloader_workers_fork_safely_and_read_the_same_items(insightface_pack) -> None:
    root, _, _ = insightface_pack
    dataset = RecordIODataset(root, image_size=SIZE)
    expected = [dataset[i] for i in range(len(dataset))]  # the parent's descriptor is open before the fork

    loader = DataLoader(dataset, batch_size=2, num_workers=2, multiprocessing_context="fork")
    batches = list(loader)

    images = torch.cat([batch[0] for batch in batches]).numpy()
    labels = torch.cat([batch[1] for batch in batches]).numpy()
    np.testing.assert_array_equal(images, np.stack([image for image, _ in expected]))
    np.testing.assert_array_equal(labels, dataset.labels)
    assert dataset[0][1] == 0  # and the parent still reads through its own descriptor


def test_a_pickled_dataset_leaves_its_descriptor_behind_and_opens_its_own(insightface_pack) -> None:
    # What a spawn/forkserver DataLoader worker receives.
    root, _, _ = insightface_pack
    dataset = RecordIODataset(root, image_size=SIZE)
    image, _ = dataset[3]

    clone = pickle.loads(pickle.dumps(dataset))

    assert clone._fd is None
    np.testing.assert_array_equal(clone[3][0], image)
    dataset.close()
    np.testing.assert_array_equal(clone[3][0], image)


# -- bad input: every error names the file and the record -----------------------------------------


def test_a_truncated_rec_is_refused_naming_the_record_that_runs_past_the_end(tmp_path: Path) -> None:
    prefix = plain_pack(tmp_path, [(0.0, png(0)), (1.0, png(1))])
    rec_path = prefix.with_suffix(".rec")
    rec_path.write_bytes(rec_path.read_bytes()[:-50])
    last_offset = read_index(prefix.with_suffix(".idx"))[1]

    with pytest.raises(RecordIOError, match=rf"pack\.rec: record key 1 \(byte offset {last_offset}\).*truncated"):
        RecordIODataset(prefix, image_size=SIZE)


def test_an_idx_offset_that_is_not_at_a_record_is_refused(tmp_path: Path) -> None:
    prefix = plain_pack(tmp_path, [(0.0, png(0)), (1.0, png(1))])
    offset = read_index(prefix.with_suffix(".idx"))[1]
    rewrite_idx_line(prefix.with_suffix(".idx"), 1, f"1\t{offset + 4}")

    with pytest.raises(RecordIOError, match=rf"record key 1 \(byte offset {offset + 4}\).*magic.*\.idx does not match"):
        RecordIODataset(prefix, image_size=SIZE)


def test_an_idx_offset_past_the_end_of_the_rec_is_refused(tmp_path: Path) -> None:
    prefix = plain_pack(tmp_path, [(0.0, png(0)), (1.0, png(1))])
    size = prefix.with_suffix(".rec").stat().st_size
    rewrite_idx_line(prefix.with_suffix(".idx"), 1, f"1\t{size + 100}")

    with pytest.raises(RecordIOError, match=rf"record key 1 .*ends at byte {size}"):
        RecordIODataset(prefix, image_size=SIZE)


def test_a_corrupt_record_magic_is_refused(tmp_path: Path) -> None:
    prefix = plain_pack(tmp_path, [(0.0, png(0)), (1.0, png(1))])
    rec_path = prefix.with_suffix(".rec")
    data = bytearray(rec_path.read_bytes())
    offset = read_index(prefix.with_suffix(".idx"))[1]
    data[offset : offset + 4] = b"\xde\xad\xbe\xef"
    rec_path.write_bytes(bytes(data))

    with pytest.raises(RecordIOError, match=r"pack\.rec: record key 1 .*found 0xefbeadde"):
        RecordIODataset(prefix, image_size=SIZE)


def test_an_image_key_missing_from_the_idx_of_an_insightface_pack_is_refused(insightface_pack) -> None:
    root, _, _ = insightface_pack
    rewrite_idx_line(root / "train.idx", 3, None)

    with pytest.raises(RecordIOError, match=r"train\.idx: record 0 .* keys 1\.\.7, but 1 of them are missing.*\[3\]"):
        RecordIODataset(root, image_size=SIZE)


@pytest.mark.parametrize("line", ["1 2 3", "one\t0", "-1\t0"])
def test_a_malformed_idx_line_is_refused_naming_the_line(tmp_path: Path, line: str) -> None:
    prefix = plain_pack(tmp_path, [(0.0, png(0))])
    idx_path = prefix.with_suffix(".idx")
    idx_path.write_text(idx_path.read_text() + line + "\n")

    with pytest.raises(RecordIOError, match=r"pack\.idx:2: expected 'key<TAB>offset'"):
        RecordIODataset(prefix, image_size=SIZE)


def test_a_missing_idx_is_refused_naming_it(tmp_path: Path) -> None:
    prefix = plain_pack(tmp_path, [(0.0, png(0))])
    prefix.with_suffix(".idx").unlink()

    with pytest.raises(RecordIOError, match=r"pack\.idx does not exist"):
        RecordIODataset(prefix, image_size=SIZE)


@pytest.mark.parametrize("payload", [b"not an image at all", b""])
def test_a_payload_that_is_no_image_is_refused_at_construction(tmp_path: Path, payload: bytes) -> None:
    prefix = plain_pack(tmp_path, [(0.0, png(0)), (1.0, payload)])

    with pytest.raises(
        RecordImageError, match=r"pack\.rec: record key 1 \(byte offset \d+\) is not a decodable image"
    ) as caught:
        RecordIODataset(prefix, image_size=SIZE)
    assert isinstance(caught.value, BadImageError) and caught.value.key == 1


def test_an_undecodable_image_raises_on_access_naming_the_record(tmp_path: Path) -> None:
    broken = b"\x89PNG\r\n\x1a\n" + b"\0" * 40  # a PNG signature, then nothing PNG
    dataset = RecordIODataset(plain_pack(tmp_path, [(0.0, png(0)), (1.0, broken)]), image_size=SIZE)

    with pytest.raises(RecordImageError, match=r"pack\.rec: record key 1 \(byte offset \d+\) is not a decodable image"):
        dataset[1]


def test_skip_bad_decodes_every_image_up_front_and_lists_the_bad_ones(tmp_path: Path) -> None:
    broken = b"\x89PNG\r\n\x1a\n" + b"\0" * 40
    prefix = plain_pack(tmp_path, [(0.0, png(0)), (1.0, broken), (1.0, png(2)), (2.0, b"junk")])

    dataset = RecordIODataset(prefix, image_size=SIZE, skip_bad=True)

    assert [key for key, _ in dataset.skipped] == [1, 3]
    np.testing.assert_array_equal(dataset.keys, [0, 2])
    np.testing.assert_array_equal(dataset.labels, [0, 1])
    assert dataset.num_classes == 2
    assert "2 images of 2 identities" in dataset.summary()
    assert "skipped record key 1" in dataset.summary() and "skipped record key 3" in dataset.summary()


def test_an_undecodable_image_in_a_worker_reaches_the_caller_as_a_record_image_error(tmp_path: Path) -> None:
    prefix = plain_pack(tmp_path, [(0.0, png(0)), (1.0, b"\xff\xd8\xff" + b"\0" * 16)])
    loader = DataLoader(
        RecordIODataset(prefix, image_size=SIZE), batch_size=2, num_workers=1, multiprocessing_context="fork"
    )

    with pytest.raises(RecordImageError, match=r"pack\.rec: record key 1 .*not a decodable image"):
        list(loader)


def test_a_label_outside_the_propertys_num_classes_is_refused(insightface_pack) -> None:
    root, _, _ = insightface_pack
    (root / "property").write_text(f"2,{SIZE},{SIZE}\n")

    with pytest.raises(RecordIOError, match=r"train\.rec: record key 6 has label 2, outside \[0, 2\) .*property"):
        RecordIODataset(root, image_size=SIZE)


@pytest.mark.parametrize(
    ("label", "problem"), [(-1.0, "outside"), (1.5, "whole number"), (float("nan"), "whole number")]
)
def test_a_negative_or_fractional_label_is_refused(tmp_path: Path, label: float, problem: str) -> None:
    prefix = plain_pack(tmp_path, [(0.0, png(0)), (label, png(1))])

    with pytest.raises(RecordIOError, match=rf"pack\.rec: record key 1 .*{problem}"):
        RecordIODataset(prefix, image_size=SIZE)


def test_a_malformed_property_file_is_refused_naming_it(insightface_pack) -> None:
    root, _, _ = insightface_pack
    (root / "property").write_text("85742;112;112\n")

    with pytest.raises(RecordIOError, match=r"property: expected one line 'num_classes,height,width'"):
        RecordIODataset(root, image_size=SIZE)
