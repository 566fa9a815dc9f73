"""The injected attackers used by the robustness table behave as documented."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nptface.simulation.attacks.poison import SCALE, FlippedLabels, parse_poison, poison_update


class _Toy:
    def __init__(self, labels, num_classes):
        self.labels = np.asarray(labels)
        self.num_classes = num_classes
        self.class_names = [f"id{i}" for i in range(num_classes)]

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return torch.zeros(1), int(self.labels[index])


def test_poison_spec_is_parsed_and_bad_specs_name_the_item():
    assert parse_poison("scale:0, noise:1,flip:2") == {0: "scale", 1: "noise", 2: "flip"}
    assert parse_poison("") == {}
    with pytest.raises(ValueError, match="'boost:1'"):
        parse_poison("boost:1")
    with pytest.raises(ValueError, match="twice"):
        parse_poison("scale:1,flip:1")


def test_flipped_labels_give_no_identity_its_own_photos():
    data = _Toy(np.repeat(np.arange(7), 3), 7)
    flipped = FlippedLabels(data, seed=3)
    assert sorted(flipped.mapping.tolist()) == list(range(7)), "a permutation of the identities"
    assert (flipped.mapping != np.arange(7)).all(), "a derangement: nobody keeps their label"
    assert [flipped[i][1] for i in range(len(data))] == flipped.labels.tolist()


def test_scaled_update_is_100x_the_honest_one():
    base = {"w": torch.ones(3)}
    honest = {"w": torch.tensor([1.1, 1.0, 0.9])}
    weights, rows = poison_update("scale", honest, base, np.eye(2, 4, dtype=np.float32), seed=0)
    torch.testing.assert_close(weights["w"] - base["w"], SCALE * (honest["w"] - base["w"]))
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), SCALE)


def test_noise_update_is_unrelated_to_the_honest_one():
    base = {"w": torch.linspace(-1, 1, 1000)}
    weights, rows = poison_update("noise", {"w": base["w"].clone()}, base, np.eye(2, 8, dtype=np.float32), seed=0)
    assert abs(torch.corrcoef(torch.stack([weights["w"], base["w"]]))[0, 1]) < 0.1
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, rtol=1e-5)
