"""A real SuperNode's own ImageFolder (node config ``data-path``): split, named per node, refused clearly."""

from __future__ import annotations

import numpy as np
import pytest

from nptface.client.node_data import DATA_PATH, NodeDataError, data_path, node_datasets


def test_a_node_without_data_path_serves_its_partition_of_the_plan():
    assert data_path({"partition-id": 3}) is None


def test_an_empty_data_path_is_refused_naming_the_key():
    with pytest.raises(NodeDataError, match="node config 'data-path' is empty"):
        data_path({DATA_PATH: " "})


def test_the_last_images_of_each_identity_are_held_out_and_ids_are_prefixed_with_the_partition(tmp_path, face_folder):
    root = face_folder(tmp_path / "phone", {"alice": 5, "bob": 4})
    train, held_out = node_datasets(data_path({DATA_PATH: str(root)}), 17, 32, eval_images=2)
    assert train.class_names == ["partition-17/alice", "partition-17/bob"] and train.num_classes == 2
    assert np.bincount(train.labels).tolist() == [3, 2] and np.bincount(held_out.labels).tolist() == [2, 2]
    image, label = train[0]
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8 and label == 0


def test_a_one_owner_phone_with_few_selfies_trains_on_all_of_them(tmp_path, face_folder):
    root = face_folder(tmp_path / "phone", {"owner": 3})
    train, held_out = node_datasets(root, 4, 32, eval_images=2)
    assert train.class_names == ["partition-4/owner"] and len(train) == 3 and held_out is None


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        (None, "does not exist"),
        ({}, "holds 0 identity folder"),
        ({"owner": 1}, "1 image\\(s\\); expected at least 2 to train on"),
    ],
)
def test_a_missing_empty_or_too_small_folder_is_refused_naming_the_key_and_path(tmp_path, face_folder, layout, message):
    root = tmp_path / "phone"
    if layout is not None:
        face_folder(root, layout)
    with pytest.raises(NodeDataError, match=f"node config data-path={root}: .*{message}"):
        node_datasets(root, 0, 32, eval_images=2)
