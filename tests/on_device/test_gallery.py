"""The CLI gallery: templates extend exactly, survive a round trip, and refuse another model."""

from __future__ import annotations

import numpy as np
import pytest

from nptface.on_device.gallery import Gallery, GalleryError, load_gallery, save_gallery


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def test_enrolling_in_two_steps_equals_enrolling_at_once():
    rows = _unit(np.random.default_rng(0).normal(size=(3, 8)))
    once, twice = Gallery("m", "b", "v"), Gallery("m", "b", "v")
    once.enroll("ann", rows)
    twice.enroll("ann", rows[:2])
    assert twice.enroll("ann", rows[2:]) == 3
    np.testing.assert_allclose(twice.templates, once.templates, atol=1e-7)
    probe = rows[0]
    expected = float(rows.mean(0) @ probe / np.linalg.norm(rows.mean(0)))
    assert once.score("ann", probe) == pytest.approx(expected, abs=1e-6)


def test_identify_ranks_by_cosine_and_verify_refuses_unknown_names():
    rows = _unit(np.random.default_rng(1).normal(size=(4, 8)))
    gallery = Gallery("m", "b", "v")
    for name, row in zip("wxyz", rows, strict=True):
        gallery.enroll(name, row[None])
    top = gallery.top(rows[2], k=2)
    assert [m.name for m in top][0] == "y" and top[0].score == pytest.approx(1.0, abs=1e-6)
    assert top[0].score >= top[1].score
    with pytest.raises(GalleryError, match="'nobody' is not enrolled"):
        gallery.score("nobody", rows[0])


def test_gallery_round_trip_and_model_check(tmp_path):
    gallery = Gallery("a" * 64, "/bundles/x", "onnx-fp32")
    gallery.enroll("ann", _unit(np.ones((2, 4))))
    path = tmp_path / "g.npz"
    save_gallery(gallery, path)
    loaded = load_gallery(path)
    assert loaded.names == ["ann"] and loaded.counts == [2] and loaded.variant == "onnx-fp32"
    np.testing.assert_array_equal(loaded.templates, gallery.templates)
    loaded.check_model("a" * 64, "onnx-fp32", str(path))
    with pytest.raises(GalleryError, match="templates of different models are not comparable"):
        loaded.check_model("b" * 64, "onnx-fp32", str(path))


def test_a_pickled_or_foreign_npz_is_refused(tmp_path):
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, names=np.array([{"evil": 1}], dtype=object))
    with pytest.raises(GalleryError, match="not a readable gallery"):
        load_gallery(pickled)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, weights=np.zeros(3))
    with pytest.raises(GalleryError, match="missing fields"):
        load_gallery(foreign)


def test_an_embedding_of_another_size_is_a_clear_error_not_a_broadcast_failure():
    gallery = Gallery("m", "b", "v")
    gallery.enroll("ann", _unit(np.ones((2, 8))))
    with pytest.raises(GalleryError, match="size 16 do not match the gallery's templates of size 8"):
        gallery.score("ann", np.ones(16, np.float32))
    with pytest.raises(GalleryError, match="size 4 do not match"):
        gallery.enroll("bob", np.ones((1, 4), np.float32))
    with pytest.raises(GalleryError, match="size 4 do not match"):
        gallery.enroll("ann", np.ones((1, 4), np.float32))


def test_a_file_that_is_not_a_gallery_is_named_as_such(tmp_path):
    text = tmp_path / "people.npz"
    text.write_text("ann,bob\n")
    with pytest.raises(GalleryError, match="people.npz: not a gallery"):
        load_gallery(text)
