"""The real-faces split: no held-out person is ever trained on, and sources that number their
people alike cannot merge into one identity."""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "prepare_real_faces.py"


@pytest.fixture(scope="module")
def prepare():
    spec = importlib.util.spec_from_file_location("prepare_real_faces", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def person(root: Path, name: str, images: int = 2) -> None:
    (root / name).mkdir(parents=True)
    for index in range(images):
        (root / name / f"{index}.png").write_bytes(b"png")


def test_held_out_orl_and_glint_people_never_reach_training(prepare, tmp_path):
    aligned, glint = tmp_path / "aligned", tmp_path / "glint"
    for source in ("celeba", "feret", "ar", "gt", "muct", "orl"):
        for index in range(10):
            person(aligned / source, f"{index:03d}")
    person(glint, "g1")
    (aligned / "feret" / "empty").mkdir()  # every photo of this person had no face

    parts = prepare.split_parts(aligned, glint, heldout=3, seed=0)

    heldout = set(parts["celeba-heldout"])
    assert len(heldout) == 3 and heldout <= {f"{i:03d}" for i in range(10)}
    assert {f"celeba-{p}" for p in heldout}.isdisjoint(parts["train"])
    assert len(parts["train"]) == 7 + 4 * 10  # celeba minus held out, four lowres sources; no empty folder
    assert not any(name.startswith(("orl", "g1")) for name in parts["train"])
    assert {
        "feret-000",
        "ar-000",
        "gt-000",
        "muct-000",
        "celeba-" + min(set(f"{i:03d}" for i in range(10)) - heldout),
    } <= set(parts["train"])
    assert parts["celeba-heldout"] == prepare.split_parts(aligned, glint, heldout=3, seed=0)["celeba-heldout"]
    assert set(parts["orl"]) == {f"{i:03d}" for i in range(10)} and set(parts["glint"]) == {"g1"}


def test_holding_out_every_celeba_person_is_refused_with_the_count(prepare, tmp_path):
    person(tmp_path / "aligned" / "celeba", "001")
    with pytest.raises(ValueError, match="only 1 people"):
        prepare.split_parts(tmp_path / "aligned", tmp_path / "glint", heldout=1, seed=0)


def test_a_rerun_replaces_the_links_and_keeps_what_it_did_not_make(prepare, tmp_path):
    person(tmp_path / "src", "a")
    person(tmp_path / "src", "b")
    part = tmp_path / "part"
    prepare.link_part(part, {"a": tmp_path / "src" / "a", "b": tmp_path / "src" / "b"})
    prepare.link_part(part, {"b": tmp_path / "src" / "b"})
    assert sorted(p.name for p in part.iterdir()) == ["b"] and (part / "b" / "0.png").is_file()
    (part / "mine").mkdir()
    with pytest.raises(FileExistsError, match="mine"):
        prepare.link_part(part, {})
