"""Specification of nptface.on_device.face_crops and ``nptface data align``: photos in, aligned crops out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nptface.cli import main
from nptface.core.image_policy import ImageInputError
from nptface.on_device.face_crops import FaceCropper, NoFaceError, crop_folder

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


@pytest.fixture
def photo_folder(tmp_path, synthetic_portraits, scene) -> Path:
    a, b = synthetic_portraits
    src = tmp_path / "photos"
    (src / "ann").mkdir(parents=True)
    (src / "bob").mkdir()
    scene([(a, 112, (30, 40))]).save(src / "ann" / "one.jpg", quality=95)
    scene([(a, 120, (290, 20)), (b, 140, (10, 90))], size=(420, 240)).save(src / "bob" / "pair.png")
    Image.new("RGB", (200, 150), (120, 120, 120)).save(src / "bob" / "wall.png")
    return src


def test_a_folder_becomes_aligned_crops_in_the_same_tree_with_odd_photos_reported(photo_folder, tmp_path, detector):
    report = crop_folder(photo_folder, tmp_path / "aligned", FaceCropper(detector, 112))
    assert report.written == 2
    assert report.no_face == [photo_folder / "bob" / "wall.png"]
    assert report.several_faces == [(photo_folder / "bob" / "pair.png", 2)]
    written = sorted(p.relative_to(tmp_path / "aligned").as_posix() for p in (tmp_path / "aligned").rglob("*.png"))
    assert written == ["ann/one.png", "bob/pair.png"]
    with Image.open(tmp_path / "aligned" / "ann" / "one.png") as crop:
        assert crop.size == (112, 112)
    assert "no face: " in report.summary() and "2 faces, largest taken" in report.summary()


def test_of_several_faces_the_largest_is_aligned(synthetic_portraits, scene, detector):
    a, b = synthetic_portraits
    crop = FaceCropper(detector, 112).crop(scene([(a, 120, (290, 20)), (b, 140, (10, 90))], size=(420, 240)))
    alone = FaceCropper(detector, 112).crop(scene([(b, 140, (10, 90))], size=(420, 240)))
    assert crop.faces_found == 2
    assert np.abs(crop.face.alignment_points - alone.face.alignment_points).max() < 3.0  # the other is ~200 px away


def test_a_photo_without_a_face_is_an_error_naming_it(tmp_path, detector):
    Image.new("RGB", (200, 150), (120, 120, 120)).save(tmp_path / "wall.png")
    with pytest.raises(NoFaceError, match="wall.png: no face"):
        FaceCropper(detector).crop_file(tmp_path / "wall.png")


def test_an_unreadable_photo_stops_the_folder_naming_it(photo_folder, tmp_path, detector):
    (photo_folder / "ann" / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    with pytest.raises(ImageInputError, match="broken.jpg"):
        crop_folder(photo_folder, tmp_path / "aligned", FaceCropper(detector))


def test_data_align_command_writes_crops_and_prints_the_report(photo_folder, tmp_path, capsys):
    assert main(["data", "align", str(photo_folder), str(tmp_path / "out"), "--size", "64"]) == 0
    printed = capsys.readouterr().out
    assert "2 aligned crops written; 1 photos without a face skipped" in printed
    with Image.open(tmp_path / "out" / "bob" / "pair.png") as crop:
        assert crop.size == (64, 64)


def test_data_align_refuses_an_output_inside_the_source(photo_folder, capsys):
    assert main(["data", "align", str(photo_folder), str(photo_folder / "aligned")]) == 2
    assert "outside the source folder" in capsys.readouterr().err


@pytest.mark.skipif(not (SHARED / "celeba_wild").is_dir(), reason="the real face sets in ../shared/data are absent")
def test_faces_are_found_in_real_in_the_wild_photos(detector):
    from nptface.on_device.images import load_photo

    photos = sorted((SHARED / "celeba_wild").glob("*/*"))[::577][:8]
    cropper = FaceCropper(detector)
    found = [cropper.crop(load_photo(path)) is not None for path in photos]
    assert sum(found) >= len(photos) - 1, f"faces found in {sum(found)} of {len(photos)} photos"


def test_two_photos_that_would_share_one_crop_are_refused_by_name(photo_folder, tmp_path, detector):
    (photo_folder / "ann" / "one.png").write_bytes((photo_folder / "ann" / "one.jpg").read_bytes())
    with pytest.raises(ValueError, match=r"one.jpg and .*one.png would both be cropped to"):
        crop_folder(photo_folder, tmp_path / "aligned", FaceCropper(detector))
