"""``nptface enroll / verify / identify`` on onnxruntime and LiteRT."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from nptface.cli import main
from nptface.edge_export.bundle import load_bundle
from nptface.on_device.gallery import load_gallery

SCORE_LINE = re.compile(r"cosine = (-?\d\.\d{4})  threshold\(export, FAR=1e-3\) = (\d\.\d{4})  -> (match|no match)$")


def _expected_score(bundle_dir, variant, enrolled, probe) -> float:
    """The template score recomputed by hand: mean of unit embeddings, renormalised, dot the probe."""
    from PIL import Image

    from nptface.core.preprocess import to_rgb_array

    bundle = load_bundle(bundle_dir)
    faces = np.stack([to_rgb_array(Image.open(p), bundle.input_size) for p in [*enrolled, probe]])
    embeddings = bundle.embedder(variant).embed(faces).astype(np.float64)
    template = embeddings[:-1].mean(0)
    return float(template @ embeddings[-1] / np.linalg.norm(template))


@pytest.mark.parametrize(("runtime", "variant"), [("onnxruntime", "onnx-fp32"), ("litert", "tflite-fp32")])
def test_enroll_verify_identify_on_each_runtime(runtime, variant, fp32_bundle, faces, tmp_path, capsys):
    gallery = tmp_path / "g.npz"
    device = ["--runtime", runtime, "--no-align"]  # the files are ready crops
    assert (
        main(
            [
                "enroll",
                "--bundle",
                str(fp32_bundle),
                "--gallery",
                str(gallery),
                "--name",
                "ann",
                *map(str, faces["a"][:2]),
                *device,
            ]
        )
        == 0
    )
    assert main(["enroll", "--gallery", str(gallery), "--name", "bob", *map(str, faces["b"][:2]), *device]) == 0
    out = capsys.readouterr().out
    assert f"variant {variant} on {runtime}" in out  # the bundle's only variant of that format
    assert load_gallery(gallery).counts == [2, 2]

    threshold = load_bundle(fp32_bundle).threshold(1e-3)
    for probe, claimed in ((faces["a"][2], "ann"), (faces["b"][2], "ann")):
        code = main(["verify", "--gallery", str(gallery), "--name", claimed, str(probe), *device])
        score, printed_threshold, decision = SCORE_LINE.search(capsys.readouterr().out.strip()).groups()
        expected = _expected_score(fp32_bundle, variant, faces["a"][:2], probe)
        assert float(score) == pytest.approx(expected, abs=1e-4)
        assert float(printed_threshold) == pytest.approx(threshold, abs=1e-4)
        assert decision == ("match" if expected >= threshold else "no match")
        assert code == (0 if decision == "match" else 1)  # the exit status carries the decision

    assert main(["identify", "--gallery", str(gallery), str(faces["b"][2]), *device]) in (0, 1)
    ranking = re.findall(r"\d\. (\w+)  cosine = (-?\d\.\d{4})", capsys.readouterr().out)
    assert [name for name, _ in ranking] == ["bob", "ann"]
    assert float(ranking[0][1]) >= float(ranking[1][1])


def test_the_demo_images_give_a_match_and_a_no_match(fp32_bundle, faces, capsys):
    """The browser test's premise, checked on the CLI: genuine above the FAR=1e-3 threshold, impostor below."""
    args = ["--bundle", str(fp32_bundle), "--variant", "onnx-fp32", "--no-align"]
    assert main(["verify", *args, str(faces["a"][0]), str(faces["a"][2])]) == 0
    assert main(["verify", *args, str(faces["a"][0]), str(faces["b"][2])]) == 1
    decisions = [m.group(3) for m in map(SCORE_LINE.search, capsys.readouterr().out.strip().splitlines()[1::2])]
    assert decisions == ["match", "no match"]


def test_litert_and_onnxruntime_agree_on_a_pair(fp32_bundle, faces, capsys):
    scores = []
    for runtime in ("onnxruntime", "litert"):
        assert (
            main(
                [
                    "verify",
                    "--bundle",
                    str(fp32_bundle),
                    "--runtime",
                    runtime,
                    "--no-align",
                    str(faces["a"][0]),
                    str(faces["b"][1]),
                ]
            )
            == 1
        )
        scores.append(float(SCORE_LINE.search(capsys.readouterr().out.strip()).group(1)))
    assert scores[0] == pytest.approx(scores[1], abs=2e-4)


def test_bad_images_and_wrong_variants_fail_clearly_and_store_nothing(fp32_bundle, faces, tmp_path, capsys):
    from PIL import Image

    gallery = tmp_path / "g.npz"
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (8, 8)).save(tiny)
    base = ["enroll", "--bundle", str(fp32_bundle), "--gallery", str(gallery), "--name", "ann", "--no-align"]
    assert main([*base, str(faces["a"][0]), str(text)]) == 2
    assert "notes.png: not a decodable image" in capsys.readouterr().err
    assert main([*base, str(tiny)]) == 2
    assert "8x8 px is too small" in capsys.readouterr().err
    assert not gallery.exists()
    assert main([*base, "--runtime", "litert", "--variant", "onnx-fp32", str(faces["a"][0])]) == 2
    assert "variant 'onnx-fp32' is onnx; --runtime litert runs tflite variants" in capsys.readouterr().err


def test_a_gallery_of_another_model_is_refused(fp32_bundle, faces, tmp_path, capsys):
    from nptface.on_device.gallery import Gallery, save_gallery

    gallery = tmp_path / "other.npz"
    other = Gallery("0" * 64, str(fp32_bundle), "onnx-fp32")
    other.enroll("ann", np.eye(1, load_bundle(fp32_bundle).manifest["embedding"]["size"], dtype=np.float32))
    save_gallery(other, gallery)
    assert main(["identify", "--gallery", str(gallery), str(faces["a"][2])]) == 2
    assert "templates of different models are not comparable" in capsys.readouterr().err


def test_identify_json_lists_the_ranking_and_its_exit_status_says_whether_anyone_matched(
    fp32_bundle, faces, tmp_path, capsys
):
    import json

    gallery = tmp_path / "g.npz"
    for name, person in (("ann", "a"), ("bob", "b")):
        main(
            [
                "enroll",
                "--bundle",
                str(fp32_bundle),
                "--gallery",
                str(gallery),
                "--name",
                name,
                "--no-align",
                *map(str, faces[person][:2]),
            ]
        )
    capsys.readouterr()
    probe = ["identify", "--gallery", str(gallery), str(faces["b"][2]), "--json", "--no-align"]
    assert main([*probe, "--threshold", "-1"]) == 0
    result = json.loads(capsys.readouterr().out)  # stdout holds the JSON alone; "model: ..." goes to stderr
    assert [m["name"] for m in result["matches"]] == ["bob", "ann"] and result["decision"] == "match"
    assert result["matches"][0]["score"] >= result["matches"][1]["score"] and result["threshold"] == -1.0
    assert main([*probe, "--threshold", "1"]) == 1
    assert json.loads(capsys.readouterr().out)["matches"][0]["match"] is False


def test_usage_errors_exit_2_not_1_which_means_no_match(fp32_bundle, faces, capsys):
    assert main(["verify", "--bundle", str(fp32_bundle), str(faces["a"][0])]) == 2
    assert "give two images" in capsys.readouterr().err
    assert main(["verify", str(faces["a"][0]), str(faces["a"][1])]) == 2
    assert "give --bundle" in capsys.readouterr().err
    assert (
        main(["verify", "--bundle", str(fp32_bundle), "--no-align", "--threshold", "1.5", *map(str, faces["a"][:2])])
        == 2
    )
    assert "--threshold is a cosine in [-1, 1]" in capsys.readouterr().err
    ready = ["--no-align", *map(str, faces["a"][:2])]
    assert main(["verify", "--bundle", str(fp32_bundle), "--operating-point", "nope", *ready]) == 2
    assert "no operating point 'nope'; available: ['export']" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:  # argparse's own errors use 2 as well
        main(["verify", "--far", "often", "x", "y"])
    assert exit_info.value.code == 2


def test_with_align_a_face_moved_within_a_photo_still_matches_itself(
    fp32_bundle, synthetic_portraits, tmp_path, capsys
):
    from PIL import Image

    for name, at in (("left.png", (20, 30)), ("right.png", (170, 110))):
        photo = Image.new("RGB", (300, 240), (60, 80, 90))
        photo.paste(synthetic_portraits[0], at)
        photo.save(tmp_path / name)
    scores = {}
    for align in ("--align", "--no-align"):
        pair = [str(tmp_path / "left.png"), str(tmp_path / "right.png")]
        assert main(["verify", "--bundle", str(fp32_bundle), align, *pair]) in (0, 1)  # match, no match
        scores[align] = float(SCORE_LINE.search(capsys.readouterr().out.strip()).group(1))
    assert scores["--align"] > 0.9 > scores["--no-align"]


def test_with_align_a_photo_without_a_face_is_an_error_naming_it(fp32_bundle, synthetic_portraits, tmp_path, capsys):
    from PIL import Image

    synthetic_portraits[0].save(tmp_path / "face.png")
    Image.new("RGB", (200, 160), (120, 120, 120)).save(tmp_path / "wall.png")
    pair = [str(tmp_path / "face.png"), str(tmp_path / "wall.png")]
    assert main(["verify", "--bundle", str(fp32_bundle), *pair]) == 2
    assert "wall.png: no face found" in capsys.readouterr().err


def test_with_align_the_bundles_own_detector_runs_and_an_old_bundle_falls_back_to_nptfaces(
    fp32_bundle, synthetic_portraits, tmp_path, capsys
):
    import json
    import shutil

    from nptface.on_device.face_detection import model_path
    from nptface.on_device.runtime import open_model

    for runtime in ("onnxruntime", "litert"):
        detector = open_model(fp32_bundle, runtime, align=True).cropper.detector
        assert detector.path.parent == fp32_bundle / "detector" and detector.runtime == runtime
    old = tmp_path / "old"
    shutil.copytree(fp32_bundle, old, ignore=shutil.ignore_patterns("detector"))
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest["detector"]
    manifest["files"] = {name: entry for name, entry in manifest["files"].items() if not name.startswith("detector/")}
    (old / "manifest.json").write_text(json.dumps(manifest))
    assert open_model(old, align=True).cropper.detector.path == model_path("onnxruntime")
    pair = []
    for index, portrait in enumerate(synthetic_portraits):
        portrait.save(tmp_path / f"{index}.png")
        pair.append(str(tmp_path / f"{index}.png"))
    assert main(["verify", "--bundle", str(old), *pair]) in (0, 1)  # match, no match
    assert "nptface's detector: the bundle ships none" in capsys.readouterr().out
    assert main(["verify", "--bundle", str(fp32_bundle), *pair]) in (0, 1)
    assert "faces detected (the bundle's detector) and aligned" in capsys.readouterr().out


def test_a_bundle_detector_this_nptface_cannot_decode_is_refused_by_name(fp32_bundle, tmp_path):
    import json
    import shutil

    from nptface.edge_export.bundle import BundleError
    from nptface.on_device.runtime import open_model

    copy = tmp_path / "b"
    shutil.copytree(fp32_bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["detector"]["name"] = "retinaface"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert open_model(copy, align=False).cropper is None  # ready crops need no detector
    with pytest.raises(BundleError, match="field 'detector' names 'retinaface' at 192 px; this nptface runs"):
        open_model(copy, align=True)


ORL = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "orl_faces"


@pytest.fixture(params=["synthetic", "orl"])
def two_person_gallery(request, fp32_bundle, synthetic_portraits, tmp_path):
    """ann and bob enrolled from one photo each (detected and aligned), and a photo with both of them.

    The faces are the synthetic portraits, or real ones: ORL's people s3 and s4 (92x112 greyscale),
    whom the tiny test model (trained on 32 px renders) tells apart by a wide margin (cosine 0.999
    to oneself, 0.94 to the other; it barely separates s1 from s2).
    """
    from PIL import Image

    if request.param == "synthetic":
        portraits = synthetic_portraits
    elif not ORL.is_dir():
        pytest.skip("the real faces ../shared/data/orl_faces are absent")
    else:
        portraits = [Image.open(ORL / person / "1.pgm").convert("RGB") for person in ("s3", "s4")]
    gallery = tmp_path / "g.npz"
    for name, portrait in zip(("ann", "bob"), portraits):
        photo = Image.new("RGB", (300, 240), (60, 80, 90))
        photo.paste(portrait, (90, 60))
        photo.save(tmp_path / f"{name}.png")
        enroll = ["enroll", "--bundle", str(fp32_bundle), "--gallery", str(gallery), "--name", name]
        assert main([*enroll, str(tmp_path / f"{name}.png")]) == 0
    photo = Image.new("RGB", (420, 240), (60, 80, 90))
    ann = portraits[0]
    photo.paste(ann.resize((round(ann.width * 150 / ann.height), 150)), (10, 40))  # the larger face, found first
    photo.paste(portraits[1], (290, 60))
    photo.save(tmp_path / "two.png")
    return gallery, tmp_path / "two.png"


def test_identify_all_faces_gives_one_ranking_per_face_with_its_box(two_person_gallery, capsys):
    import json

    gallery, photo = two_person_gallery
    capsys.readouterr()
    code = main(["identify", "--gallery", str(gallery), "--all-faces", "--json", str(photo)])
    result = json.loads(capsys.readouterr().out)
    assert [face["matches"][0]["name"] for face in result["faces"]] == ["ann", "bob"]  # largest first
    (x0, _, x1, _), (x2, _, _, _) = (face["box"] for face in result["faces"])
    assert 0 <= x0 < x1 < 200 < x2  # ann pasted at x 10-160, bob at 290-402
    assert result["match"] == any(face["match"] for face in result["faces"])
    assert code == (0 if result["match"] else 1)

    assert main(["identify", "--gallery", str(gallery), "--all-faces", "--threshold", "1", str(photo)]) == 1
    printed = capsys.readouterr().out
    assert "2 face(s), largest first" in printed and "face 1 at box" in printed and "face 2 at box" in printed


def test_identify_without_all_faces_takes_the_largest_face_and_says_so(two_person_gallery, capsys, caplog):
    import json

    gallery, photo = two_person_gallery
    capsys.readouterr()
    assert main(["identify", "--gallery", str(gallery), "--json", "--threshold", "-1", str(photo)]) == 0
    assert json.loads(capsys.readouterr().out)["matches"][0]["name"] == "ann"
    assert "two.png: 2 faces found; using the largest" in caplog.text  # a warning on stderr outside pytest


def test_identify_all_faces_needs_the_detector_and_a_face(two_person_gallery, tmp_path, capsys):
    from PIL import Image

    gallery, photo = two_person_gallery
    assert main(["identify", "--gallery", str(gallery), "--all-faces", "--no-align", str(photo)]) == 2
    assert "--all-faces finds the faces in a photo" in capsys.readouterr().err
    Image.new("RGB", (200, 160), (120, 120, 120)).save(tmp_path / "wall.png")
    assert main(["identify", "--gallery", str(gallery), "--all-faces", str(tmp_path / "wall.png")]) == 2
    assert "wall.png: no face found" in capsys.readouterr().err
