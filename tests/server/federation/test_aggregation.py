"""Aggregation: FedAvg by samples or robust per-coordinate aggregators, then the bank rows and their spread."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import trim_mean

from nptface.server.federation.aggregation import combine, combine_backbones, update_bank
from nptface.server.federation.config import FedConfig
from nptface.server.federation.proxy_bank import ProxyBank
from nptface.server.federation.screening import Reply


def test_fedavg_weights_each_backbone_by_its_samples():
    updates = [{"w": torch.tensor([1.0, 0.0])}, {"w": torch.tensor([4.0, 3.0])}]
    combined = combine_backbones(updates, [1, 2], "fedavg")
    torch.testing.assert_close(combined["w"], torch.tensor([3.0, 2.0]))


def test_a_100x_update_drags_fedavg_but_not_the_median():
    updates = [{"w": torch.tensor([1.01])}, {"w": torch.tensor([1.02])}, {"w": torch.tensor([100.0])}]
    assert combine_backbones(updates, [1, 1, 1], "fedavg")["w"].item() > 30
    assert combine_backbones(updates, [1, 1, 100], "median")["w"].item() == pytest.approx(1.02)


def test_trimmed_mean_cuts_the_extremes_per_coordinate():
    updates = [{"w": torch.tensor([float(v), -float(v)])} for v in (1, 2, 3, 4, 100)]
    combined = combine_backbones(updates, [1] * 5, "trimmed-mean", trim_fraction=0.2)
    expected = trim_mean(np.array([[1, -1], [2, -2], [3, -3], [4, -4], [100, -100]], float), 0.2, axis=0)
    np.testing.assert_allclose(combined["w"].numpy(), expected)
    assert combined["w"].tolist() == [3.0, -3.0]


def test_an_unknown_aggregator_is_refused_by_name():
    with pytest.raises(ValueError, match="got 'mean'"):
        combine_backbones([{"w": torch.zeros(1)}], [1], "mean")


def _reply(partition: int, rows: np.ndarray, value: float) -> Reply:
    ids = [f"c{partition}-{k}" for k in range(len(rows))]
    return Reply(
        10 + partition,
        f"partition-{partition}",
        partition,
        ids,
        rows.astype(np.float32),
        np.full(len(rows), 3),
        {"w": torch.tensor([value])},
        3 * len(rows),
        {"loss_first": 2.0 + partition, "loss_last": 1.0, "imprinted": float(len(rows))},
    )


@pytest.fixture()
def crowded() -> tuple[ProxyBank, list[Reply]]:
    """Two clients whose new rows lie almost on top of each other and of a server row."""
    rng = np.random.default_rng(0)
    centre = rng.normal(size=16)
    bank = ProxyBank.from_rows(["server-0", "server-1"], np.stack([centre, rng.normal(size=16)]), public=True)
    replies = [_reply(p, centre + 0.05 * rng.normal(size=(2, 16)), value=float(p)) for p in (0, 1)]
    return bank, replies


def test_kept_replies_update_the_bank_and_the_spread_out_restores_the_margin(crowded):
    bank, replies = crowded
    backbone = combine(replies, {"w": torch.tensor([9.0])}, FedConfig())
    summary = update_bank(replies, bank, FedConfig())
    torch.testing.assert_close(backbone["w"], torch.tensor([0.5]))
    assert summary["rows_registered"] == 4 and summary["rows_updated"] == 0 and len(bank) == 6
    assert bank.owner_of("c1-0") == 1
    assert summary["spread_violations_before"] > 0 and summary["spread_violations_after"] == 0
    assert summary["min_sq_distance"] >= FedConfig().client.delta - 1e-3
    assert (summary["local_loss_first"], summary["local_loss_last"], summary["rows_imprinted"]) == (2.5, 1.0, 4)


def test_local_heads_store_the_rows_but_spread_nothing(crowded):
    bank, replies = crowded
    summary = update_bank(replies, bank, FedConfig(proxy_sharing="local-heads"))
    assert summary["rows_registered"] == 4 and summary["spread_violations_after"] is None
    assert summary["min_sq_distance"] < 0.1


def test_with_no_reply_kept_the_backbone_and_the_bank_stay_as_they_were(crowded):
    bank, _ = crowded
    before, rows = {"w": torch.tensor([9.0])}, bank.rows.copy()
    backbone, summary = combine([], before, FedConfig()), update_bank([], bank, FedConfig())
    assert backbone is before and np.array_equal(bank.rows, rows)
    assert summary["rows_updated"] == 0 and summary["local_loss_last"] is None and summary["rows_imprinted"] == 0
