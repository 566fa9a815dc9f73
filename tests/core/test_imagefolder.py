"""Specification of nptface.core.imagefolder: one folder per identity, checked up front."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nptface.core.imagefolder import BadImageError, ImageFolderDataset, ImageFolderError

# ../shared beside the repository, on the project's machines only; ``parents[2].parent`` rather
# than ``parents[3]`` so a checkout near the filesystem root still imports this file.
ORL_ROOT = Path(__file__).resolve().parents[2].parent / "shared/data/orl_faces"


def write_image(path: Path, mode: str = "RGB", size: tuple[int, int] = (20, 24), value: int = 100) -> Path:
    """Write a small solid image; ``size`` is (width, height) as PIL has it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    color = {"L": value, "RGB": (value, 50, 200), "RGBA": (value, 50, 200, 128)}[mode]
    Image.new(mode, size, color).save(path)
    return path


def write_jpeg_with_detail(path: Path) -> Path:
    """A JPEG with non-trivial scan data, so that cutting it in half really truncates pixels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(0).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=95)
    return path


@pytest.fixture
def three_identities(tmp_path: Path) -> Path:
    """bob (2 JPEGs), alice (1 PNG + 1 grey PGM), carol (1 JPEG), plus files to be ignored."""
    root = tmp_path / "faces"
    write_image(root / "bob" / "b2.jpg")
    write_image(root / "bob" / "b1.JPG")
    write_image(root / "alice" / "a1.png")
    write_image(root / "alice" / "a2.pgm", mode="L", size=(92, 112), value=77)
    write_image(root / "carol" / "c1.jpeg")
    (root / "README").write_text("not an identity")
    (root / "alice" / "notes.txt").write_text("not an image")
    return root


def test_identity_folders_sorted_by_name_give_labels(three_identities: Path) -> None:
    dataset = ImageFolderDataset(three_identities)

    assert dataset.class_names == ["alice", "bob", "carol"]
    assert dataset.num_classes == 3
    assert [(path.name, label) for path, label in dataset.samples] == [
        ("a1.png", 0),
        ("a2.pgm", 0),
        ("b1.JPG", 1),
        ("b2.jpg", 1),
        ("c1.jpeg", 2),
    ]
    assert dataset.labels.dtype == np.int64
    assert dataset.labels.tolist() == [0, 0, 1, 1, 2]
    assert len(dataset) == 5
    assert [dataset[index][1] for index in range(len(dataset))] == dataset.labels.tolist()


def test_top_level_files_and_non_image_files_are_ignored(three_identities: Path) -> None:
    dataset = ImageFolderDataset(three_identities)

    assert "README" not in dataset.class_names
    assert all(path.suffix.lower() != ".txt" for path, _ in dataset.samples)


def test_hidden_files_and_folders_are_ignored(three_identities: Path) -> None:
    (three_identities / "bob" / "._b1.jpg").write_bytes(b"\x00\x05\x16\x07 macOS resource fork")
    write_image(three_identities / ".ipynb_checkpoints" / "x.png")

    dataset = ImageFolderDataset(three_identities)

    assert dataset.class_names == ["alice", "bob", "carol"]
    assert len(dataset) == 5


def test_grey_image_becomes_three_equal_channels_at_image_size(three_identities: Path) -> None:
    dataset = ImageFolderDataset(three_identities, image_size=32)

    image, label = dataset[1]

    assert label == 0
    assert image.dtype == np.uint8
    assert image.shape == (32, 32, 3)
    assert (image == 77).all()


def test_rectangular_image_size_is_height_by_width(three_identities: Path) -> None:
    dataset = ImageFolderDataset(three_identities, image_size=(40, 30))

    image, _ = dataset[0]

    assert image.shape == (40, 30, 3)


def test_rgba_and_palette_images_become_rgb(tmp_path: Path) -> None:
    write_image(tmp_path / "a" / "rgba.png", mode="RGBA")
    palette_path = tmp_path / "b" / "palette.png"
    palette_path.parent.mkdir()
    palette_image = Image.new("P", (16, 16), 1)
    palette_image.putpalette([0, 0, 0, 10, 20, 30])
    palette_image.save(palette_path)

    dataset = ImageFolderDataset(tmp_path, image_size=8)  # resized from 20x24 and 16x16

    rgba, _ = dataset[0]
    palette, _ = dataset[1]
    assert rgba.shape == palette.shape == (8, 8, 3)
    assert rgba[0, 0].tolist() == [100, 50, 200]
    assert palette[0, 0].tolist() == [10, 20, 30]


def test_zero_byte_image_is_an_error_naming_the_file(three_identities: Path) -> None:
    empty = three_identities / "bob" / "b3.jpg"
    empty.write_bytes(b"")

    with pytest.raises(BadImageError, match="b3.jpg is not a decodable image") as raised:
        ImageFolderDataset(three_identities)

    assert raised.value.path == empty
    assert "0 bytes" in str(raised.value)


def test_text_file_renamed_jpg_is_an_error_naming_the_file(three_identities: Path) -> None:
    fake = three_identities / "carol" / "c2.jpg"
    fake.write_text("this is plain text, not a JPEG\n" * 10)

    with pytest.raises(BadImageError) as raised:
        ImageFolderDataset(three_identities)

    assert raised.value.path == fake
    assert str(fake) in str(raised.value)
    assert isinstance(raised.value, ValueError)


def test_skip_bad_leaves_out_bad_files_and_lists_them(three_identities: Path) -> None:
    empty = three_identities / "bob" / "b3.jpg"
    empty.write_bytes(b"")
    fake = three_identities / "carol" / "c2.png"
    fake.write_text("not a PNG")

    dataset = ImageFolderDataset(three_identities, skip_bad=True)

    assert len(dataset) == 5
    assert [path for path, _ in dataset.skipped] == [empty, fake]
    assert all(reason for _, reason in dataset.skipped)
    assert empty not in [path for path, _ in dataset.samples]
    summary = dataset.summary()
    assert "2 bad files skipped" in summary
    assert str(empty) in summary and str(fake) in summary


def test_truncated_jpeg_passes_the_check_but_fails_to_load_naming_the_file(tmp_path: Path) -> None:
    write_image(tmp_path / "a" / "ok.jpg")
    truncated = write_jpeg_with_detail(tmp_path / "b" / "cut.jpg")
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])

    dataset = ImageFolderDataset(tmp_path)

    assert dataset[0][0].shape == (112, 112, 3)
    with pytest.raises(BadImageError, match="cut.jpg is not a decodable image") as raised:
        dataset[1]
    assert raised.value.path == truncated


def test_identity_folder_without_images_is_an_error_naming_it(three_identities: Path) -> None:
    (three_identities / "dave").mkdir()
    (three_identities / "dave" / "notes.txt").write_text("no images here")

    with pytest.raises(ImageFolderError, match="empty identity folder .*dave"):
        ImageFolderDataset(three_identities)


def test_identity_folder_with_only_bad_images_is_empty_even_when_skipping(three_identities: Path) -> None:
    (three_identities / "carol" / "c1.jpeg").write_bytes(b"")

    with pytest.raises(ImageFolderError, match="empty identity folder .*carol.*1 image files are bad"):
        ImageFolderDataset(three_identities, skip_bad=True)


def test_fewer_than_two_identities_is_an_error(tmp_path: Path) -> None:
    write_image(tmp_path / "only_one" / "x.png")

    with pytest.raises(ImageFolderError, match="1 identity folder.*at least 2"):
        ImageFolderDataset(tmp_path)


def test_missing_root_is_an_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"

    with pytest.raises(ImageFolderError, match=f"{missing} does not exist"):
        ImageFolderDataset(missing)


def test_root_that_is_a_file_is_an_error(tmp_path: Path) -> None:
    a_file = write_image(tmp_path / "face.png")

    with pytest.raises(ImageFolderError, match="is not a directory"):
        ImageFolderDataset(a_file)


@pytest.mark.parametrize("bad_size", [0, -3, (112,), (112, 0), 112.0, True])
def test_image_size_must_be_positive_int_or_pair(three_identities: Path, bad_size: object) -> None:
    with pytest.raises(ValueError, match="image_size"):
        ImageFolderDataset(three_identities, image_size=bad_size)  # type: ignore[arg-type]


@pytest.mark.skipif(
    not ORL_ROOT.is_dir(), reason=f"ORL faces not present at {ORL_ROOT} (only on the project's machines)"
)
def test_real_orl_faces_load_as_40_identities_of_10_images() -> None:
    dataset = ImageFolderDataset(ORL_ROOT)

    assert dataset.num_classes == 40
    assert len(dataset) == 400
    assert sorted(dataset.class_names) == sorted(f"s{number}" for number in range(1, 41))
    assert np.bincount(dataset.labels).tolist() == [10] * 40
    assert dataset.skipped == []
    for index in range(len(dataset)):
        image, label = dataset[index]
        assert image.shape == (112, 112, 3) and image.dtype == np.uint8
        assert label == dataset.labels[index]
    assert (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all()


def test_sixteen_bit_grey_images_train_as_their_picture_not_white(tmp_path: Path) -> None:
    ramp = np.tile(np.arange(0, 256, 8, dtype=np.uint16), (32, 1))
    for identity in ("a", "b"):
        (tmp_path / identity).mkdir()
        Image.fromarray(ramp * 257).save(tmp_path / identity / "face16.png")
    image, _ = ImageFolderDataset(tmp_path, image_size=32)[0]
    assert np.array_equal(image[..., 0], ramp.astype(np.uint8))


@pytest.mark.parametrize("size", [(1, 1), (9000, 16)])
def test_images_outside_the_one_size_policy_are_refused_by_name(three_identities: Path, size) -> None:
    Image.new("L", size, 10).save(three_identities / "bob" / "odd.png")
    with pytest.raises(BadImageError, match="odd.png.*too (small|large)"):
        ImageFolderDataset(three_identities)
    dataset = ImageFolderDataset(three_identities, skip_bad=True)
    assert [path.name for path, _ in dataset.skipped] == ["odd.png"]


def test_float_images_are_refused_at_the_folder_check(three_identities: Path) -> None:
    Image.new("F", (20, 20), 0.5).save(three_identities / "bob" / "float.tiff")
    with pytest.raises(BadImageError, match="float.tiff.*mode F"):
        ImageFolderDataset(three_identities, extensions=(".jpg", ".jpeg", ".png", ".pgm", ".tiff"))
