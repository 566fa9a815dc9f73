"""The proxy-linkage attack: exact on templates, chance on noise, blind to identities outside the gallery."""

from __future__ import annotations

import numpy as np

from nptface.simulation.attacks.linkage import Gallery, linkage_attack


def _gallery(n_ids=40, per_id=3, dim=32, spread=0.3, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_ids, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    photos = np.repeat(centres, per_id, axis=0) + spread * rng.normal(size=(n_ids * per_id, dim)) / np.sqrt(dim)
    photos /= np.linalg.norm(photos, axis=1, keepdims=True)
    names = [f"p{i}" for i in range(n_ids) for _ in range(per_id)]
    return Gallery(photos.astype(np.float32), names), centres, [f"p{i}" for i in range(n_ids)]


def test_raw_templates_are_linked_to_their_person():
    gallery, centres, names = _gallery()
    result = linkage_attack(centres, names, gallery)
    assert result.rows == 40 and result.rank1 == 1.0 and result.chance == 1 / 40


def test_random_rows_link_at_about_chance():
    gallery, _, names = _gallery(n_ids=40)
    rng = np.random.default_rng(5)
    hits = [linkage_attack(rng.normal(size=(40, 32)), names, gallery).rank1 for _ in range(20)]
    assert np.mean(hits) < 1 / 40 + 0.03


def test_rows_of_identities_outside_the_gallery_are_not_counted():
    gallery, centres, names = _gallery()
    result = linkage_attack(centres[:3], ["public-1", "public-2", names[2]], gallery)
    assert result.rows == 1 and result.hits == 1
    empty = linkage_attack(centres[:0], [], gallery)
    assert empty.rows == 0 and "attack/rank1" not in empty.to_metrics()
