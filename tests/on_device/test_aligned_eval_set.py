"""Specification of ``nptface eval --align`` (nptface.on_device.aligned_eval_set): photos in, faces scored.

The photos are real faces (ORL, 92x112 greyscale crops) pasted at random places and sizes onto a
larger backdrop; the same tiny trained model scores the original crops and the aligned photos.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nptface.cli import main

ORL = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "orl_faces"
PEOPLE = [f"s{number}" for number in range(3, 23)]
IMAGES = range(1, 6)
ACCURACY = re.compile(r"accuracy \(cosine\)[^0-9]*([0-9.]+)")

pytestmark = pytest.mark.skipif(not ORL.is_dir(), reason="the real faces ../shared/data/orl_faces are absent")


@pytest.fixture(scope="module")
def orl_sets(tmp_path_factory, scene) -> tuple[Path, Path]:
    """(crops, photos): 20 ORL people x 5 images as they come, and each pasted into a 256x224 photo (JPEG)."""
    root = tmp_path_factory.mktemp("orl")
    rng = np.random.default_rng(7)
    for person in PEOPLE:
        (root / "crops" / person).mkdir(parents=True)
        (root / "photos" / person).mkdir(parents=True)
        for number in IMAGES:
            shutil.copy(ORL / person / f"{number}.pgm", root / "crops" / person)
            face = Image.open(ORL / person / f"{number}.pgm")
            height = int(rng.integers(100, 150))
            at = (int(rng.integers(0, 256 - height)), int(rng.integers(0, 224 - height)))
            scene([(face, height, at)], size=(256, 224)).save(root / "photos" / person / f"{number}.jpg", quality=95)
    return root / "crops", root / "photos"


def _accuracy(printed: str) -> float:
    return float(ACCURACY.search(printed).group(1))


def _eval(run: Path, data: Path, out: Path, *options: str) -> int:
    return main(["eval", "--run", str(run), "--data", str(data), "--out", str(out), *options])


def test_aligned_photos_score_like_the_original_crops_and_far_above_unaligned_ones(
    tiny_run, orl_sets, tmp_path, capsys
):
    crops, photos = orl_sets  # the same people in the same order: both draw the same 400 pairs
    assert _eval(tiny_run, crops, tmp_path / "crops.json") == 0
    on_crops = _accuracy(capsys.readouterr().out)
    assert _eval(tiny_run, photos, tmp_path / "aligned.json", "--align") == 0
    printed = capsys.readouterr().out
    aligned = _accuracy(printed)
    assert _eval(tiny_run, photos, tmp_path / "unaligned.json") == 0
    unaligned = _accuracy(capsys.readouterr().out)
    # Measured: 73.5 % on the crops, 70.8 to 72.5 % aligned (four placements), 58.8 % unaligned.
    assert abs(aligned - on_crops) <= 5.0
    assert aligned >= unaligned + 5.0
    assert "largest face): all 100 photos" in printed and "100 aligned faces, 400 pairs" in printed
    metrics = json.loads((tmp_path / "aligned.json").read_text())
    assert metrics["alignment"]["aligned"] == 100 and metrics["alignment"]["pairs_kept"] == 400
    assert "alignment" not in json.loads((tmp_path / "crops.json").read_text())


def test_photos_without_a_face_are_left_out_with_their_pairs_and_named(tiny_run, orl_sets, scene, tmp_path, capsys):
    photos = tmp_path / "photos"
    shutil.copytree(orl_sets[1], photos)
    scene([], size=(256, 224)).save(photos / "s3" / "blank.jpg", quality=95)
    assert _eval(tiny_run, photos, tmp_path / "m.json", "--align") == 0
    printed = capsys.readouterr().out
    assert "100 of 101 photos; 1 without a face left out, with the " in printed
    assert printed.split("\n")[0].endswith(": s3/blank.jpg")
    alignment = json.loads((tmp_path / "m.json").read_text())["alignment"]
    assert alignment["no_face"] == ["s3/blank.jpg"] and alignment["no_face_count"] == 1
    assert alignment["pairs_dropped"] >= 5  # every genuine pair is drawn: blank.jpg makes 5 with s3's photos
    assert f"100 aligned faces, {alignment['pairs_kept']} pairs" in printed


def test_a_pairs_file_names_the_photos_and_loses_only_the_pairs_of_a_photo_without_a_face(
    tiny_run, orl_sets, scene, tmp_path, capsys
):
    photos = tmp_path / "photos"
    shutil.copytree(orl_sets[1], photos)
    scene([], size=(256, 224)).save(photos / "s3" / "blank.jpg", quality=95)
    genuine = [f"{p}/1.jpg {p}/{n}.jpg 1" for p in PEOPLE for n in (2, 3)]
    impostor = [f"{p}/1.jpg {q}/2.jpg 0" for p, q in zip(PEOPLE, PEOPLE[1:] + PEOPLE[:1])]
    lines = [*genuine, *impostor, "s3/blank.jpg s3/2.jpg 1", "s3/blank.jpg s4/2.jpg 0"]
    (tmp_path / "pairs.txt").write_text("\n".join(lines) + "\n")
    assert _eval(tiny_run, photos, tmp_path / "m.json", "--align", "--pairs", str(tmp_path / "pairs.txt")) == 0
    alignment = json.loads((tmp_path / "m.json").read_text())["alignment"]
    assert (alignment["pairs_kept"], alignment["pairs_dropped"]) == (60, 2)
    assert "100 aligned faces, 60 pairs" in capsys.readouterr().out


def test_a_folder_without_any_face_is_an_error_naming_it(tiny_run, scene, tmp_path, capsys):
    for person in ("ann", "bob"):
        (tmp_path / "walls" / person).mkdir(parents=True)
        for index in range(2):
            scene([], size=(200, 160)).save(tmp_path / "walls" / person / f"{index}.png")
    assert _eval(tiny_run, tmp_path / "walls", tmp_path / "m.json", "--align") == 2
    assert f"{tmp_path / 'walls'}: no face found in any of its 4 photos" in capsys.readouterr().err
    assert not (tmp_path / "m.json").exists()


def test_align_is_refused_for_a_verification_bin(tiny_run, tmp_path):
    with pytest.raises(SystemExit, match="a .bin holds aligned crops"):
        main(["eval", "--run", str(tiny_run), "--bin", str(tmp_path / "x.bin"), "--align"])
