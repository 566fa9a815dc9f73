"""Specification of nptface.core.verification_bin: insightface's lfw.bin/cfp_fp.bin/agedb_30.bin, never executed."""

from __future__ import annotations

import builtins
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from nptface.core.recordio import encode_image
from nptface.core.synthetic import FaceRenderer
from nptface.core.verification_bin import VerificationBinError, load_verification_bin, write_verification_bin

SIZE = 32


def faces(count: int) -> np.ndarray:
    renderer = FaceRenderer(image_size=SIZE)
    return np.stack([renderer.render(200 + index // 2, index, "studio") for index in range(count)])


def python2_pickle(bins: list[bytes], issame: list[bool]) -> bytes:
    """What Python 2 wrote for ``pickle.dump((bins, issame), f, 2)`` with ``str`` images."""
    out = bytearray(b"\x80\x02](")  # PROTO 2, EMPTY_LIST, MARK
    for data in bins:
        out += b"T" + struct.pack("<I", len(data)) + data  # BINSTRING: a Python 2 str
    out += b"e]("  # APPENDS, EMPTY_LIST, MARK
    out += b"".join(b"\x88" if same else b"\x89" for same in issame)  # NEWTRUE / NEWFALSE
    return bytes(out + b"e\x86.")  # APPENDS, TUPLE2, STOP


def python2_numpy_pickle(bins: list[bytes], issame: list[bool]) -> bytes:
    """What Python 2 + numpy 1.x wrote when ``bins`` held ``cv2.imencode`` output ((n, 1) uint8 arrays)."""
    out = bytearray(b"\x80\x02](")
    for data in bins:
        out += b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85U\x01b\x87R"  # empty array
        out += b"(K\x01J" + struct.pack("<i", len(data)) + b"K\x01\x86"  # state: (1, (n, 1),
        out += b"cnumpy\ndtype\nU\x02u1K\x00K\x01\x87R"  # dtype('u1', 0, 1) ...
        out += b"(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"  # ... with its state
        out += b"\x89T" + struct.pack("<I", len(data)) + data + b"tb"  # False, raw bytes) BUILD
    out += b"e]("
    out += b"".join(b"\x88" if same else b"\x89" for same in issame)
    return bytes(out + b"e\x86.")


@pytest.fixture
def four_faces() -> np.ndarray:
    return faces(4)


# -- reading back what was written ----------------------------------------------------------------


def test_round_trip_gives_pixels_one_class_per_image_and_consecutive_pairs(
    tmp_path: Path, four_faces: np.ndarray
) -> None:
    path = write_verification_bin(tmp_path / "lfw.bin", four_faces, [True, False])

    dataset, pairs = load_verification_bin(path, image_size=SIZE)

    assert len(dataset) == 4
    np.testing.assert_array_equal(dataset.labels, [0, 1, 2, 3])
    assert dataset.num_classes == 4 and dataset.class_names == ["0", "1", "2", "3"]
    for index in range(4):
        image, label = dataset[index]
        np.testing.assert_array_equal(image, four_faces[index])
        assert label == index
    np.testing.assert_array_equal(pairs.index_a, [0, 2])
    np.testing.assert_array_equal(pairs.index_b, [1, 3])
    np.testing.assert_array_equal(pairs.is_same, [True, False])


def test_the_file_is_the_plain_pickle_insightface_writes(tmp_path: Path, four_faces: np.ndarray) -> None:
    path = write_verification_bin(tmp_path / "lfw.bin", four_faces, [True, False], image_format="jpeg")

    bins, issame_list = pickle.loads(path.read_bytes())

    assert issame_list == [True, False]
    assert all(isinstance(entry, bytes) and entry.startswith(b"\xff\xd8") for entry in bins)


def test_jpeg_images_are_resized_to_image_size(tmp_path: Path, four_faces: np.ndarray) -> None:
    path = write_verification_bin(tmp_path / "agedb_30.bin", four_faces, [False, True], image_format="jpeg")

    dataset, pairs = load_verification_bin(path, image_size=(20, 16))

    assert dataset.images.shape == (4, 20, 16, 3) and dataset.images.dtype == np.uint8
    np.testing.assert_array_equal(pairs.is_same, [False, True])


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cv2_imencode_arrays_and_numpy_issame_load_under_every_protocol(
    tmp_path: Path, four_faces: np.ndarray, protocol: int
) -> None:
    # cfp2pack.py stores cv2.imencode output: (n, 1) uint8 arrays; some files hold numpy booleans.
    bins = [np.frombuffer(encode_image(image), dtype=np.uint8).reshape(-1, 1) for image in four_faces]
    issame = np.array([True, False]) if protocol != 4 else [np.bool_(True), np.bool_(False)]
    path = tmp_path / "cfp_fp.bin"
    path.write_bytes(pickle.dumps((bins, issame), protocol=protocol))

    dataset, pairs = load_verification_bin(path, image_size=SIZE)

    np.testing.assert_array_equal(dataset.images, four_faces)
    np.testing.assert_array_equal(pairs.is_same, [True, False])


def test_a_python2_pickle_of_str_images_loads_as_bytes(tmp_path: Path, four_faces: np.ndarray) -> None:
    path = tmp_path / "lfw.bin"
    path.write_bytes(python2_pickle([encode_image(image) for image in four_faces], [True, False]))
    with pytest.raises(UnicodeDecodeError):
        pickle.loads(path.read_bytes())  # why insightface retries with encoding="bytes"

    dataset, pairs = load_verification_bin(path, image_size=SIZE)

    np.testing.assert_array_equal(dataset.images, four_faces)
    np.testing.assert_array_equal(pairs.is_same, [True, False])


def test_a_python2_numpy_pickle_loads_through_numpy_core(tmp_path: Path, four_faces: np.ndarray) -> None:
    path = tmp_path / "cfp_fp.bin"
    path.write_bytes(python2_numpy_pickle([encode_image(image) for image in four_faces], [False, True]))

    dataset, pairs = load_verification_bin(path, image_size=SIZE)

    np.testing.assert_array_equal(dataset.images, four_faces)
    np.testing.assert_array_equal(pairs.is_same, [False, True])


# -- crafted pickles are refused, never run -------------------------------------------------------


class _Payload:
    def __init__(self, function: object, argument: str) -> None:
        self.function = function
        self.argument = argument

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return self.function, (self.argument,)


@pytest.mark.parametrize(
    ("function", "command", "refused_name"),
    [
        (os.system, "touch {marker}", r"(posix|nt|os)\.system"),
        (builtins.eval, "open({marker!r}, 'w').close()", r"builtins\.eval"),
    ],
)
def test_a_crafted_pickle_is_refused_and_its_payload_never_runs(
    tmp_path: Path, four_faces: np.ndarray, function: object, command: str, refused_name: str
) -> None:
    marker = tmp_path / "payload-ran"
    bins = [encode_image(image) for image in four_faces[:3]] + [_Payload(function, command.format(marker=str(marker)))]
    path = tmp_path / "lfw.bin"
    path.write_bytes(pickle.dumps((bins, [True, False]), protocol=4))

    refusal = rf"lfw\.bin: refused: the pickle asks for {refused_name}.*nothing in the file was run"
    with pytest.raises(VerificationBinError, match=refusal):
        load_verification_bin(path, image_size=SIZE)
    assert not marker.exists()

    pickle.loads(path.read_bytes())  # the same bytes under a plain unpickler: the payload is live
    assert marker.exists()


def test_codecs_encode_is_admitted_for_latin1_only(tmp_path: Path) -> None:
    import codecs

    path = tmp_path / "lfw.bin"
    path.write_bytes(pickle.dumps(([_Payload(codecs.encode, "x")], [True]), protocol=2))

    with pytest.raises(VerificationBinError, match=r"lfw\.bin: not a readable pickle .*latin-1"):
        load_verification_bin(path, image_size=SIZE)


# -- malformed files ------------------------------------------------------------------------------


def test_bytes_that_are_no_pickle_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "lfw.bin"
    path.write_bytes(b"\x89PNG not a pickle")

    with pytest.raises(VerificationBinError, match=r"lfw\.bin: not a readable pickle"):
        load_verification_bin(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (([b"a", b"b"], [], [True]), r"holds a tuple of 3 items; expected the pair \(bins, issame_list\)"),
        (([b"a", b"b", b"c"], [True, False]), r"3 images for 2 pairs"),
        (([b"a", b"b"], ["yes"]), r"issame_list\[0\] is 'yes'; expected True or False"),
        (([b"a", 7], [True]), r"bins\[1\] is a int; expected encoded image bytes"),
        (({"bins": []}, [True]), r"bins is a dict"),
    ],
)
def test_a_file_of_the_wrong_shape_is_refused_saying_what_was_expected(
    tmp_path: Path, content: tuple, message: str
) -> None:
    path = tmp_path / "agedb_30.bin"
    path.write_bytes(pickle.dumps(content, protocol=4))

    with pytest.raises(VerificationBinError, match=rf"agedb_30\.bin: .*{message}"):
        load_verification_bin(path)


def test_an_undecodable_image_is_named_by_index_and_pair(tmp_path: Path, four_faces: np.ndarray) -> None:
    bins = [encode_image(image) for image in four_faces[:3]] + [b"\xff\xd8\xff" + b"\0" * 20]
    path = write_verification_bin(tmp_path / "lfw.bin", bins, [True, False])

    with pytest.raises(
        VerificationBinError, match=r"lfw\.bin: bins\[3\] \(second image of pair 1\) is not a decodable"
    ):
        load_verification_bin(path, image_size=SIZE)
