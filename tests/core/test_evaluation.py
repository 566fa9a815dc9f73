"""Embedding and evaluating a backbone on a held-out set."""

from __future__ import annotations

import numpy as np
import torch

from nptface.core.datasets import InMemoryFaceDataset
from nptface.core.embedding import embed_dataset
from nptface.core.evaluation import evaluate_embeddings, evaluate_model, gallery_probe_split
from nptface.core.mobilefacenet import MobileFaceNet
from nptface.core.pairs import all_genuine_pairs


def _tiny_set(n_classes=4, per_class=3, size=32, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n_classes * per_class, size, size, 3), dtype=np.uint8)
    labels = np.repeat(np.arange(n_classes), per_class)
    return InMemoryFaceDataset(images, labels, [f"id{i}" for i in range(n_classes)])


def test_embeddings_are_unit_length_and_in_dataset_order():
    torch.manual_seed(0)
    model = MobileFaceNet(width=0.25, input_size=32, embedding_dim=16)
    dataset = _tiny_set()
    emb = embed_dataset(model, dataset, batch_size=5)
    assert emb.shape == (12, 16) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    single = embed_dataset(model, InMemoryFaceDataset(dataset.images[7:8], dataset.labels[7:8], dataset.class_names))
    np.testing.assert_allclose(single[0], emb[7], atol=1e-5)
    assert model.training, "embedding must restore the model's mode"


def test_flip_augmentation_makes_embeddings_mirror_invariant():
    torch.manual_seed(0)
    model = MobileFaceNet(width=0.25, input_size=32, embedding_dim=16)
    dataset = _tiny_set()
    mirrored = InMemoryFaceDataset(
        np.ascontiguousarray(dataset.images[:, :, ::-1]), dataset.labels, dataset.class_names
    )
    flip = embed_dataset(model, dataset, flip=True)
    np.testing.assert_allclose(flip, embed_dataset(model, mirrored, flip=True), atol=1e-5)
    assert not np.allclose(embed_dataset(model, dataset), embed_dataset(model, mirrored), atol=1e-3)


def test_gallery_is_first_image_of_each_identity():
    gallery, probes = gallery_probe_split(np.array([2, 0, 0, 2, 1]))
    assert gallery.tolist() == [0, 1, 4] and probes.tolist() == [2, 3]


def test_perfect_embeddings_verify_and_identify_perfectly():
    labels = np.repeat(np.arange(5), 4)
    embeddings = np.eye(5, dtype=np.float32)[labels]
    result = evaluate_embeddings(embeddings, labels, all_genuine_pairs(labels, seed=0))
    assert result.verification.accuracy.mean == 1.0 and result.rank1 == 1.0
    assert result.to_dict()["verification"]["metric"] == "cosine"


def test_evaluate_model_reports_counts_and_flip_flag():
    torch.manual_seed(0)
    dataset = _tiny_set()
    result = evaluate_model(
        MobileFaceNet(width=0.25, input_size=32, embedding_dim=16),
        dataset,
        all_genuine_pairs(dataset.labels, seed=0),
        flip=True,
    )
    assert result.n_images == 12 and result.n_identities == 4 and result.flip
    assert 0.0 <= result.verification.accuracy.mean <= 1.0
