"""Specification of nptface.core.datasets: one (image, label) contract, materialised and written out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nptface.core.datasets import (
    InMemoryFaceDataset,
    SyntheticFaceDataset,
    materialize,
    preview_grid,
    write_image_folder,
)
from nptface.core.imagefolder import ImageFolderDataset
from nptface.core.synthetic import FaceRenderer

SIZE = 32  # the smallest size the renderer accepts keeps every test here fast


def tiny_dataset(
    identities: tuple[int, ...] = (1_000_007, 1_000_003, 1_000_012),
    per_identity: int = 3,
    domain: str = "studio",
    **kwargs,
) -> SyntheticFaceDataset:
    return SyntheticFaceDataset(list(identities), per_identity, domain=domain, image_size=SIZE, **kwargs)


# -- SyntheticFaceDataset -------------------------------------------------------------------------


def test_labels_are_positions_in_the_identity_list_repeated_per_image() -> None:
    dataset = tiny_dataset(per_identity=3)

    assert len(dataset) == 9
    assert dataset.num_classes == 3
    np.testing.assert_array_equal(dataset.labels, [0, 0, 0, 1, 1, 1, 2, 2, 2])
    assert dataset.labels.dtype == np.int64
    assert dataset.class_names == ["synth-1000007", "synth-1000003", "synth-1000012"]
    assert [dataset[i][1] for i in range(len(dataset))] == list(dataset.labels)


def test_class_names_are_zero_padded_so_name_order_is_id_order() -> None:
    dataset = tiny_dataset(identities=(9, 10, 100))

    assert dataset.class_names == sorted(dataset.class_names)


def test_item_is_the_renderer_output_for_its_identity_and_index() -> None:
    dataset = tiny_dataset(per_identity=3, domain="cctv-lowres", seed=5, lookalike_share=1.0)
    renderer = FaceRenderer(SIZE, seed=5, lookalike_share=1.0)

    for index in (0, 4, 8):
        label, image_index = divmod(index, 3)
        image, item_label = dataset[index]
        assert item_label == label
        np.testing.assert_array_equal(image, renderer.render(dataset.identities[label], image_index, "cctv-lowres"))


def test_first_index_continues_each_identitys_image_sequence() -> None:
    """So train and test splits of the same people can be drawn without sharing an image."""
    first_five = tiny_dataset(identities=(20, 21), per_identity=5)
    last_two = tiny_dataset(identities=(20, 21), per_identity=2, first_index=3)

    np.testing.assert_array_equal(last_two[0][0], first_five[3][0])
    np.testing.assert_array_equal(last_two[3][0], first_five[9][0])


@pytest.mark.parametrize("index", [-1, 6, 100])
def test_index_outside_the_dataset_raises_index_error(index: int) -> None:
    dataset = tiny_dataset(identities=(1, 2), per_identity=3)

    with pytest.raises(IndexError, match=f"index {index} out of range for 6 images"):
        dataset[index]


@pytest.mark.parametrize(
    ("identities", "per_identity", "message"),
    [
        ((1, 2, 1), 2, "identities must be distinct"),
        ((1,), 2, "needs >= 2 identities, got 1"),
        ((1, 2), 0, "images_per_identity must be >= 1, got 0"),
    ],
)
def test_invalid_synthetic_dataset_is_rejected(identities: tuple[int, ...], per_identity: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SyntheticFaceDataset(list(identities), per_identity, image_size=SIZE)


def test_unknown_domain_is_rejected_at_construction() -> None:
    with pytest.raises(ValueError, match="unknown synthetic domain 'moon'"):
        SyntheticFaceDataset([1, 2], 1, domain="moon", image_size=SIZE)


# -- materialize and InMemoryFaceDataset ----------------------------------------------------------


def test_materialize_equals_rendering_item_by_item() -> None:
    dataset = tiny_dataset(domain="wild")
    in_memory = materialize(dataset, progress=False)

    assert isinstance(in_memory, InMemoryFaceDataset)
    assert len(in_memory) == len(dataset)
    assert in_memory.images.shape == (len(dataset), SIZE, SIZE, 3)
    np.testing.assert_array_equal(in_memory.labels, dataset.labels)
    assert in_memory.class_names == dataset.class_names
    assert in_memory.num_classes == dataset.num_classes
    for index in range(len(dataset)):
        image, label = in_memory[index]
        np.testing.assert_array_equal(image, dataset[index][0])
        assert label == dataset[index][1] and type(label) is int


def valid_arrays(count: int = 4) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((count, SIZE, SIZE, 3), dtype=np.uint8), np.array([0, 1] * (count // 2))


@pytest.mark.parametrize(
    ("images", "labels", "message"),
    [
        (np.zeros((4, SIZE, SIZE, 3), dtype=np.float32), np.array([0, 1, 0, 1]), "uint8 \\(N, H, W, 3\\).*float32"),
        (np.zeros((4, SIZE, SIZE), dtype=np.uint8), np.array([0, 1, 0, 1]), "uint8 \\(N, H, W, 3\\)"),
        (np.zeros((4, SIZE, SIZE, 4), dtype=np.uint8), np.array([0, 1, 0, 1]), "uint8 \\(N, H, W, 3\\)"),
        (np.zeros((4, SIZE, SIZE, 3), dtype=np.uint8), np.array([0, 1, 0]), "labels has 3 entries for 4 images"),
        (np.zeros((4, SIZE, SIZE, 3), dtype=np.uint8), np.array([0, 1, 2, 1]), "labels must lie in \\[0, 1\\]"),
        (np.zeros((4, SIZE, SIZE, 3), dtype=np.uint8), np.array([0, -1, 0, 1]), "labels must lie in \\[0, 1\\]"),
    ],
)
def test_in_memory_dataset_rejects_inconsistent_arrays(images: np.ndarray, labels: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        InMemoryFaceDataset(images, labels, ["a", "b"])


def test_materialize_names_folder_images_by_their_path_and_honours_a_limit(tmp_path: Path) -> None:
    write_image_folder(tiny_dataset(), tmp_path, progress=False)
    folder = ImageFolderDataset(tmp_path, image_size=SIZE)
    first_five = materialize(folder, progress=False, limit=5, source="my faces")
    assert len(first_five) == 5 and first_five.source == "my faces"
    assert first_five.names == folder.names[:5] and first_five.names[0] == "synth-1000003/00000.png"
    np.testing.assert_array_equal(first_five.labels, folder.labels[:5])
    assert first_five.class_names == folder.class_names


def test_content_hash_changes_with_any_pixel_label_or_name() -> None:
    images, labels = valid_arrays()
    dataset = InMemoryFaceDataset(images, labels, ["a", "b"])
    assert dataset.names == ["a/000000", "b/000001", "a/000002", "b/000003"]
    same = InMemoryFaceDataset(images.copy(), labels.copy(), ["a", "b"], source="elsewhere")
    assert same.content_hash() == dataset.content_hash()
    changed = images.copy()
    changed[3, 0, 0, 0] = 1
    assert InMemoryFaceDataset(changed, labels, ["a", "b"]).content_hash() != dataset.content_hash()
    assert InMemoryFaceDataset(images, labels[::-1].copy(), ["a", "b"]).content_hash() != dataset.content_hash()
    renamed = ["x", *dataset.names[1:]]
    assert InMemoryFaceDataset(images, labels, ["a", "b"], renamed).content_hash() != dataset.content_hash()
    with pytest.raises(ValueError, match="1 names for 4 images"):
        InMemoryFaceDataset(images, labels, ["a", "b"], ["x"])


def test_in_memory_dataset_serves_its_arrays() -> None:
    images, labels = valid_arrays()
    images[2] = 200
    dataset = InMemoryFaceDataset(images, labels, ["a", "b"])

    assert len(dataset) == 4 and dataset.num_classes == 2
    image, label = dataset[2]
    assert (image == 200).all() and label == 0


# -- write_image_folder -> ImageFolderDataset ------------------------------------------------------


def files_under(root: Path) -> dict[str, list[str]]:
    """Every entry (hidden ones included) in every folder under ``root``."""
    return {folder.name: sorted(entry.name for entry in folder.iterdir()) for folder in sorted(root.iterdir())}


def test_png_round_trip_through_image_folder_keeps_pixels_and_class_names(tmp_path: Path) -> None:
    # Identities deliberately out of order: ImageFolder labels follow folder names, so compare by name.
    dataset = tiny_dataset(identities=(1_000_012, 1_000_003, 1_000_007), per_identity=3, domain="wild")
    root = write_image_folder(dataset, tmp_path / "faces", image_format="png", progress=False)
    loaded = ImageFolderDataset(root, image_size=SIZE)

    assert sorted(loaded.class_names) == sorted(dataset.class_names)
    assert len(loaded) == len(dataset)
    written_by_name = {name: [] for name in dataset.class_names}
    for index in range(len(dataset)):
        image, label = dataset[index]
        written_by_name[dataset.class_names[label]].append(image)
    read_by_name = {name: [] for name in loaded.class_names}
    for index in range(len(loaded)):
        image, label = loaded[index]
        read_by_name[loaded.class_names[label]].append(image)
    for name, written in written_by_name.items():
        np.testing.assert_array_equal(np.stack(read_by_name[name]), np.stack(written), err_msg=name)


def test_written_folder_holds_only_the_numbered_images(tmp_path: Path) -> None:
    dataset = tiny_dataset(per_identity=3)
    root = write_image_folder(dataset, tmp_path / "faces", progress=False)

    expected = ["00000.png", "00001.png", "00002.png"]
    assert files_under(root) == {name: expected for name in dataset.class_names}


def test_jpeg_images_are_written_with_jpg_extension_and_decode_to_the_same_shape(tmp_path: Path) -> None:
    dataset = tiny_dataset(identities=(1, 2), per_identity=2)
    root = write_image_folder(dataset, tmp_path / "faces", image_format="JPEG", progress=False)

    assert files_under(root) == {name: ["00000.jpg", "00001.jpg"] for name in dataset.class_names}
    with Image.open(root / dataset.class_names[0] / "00000.jpg") as image:
        assert image.format == "JPEG" and image.size == (SIZE, SIZE)


def test_unknown_image_format_is_rejected_before_writing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="image_format must be 'png' or 'jpeg', got 'gif'"):
        write_image_folder(tiny_dataset(), tmp_path / "faces", image_format="gif", progress=False)
    assert not (tmp_path / "faces").exists()


def test_interrupted_write_leaves_nothing_an_image_folder_reader_trips_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dataset = tiny_dataset(identities=(1, 2), per_identity=2)
    real_save = Image.Image.save
    saves = []

    def save_then_die_on_the_last_image(image: Image.Image, fp, *args, **kwargs) -> None:
        saves.append(fp)
        if len(saves) == len(dataset):
            fp.write(b"\x89PNG\r\n\x1a\n")  # a truncated file, as a killed process would leave
            raise KeyboardInterrupt
        real_save(image, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", save_then_die_on_the_last_image)
    with pytest.raises(KeyboardInterrupt):
        write_image_folder(dataset, tmp_path / "faces", progress=False)
    monkeypatch.undo()

    loaded = ImageFolderDataset(tmp_path / "faces", image_size=SIZE)
    assert len(loaded) == len(dataset) - 1
    assert loaded.skipped == []


# -- preview_grid ---------------------------------------------------------------------------------


def test_preview_grid_has_one_row_per_identity_and_one_column_per_image() -> None:
    dataset = tiny_dataset(per_identity=3)
    grid = preview_grid(dataset, identities=2, per_identity=3)

    assert grid.size == (3 * SIZE, 2 * SIZE)  # PIL sizes are (width, height)
    pixels = np.asarray(grid)
    np.testing.assert_array_equal(pixels[SIZE : 2 * SIZE, 2 * SIZE : 3 * SIZE], dataset[5][0])


def test_preview_grid_pads_short_rows_with_black_and_stops_at_the_last_class() -> None:
    dataset = tiny_dataset(per_identity=2)
    grid = np.asarray(preview_grid(dataset, identities=10, per_identity=3))

    assert grid.shape == (3 * SIZE, 3 * SIZE, 3)
    np.testing.assert_array_equal(grid[:SIZE, SIZE : 2 * SIZE], dataset[1][0])
    assert (grid[:, 2 * SIZE :] == 0).all()
