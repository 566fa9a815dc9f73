"""Specification of nptface.core.partitions: disjoint, seeded, skewed federated clients."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nptface.core.partitions import (
    ClientPartition,
    PartitionError,
    PartitionPlan,
    client_datasets,
    image_folder_plan,
    one_owner_plan,
    synthetic_plan,
)
from nptface.core.synthetic import CLIENT_IDS

ORL_FACES = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "orl_faces"


def all_identities(plan: PartitionPlan) -> list[str]:
    return [name for client in plan.clients for name in client.identities]


def write_image_folder(root: Path, images_per_identity: dict[str, int]) -> Path:
    """Each image is a flat colour unique to (identity, image), so pixels tell files apart."""
    for person, (name, count) in enumerate(images_per_identity.items()):
        (root / name).mkdir(parents=True)
        for number in range(count):
            Image.new("RGB", (16, 16), (10 * person, 20 * number, 7)).save(root / name / f"{number:02d}.png")
    return root


def test_synthetic_identities_are_disjoint_and_drawn_from_the_client_range() -> None:
    plan = synthetic_plan(num_clients=6, total_identities=60, seed=1, first_identity=500)

    names = all_identities(plan)
    ids = [int(name.removeprefix("synth-")) for name in names]
    assert len(set(names)) == len(names) == 60
    assert sorted(ids) == list(CLIENT_IDS[500:560])


def test_power_law_sizes_sum_exactly_are_skewed_and_respect_the_minimum() -> None:
    plan = synthetic_plan(num_clients=8, total_identities=200, alpha=1.5, min_identities=3, seed=0)

    sizes = [len(client.identities) for client in plan.clients]
    assert sum(sizes) == 200
    assert min(sizes) >= 3
    assert max(sizes) >= 3 * min(sizes)


def test_power_law_largest_client_is_not_always_the_first() -> None:
    largest = {
        int(np.argmax([len(c.identities) for c in synthetic_plan(8, 200, seed=seed).clients])) for seed in range(6)
    }

    assert len(largest) > 1


def test_equal_sizes_differ_by_at_most_one() -> None:
    sizes = [len(client.identities) for client in synthetic_plan(7, 50, sizes="equal").clients]

    assert sum(sizes) == 50 and max(sizes) - min(sizes) <= 1


def test_few_shot_clients_train_on_three_to_five_images_per_identity() -> None:
    plan = synthetic_plan(num_clients=8, total_identities=80, few_shot_share=0.25, images_per_identity=10, seed=2)

    few_shot = [client for client in plan.clients if client.few_shot]
    assert len(few_shot) == 2
    for client in plan.clients:
        if client.few_shot:
            assert all(3 <= count <= 5 for count in client.train_images)
        else:
            assert set(client.train_images) == {10}
    assert "few-shot" in plan.summary()


def test_domains_are_assigned_round_robin() -> None:
    plan = synthetic_plan(num_clients=6, total_identities=30, domains=("studio", "cctv-lowres", "wild"))

    assert sorted(client.domain for client in plan.clients) == sorted(["studio", "cctv-lowres", "wild"] * 2)


def test_same_seed_gives_the_same_plan_and_another_seed_a_different_one() -> None:
    assert synthetic_plan(5, 40, seed=3) == synthetic_plan(5, 40, seed=3)
    assert synthetic_plan(5, 40, seed=3) != synthetic_plan(5, 40, seed=4)


def test_plan_survives_a_json_round_trip() -> None:
    plan = synthetic_plan(4, 20, seed=9, domains=("studio", "wild"))

    assert PartitionPlan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan


def test_summary_has_one_line_per_client() -> None:
    plan = synthetic_plan(3, 12)

    lines = plan.summary().splitlines()
    assert [line.split(":")[0].strip() for line in lines[1:]] == ["client 0", "client 1", "client 2"]


def test_synthetic_client_train_and_eval_images_never_coincide() -> None:
    plan = synthetic_plan(num_clients=2, total_identities=6, few_shot_share=0.5, images_per_identity=4, eval_images=2)
    client = next(client for client in plan.clients if client.few_shot)

    train, evaluation = client_datasets(plan, client.partition_id, image_size=32)

    assert train.class_names == evaluation.class_names == list(client.identities)
    assert np.bincount(train.labels).tolist() == list(client.train_images)
    assert np.bincount(evaluation.labels).tolist() == [2] * len(client.identities)
    train_pixels = [train[i][0] for i in range(len(train))]
    for i in range(len(evaluation)):
        image, label = evaluation[i]
        assert image.shape == (32, 32, 3) and image.dtype == np.uint8 and label == evaluation.labels[i]
        assert not any(np.array_equal(image, seen) for seen in train_pixels)
    assert [train[i][1] for i in range(len(train))] == train.labels.tolist()


def test_zero_eval_images_gives_no_eval_dataset() -> None:
    plan = synthetic_plan(2, 4, images_per_identity=2, eval_images=0, few_shot_share=0.0)

    train, evaluation = client_datasets(plan, 1, image_size=32)
    assert evaluation is None and len(train) == 2 * len(plan.clients[1].identities)


def test_image_folder_plan_holds_out_the_last_images_and_skips_identities_with_too_few(tmp_path: Path) -> None:
    counts = {"ann": 4, "ben": 5, "cat": 3, "dan": 4, "eve": 2, "fay": 6}
    root = write_image_folder(tmp_path / "faces", counts)

    plan = image_folder_plan(root, num_clients=2, eval_images=2, seed=1)

    assert plan.skipped == ("eve",)
    assert "eve" in plan.summary()
    assert sorted(all_identities(plan)) == ["ann", "ben", "cat", "dan", "fay"]
    for client in plan.clients:
        assert client.domain == "imagefolder"
        assert list(client.train_images) == [counts[name] - 2 for name in client.identities]
        train, evaluation = client_datasets(plan, client.partition_id, image_size=16)
        assert train.class_names == list(client.identities)
        for k, name in enumerate(client.identities):
            person = list(counts).index(name)
            held_out = [evaluation[i][0][0, 0, 1] for i in np.flatnonzero(evaluation.labels == k)]
            trained = [train[i][0][0, 0, 1] for i in np.flatnonzero(train.labels == k)]
            assert all(evaluation[i][0][0, 0, 0] == 10 * person for i in np.flatnonzero(evaluation.labels == k))
            assert trained == [20 * n for n in range(counts[name] - 2)]
            assert held_out == [20 * n for n in range(counts[name] - 2, counts[name])]


def test_client_datasets_fail_when_the_folder_no_longer_matches_the_plan(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "faces", {"ann": 3, "ben": 3, "cat": 3, "dan": 3})
    plan = image_folder_plan(root, num_clients=2, eval_images=1)
    name = plan.clients[0].identities[0]
    (root / name / "00.png").unlink()

    with pytest.raises(PartitionError, match=name):
        client_datasets(plan, 0, image_size=16)


@pytest.mark.skipif(not ORL_FACES.is_dir(), reason="ORL faces not present under ../shared/data/orl_faces")
def test_orl_faces_split_into_four_clients_of_ten_people() -> None:
    plan = image_folder_plan(ORL_FACES, num_clients=4, eval_images=2)

    assert [len(client.identities) for client in plan.clients] == [10] * 4
    assert len(set(all_identities(plan))) == 40 and plan.skipped == ()
    train, evaluation = client_datasets(plan, 3, image_size=32)
    assert (len(train), len(evaluation)) == (80, 20)
    assert train[0][0].shape == (32, 32, 3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_clients": 10, "total_identities": 15}, "min_identities"),
        ({"num_clients": 0, "total_identities": 15}, "num_clients"),
        ({"num_clients": 2, "total_identities": 8, "domains": ("moon",)}, "moon"),
        ({"num_clients": 2, "total_identities": 8, "sizes": "random"}, "sizes"),
        ({"num_clients": 2, "total_identities": 8, "first_identity": len(CLIENT_IDS) - 4}, "first_identity"),
        ({"num_clients": 2, "total_identities": 8, "few_shot_images": (5, 3)}, "few_shot_images"),
        ({"num_clients": 2, "total_identities": 8, "few_shot_share": 1.5}, "few_shot_share"),
        ({"num_clients": 2, "total_identities": 8, "min_identities": 1}, "min_identities"),
    ],
)
def test_impossible_synthetic_requests_raise_a_named_partition_error(kwargs: dict, message: str) -> None:
    with pytest.raises(PartitionError, match=message):
        synthetic_plan(**kwargs)


def test_unknown_partition_id_names_the_id_and_the_client_count() -> None:
    plan = synthetic_plan(3, 9)

    with pytest.raises(PartitionError, match=r"partition_id 7 .* 3 clients"):
        client_datasets(plan, 7, image_size=32)


def test_image_folder_with_too_few_usable_identities_is_an_error(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "faces", {"ann": 3, "ben": 3, "cat": 1})

    with pytest.raises(PartitionError, match="min_identities"):
        image_folder_plan(root, num_clients=2, eval_images=1)


def test_a_plan_whose_clients_share_an_identity_is_rejected() -> None:
    shared = ClientPartition(0, ("a", "b"), "studio", (3, 3), 1)
    overlapping = ClientPartition(1, ("b", "c"), "studio", (3, 3), 1)

    with pytest.raises(PartitionError, match="disjoint"):
        PartitionPlan("synthetic", 0, (shared, overlapping))


@pytest.mark.skipif(not ORL_FACES.is_dir(), reason="ORL faces not present under ../shared/data/orl_faces")
def test_held_out_identities_go_to_no_client_and_survive_json() -> None:
    plan = image_folder_plan(ORL_FACES, num_clients=4, eval_images=2, held_out_identities=10)
    assert len(plan.held_out) == 10
    assert not set(plan.held_out) & {name for client in plan.clients for name in client.identities}
    assert sum(len(client.identities) for client in plan.clients) == 30
    assert PartitionPlan.from_dict(plan.to_dict()) == plan
    with pytest.raises(PartitionError, match="leaves no identity"):
        image_folder_plan(ORL_FACES, num_clients=4, held_out_identities=40)


def test_one_owner_plan_gives_each_device_one_distinct_owner_and_a_power_law_image_count() -> None:
    plan = one_owner_plan(400, seed=3, min_images=3, max_images=20, power=1.5)

    assert all(len(device.identities) == 1 for device in plan.clients)
    assert len(set(all_identities(plan))) == 400
    counts = np.array([device.train_images[0] for device in plan.clients])
    assert counts.min() >= 3 and counts.max() <= 20
    # P(n) ~ n^-1.5 on [3, 20]: three images is the commonest count, and many devices hold more than ten.
    assert np.bincount(counts).argmax() == 3 and 10 < np.count_nonzero(counts > 10) < 200
    assert {device.domain for device in plan.clients} == {"phone-lowlight", "cctv-lowres"}
    assert PartitionPlan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan
    assert one_owner_plan(400, seed=3) == plan and one_owner_plan(400, seed=4) != plan


def test_a_one_owner_device_trains_on_its_owner_alone_and_holds_out_other_renders() -> None:
    plan = one_owner_plan(3, seed=0, min_images=4, max_images=4, eval_images=2, domains=("phone-lowlight",))

    train, evaluation = client_datasets(plan, 1, image_size=32)

    owner = list(plan.clients[1].identities)
    assert train.class_names == evaluation.class_names == owner and train.num_classes == evaluation.num_classes == 1
    assert train.labels.tolist() == [0] * 4 and evaluation.labels.tolist() == [0, 0]
    train_pixels = [train[i][0] for i in range(len(train))]
    assert not any(np.array_equal(evaluation[i][0], seen) for i in range(2) for seen in train_pixels)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_devices": 1}, "num_devices must be an int >= 2"),
        ({"num_devices": 4, "min_images": 5, "max_images": 4}, "min_images and max_images"),
        ({"num_devices": 4, "domains": ("moon",)}, "unknown ['moon']"),
    ],
)
def test_impossible_one_owner_requests_raise_a_named_partition_error(kwargs: dict, message: str) -> None:
    with pytest.raises(PartitionError, match=re.escape(message)):
        one_owner_plan(**kwargs)
