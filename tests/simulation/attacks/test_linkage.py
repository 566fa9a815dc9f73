"""The proxy-linkage attack: exact on templates, chance on noise, blind to identities outside the gallery,
and run as a round observer from the attacker's view."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from nptface.client.protocol import ClientSettings
from nptface.core.checkpoint import load_backbone
from nptface.server.federation.observer import ClientView, RoundView
from nptface.simulation.attacks.linkage import Gallery, LinkageAttack, build_gallery, held_out_sets, linkage_attack


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


@pytest.fixture(scope="module")
def round_setup(tiny_run):
    model, _ = load_backbone(tiny_run)
    settings = ClientSettings(
        num_clients=3,
        client_identities=9,
        images_per_identity=4,
        few_shot_share=0.0,
        eval_images=2,
        image_size=32,
        model_json=json.dumps(model.config.to_dict()),
    )
    backbone = {k: v.clone() for k, v in model.state_dict().items() if v.is_floating_point()}
    gallery = build_gallery(model.eval(), held_out_sets(settings))
    return settings, backbone, gallery


def _view(settings, backbone, sent_to: dict[int, tuple[list[str], np.ndarray]]) -> RoundView:
    return RoundView(2, settings, backbone, [ClientView(100 + p, p, ids, rows) for p, (ids, rows) in sent_to.items()])


def test_the_observer_attacks_from_the_attackers_view_only_when_it_was_sampled(round_setup):
    settings, backbone, gallery = round_setup
    names = sorted(set(gallery.identities))
    templates = np.stack([gallery.embeddings[[i == n for i in gallery.identities]].mean(0) for n in names])
    sent = (names + ["server-0"], np.concatenate([templates, np.ones((1, templates.shape[1]))]))
    metrics = LinkageAttack(partition=1)(_view(settings, backbone, {0: ([], np.zeros((0, 32))), 1: sent}))
    assert metrics["attack/rows"] == 9 and metrics["attack/chance"] == 1 / 9
    assert metrics["attack/rank1"] >= 0.5, "templates of the gallery's own photos are linked"
    assert LinkageAttack(partition=2)(_view(settings, backbone, {1: sent})) == {}, "the attacker was not sampled"


def test_a_backbone_embedding_photos_as_nan_leaves_the_round_unmeasured(round_setup):
    settings, backbone, _ = round_setup
    broken = {k: torch.full_like(v, -1.0) if k.endswith("running_var") else v for k, v in backbone.items()}
    assert LinkageAttack(partition=0)(_view(settings, broken, {0: (["x"], np.ones((1, 32)))})) == {}
