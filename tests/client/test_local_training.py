"""A client's local round: imprinting, NPT fine-tuning of backbone + own rows, fixed negatives, FedProx."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nptface.client.local_training import LocalConfig, add_proximal_gradient, fine_tune
from nptface.core.checkpoint import load_backbone, load_proxies
from nptface.core.datasets import SyntheticFaceDataset, materialize
from nptface.core.embedding import embed_dataset
from nptface.core.imprinting import imprint
from nptface.core.synthetic import CLIENT_IDS


@pytest.fixture(scope="module")
def client_data():
    return materialize(SyntheticFaceDataset(CLIENT_IDS[:6], 8, "phone-lowlight", 3, 32), progress=False)


def test_imprinted_row_is_the_normalised_mean_embedding(tiny_run, client_data):
    model, _ = load_backbone(tiny_run)
    rows = imprint(model, client_data)
    embeddings = embed_dataset(model, client_data)
    mean = embeddings[client_data.labels == 2].mean(axis=0)
    np.testing.assert_allclose(rows[2], mean / np.linalg.norm(mean), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-6)


def test_fine_tuning_lowers_the_npt_loss_and_leaves_negatives_alone(tiny_run, client_data):
    model, _ = load_backbone(tiny_run)
    negatives = load_proxies(tiny_run).numpy()
    before = negatives.copy()
    result = fine_tune(
        model, imprint(model, client_data), negatives, client_data, LocalConfig(epochs=6, lr=0.05, batch_size=16, k=3)
    )
    assert result.metrics["loss_last"] < result.metrics["loss_first"]
    assert np.array_equal(negatives, before), "negatives are the server's: a client must not move them"
    assert result.rows.shape == (6, 32) and np.allclose(np.linalg.norm(result.rows, axis=1), 1, atol=1e-6)
    assert result.counts.tolist() == [8] * 6
    assert all(v.is_floating_point() for v in result.weights.values())
    assert "blocks.0.block.0.1.num_batches_tracked" not in result.weights


def _local_update(tiny_run, data, mu: float):
    """(the global model's parameters, the local result, the own rows it started from) of one round at ``mu``."""
    model, _ = load_backbone(tiny_run)
    parameters = {name: p.detach().clone() for name, p in model.named_parameters()}
    rows = imprint(model, data)
    config = LocalConfig(epochs=3, lr=0.1, batch_size=16, k=3, fedprox_mu=mu)
    return parameters, fine_tune(model, rows.copy(), np.zeros((0, 32), np.float32), data, config), rows


def test_fedprox_keeps_the_backbone_and_the_own_rows_closer_to_the_global_model(tiny_run, client_data):
    def distances(mu: float) -> tuple[float, float]:
        start, result, rows = _local_update(tiny_run, client_data, mu)
        # parameters only: BatchNorm's running statistics are no parameters and the term does not hold them
        backbone = torch.cat([(result.weights[k] - start[k]).flatten() for k in start]).norm().item()
        return backbone, float(np.linalg.norm(result.rows - rows))

    plain, proximal = distances(0.0), distances(1.0)

    assert proximal[0] < 0.8 * plain[0], f"backbone moved {proximal[0]:.3f} with mu=1 vs {plain[0]:.3f} without"
    assert proximal[1] < 0.8 * plain[1], f"own rows moved {proximal[1]:.3f} with mu=1 vs {plain[1]:.3f} without"


def test_fedprox_off_is_the_plain_update_bit_for_bit(tiny_run, client_data, monkeypatch):
    from nptface.client import local_training

    calls = []
    monkeypatch.setattr(local_training, "add_proximal_gradient", lambda *args: calls.append(args))
    _local_update(tiny_run, client_data, 1e-3)
    assert calls, "the proximal gradient is added through add_proximal_gradient"

    calls.clear()
    _, plain, _ = _local_update(tiny_run, client_data, 0.0)
    assert not calls, "mu = 0 must not touch the gradients"
    _, again, _ = _local_update(tiny_run, client_data, 0.0)
    assert all(torch.equal(plain.weights[k], again.weights[k]) for k in plain.weights)
    assert np.array_equal(plain.rows, again.rows)


def test_the_proximal_gradient_is_the_gradient_of_the_proximal_term():
    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 3)
    anchored = [(p, p.detach().clone()) for p in layer.parameters()]
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(torch.randn_like(p))  # the local model has drifted from the global one
    x, mu = torch.randn(5, 4), 0.7

    layer(x).square().sum().backward()
    add_proximal_gradient(anchored, mu)
    added = [p.grad.clone() for p in layer.parameters()]

    layer.zero_grad()
    proximal = mu / 2 * sum((p - anchor).square().sum() for p, anchor in anchored)
    (layer(x).square().sum() + proximal).backward()
    for got, p in zip(added, layer.parameters(), strict=True):
        torch.testing.assert_close(got, p.grad)


def test_row_count_must_match_identities(tiny_run, client_data):
    model, _ = load_backbone(tiny_run)
    with pytest.raises(ValueError, match="5 own rows for a dataset of 6 identities"):
        fine_tune(model, np.zeros((5, 32), np.float32), np.zeros((0, 32)), client_data, LocalConfig())


def test_training_is_reproducible_with_a_seed(tiny_run, client_data):
    outs = []
    for _ in range(2):
        torch.manual_seed(123)
        model, _ = load_backbone(tiny_run)
        outs.append(
            fine_tune(
                model,
                imprint(model, client_data),
                np.zeros((0, 32), np.float32),
                client_data,
                LocalConfig(epochs=1, batch_size=16, seed=7),
            )
        )
    assert all(torch.equal(outs[0].weights[k], outs[1].weights[k]) for k in outs[0].weights)


def test_a_lone_owner_without_negatives_is_pulled_towards_its_row(tiny_run, client_data):
    from nptface.core.identities import subset_by_classes

    owner = subset_by_classes(client_data, [4])
    row = np.eye(1, 32, dtype=np.float32)  # far from the owner's embeddings: the positive-only hinge is active
    before = embed_dataset(load_backbone(tiny_run)[0], owner) @ row[0]
    model, _ = load_backbone(tiny_run)
    result = fine_tune(model, row, np.zeros((0, 32), np.float32), owner, LocalConfig(epochs=8, lr=0.05, batch_size=8))

    after = embed_dataset(model, owner) @ result.rows[0]
    assert result.metrics["loss_first"] > 0.1 and result.metrics["loss_last"] < result.metrics["loss_first"]
    assert after.mean() > before.mean() + 0.1


def test_frozen_batchnorm_sends_the_received_statistics_back_and_trains_the_rest(tiny_run, client_data):
    model, _ = load_backbone(tiny_run)
    received = {k: v.clone() for k, v in model.state_dict().items() if "running_" in k}
    affine = {k[: -len("running_mean")] + "weight" for k in received if k.endswith("running_mean")}
    start = {k: v.clone() for k, v in model.state_dict().items() if k in affine}
    config = LocalConfig(epochs=2, lr=0.05, batch_size=16, k=3, bn_frozen=True)
    result = fine_tune(model, imprint(model, client_data), np.zeros((0, 32), np.float32), client_data, config)

    assert received and all(torch.equal(result.weights[k], v) for k, v in received.items())
    assert start and any(not torch.equal(result.weights[k], v) for k, v in start.items()), "BN's affine weights train"
    assert result.metrics["steps"] > 0 and result.metrics["loss_last"] < result.metrics["loss_first"]
    assert not model.training, "the model is handed back in eval mode"


def test_frozen_batchnorm_trains_on_a_single_image_that_batch_statistics_cannot(tiny_run, client_data):
    from nptface.core.datasets import InMemoryFaceDataset

    one = InMemoryFaceDataset(client_data.images[:1], np.zeros(1, np.int64), ["owner"])
    steps = {}
    for frozen in (False, True):
        model, _ = load_backbone(tiny_run)
        config = LocalConfig(epochs=2, lr=0.05, batch_size=16, bn_frozen=frozen)
        steps[frozen] = fine_tune(model, imprint(model, one), np.zeros((0, 32), np.float32), one, config).metrics[
            "steps"
        ]
    assert steps == {False: 0.0, True: 2.0}
