"""The federated server's screening and aggregation, without Flower's transport (fast)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from nptface.client import protocol
from nptface.server.federation.config import FedConfig
from nptface.server.federation.round_loop import Federation, FederationError


@pytest.fixture()
def federation(tiny_run, tmp_path):
    config = FedConfig.from_run_config({"server-run": str(tiny_run), "out-dir": str(tmp_path / "fed"),
                                        "central-eval-identities": 10, "central-eval-images": 3})
    fed = Federation(config)
    for node, partition in ((11, 0), (12, 1), (13, 2)):
        fed.node_clients[node] = (f"partition-{partition}", partition)
        fed.state.registry[f"partition-{partition}"] = [f"c{partition}-a", f"c{partition}-b"]
    return fed


def _content(fed, partition, scale=1.0, weights=None, ids=None):
    state = weights or {k: v * scale for k, v in fed.state.backbone.items()}
    rows = np.roll(np.eye(2, fed.state.bank.dim, dtype=np.float32), 2 * partition, axis=1)
    return RecordDict({
        protocol.BACKBONE: ArrayRecord(state),
        protocol.ROWS_OUT: protocol.numpy_record(rows=rows, counts=np.array([4, 6])),
        protocol.CONFIG: ConfigRecord({"ids": ids or [f"c{partition}-a", f"c{partition}-b"]}),
        protocol.METRICS: MetricRecord({"samples": 10.0}),
    })


def test_nan_wrong_shape_and_foreign_rows_are_refused_by_reason(federation):
    nan = {k: v.clone() for k, v in federation.state.backbone.items()}
    first = next(iter(nan))
    nan[first][..., 0] = float("nan")
    assert "NaN/inf" in federation.check_reply(11, _content(federation, 0, weights=nan))
    wrong = {k: v.clone() for k, v in federation.state.backbone.items()}
    wrong[first] = torch.zeros(3)
    assert "has shape (3,)" in federation.check_reply(11, _content(federation, 0, weights=wrong))
    assert "does not hold" in federation.check_reply(11, _content(federation, 0, ids=["c1-a", "c0-b"]))
    assert "unregistered" in federation.check_reply(99, _content(federation, 0))


def test_an_update_scaled_100x_is_screened_out_and_the_rest_aggregated(federation):
    base = {k: v.clone() for k, v in federation.state.backbone.items()}
    replies = [federation.check_reply(11, _content(federation, 0, scale=1.01)),
               federation.check_reply(12, _content(federation, 1, scale=1.02)),
               federation.check_reply(13, _content(federation, 2, scale=100.0))]
    summary = federation.aggregate(replies)
    assert summary["accepted"] == 2 and summary["rejected_nodes"] == [13]
    key = next(k for k in base if base[k].abs().sum() > 0)
    torch.testing.assert_close(federation.state.backbone[key], base[key] * 1.015)
    assert {"c0-a", "c1-b"} <= set(federation.state.bank.ids) and "c2-a" not in federation.state.bank.ids
    assert federation.state.bank.owner_of("c1-a") == 1


def test_spread_out_restores_the_margin_after_aggregation(federation):
    summary = federation.aggregate([federation.check_reply(11, _content(federation, 0))])
    assert summary["min_sq_distance"] >= 1.0 - 1e-3


def test_too_few_nodes_is_a_clear_error_not_a_silent_wait(federation):
    class OneNode:
        def get_node_ids(self):
            return [11]

    federation.config = FedConfig.from_run_config({"server-run": federation.config.server_run, "min-nodes": 3,
                                                   "wait-nodes-s": 0.5})
    with pytest.raises(FederationError, match="only 1 node\\(s\\) connected after 0 s; min-nodes is 3"):
        federation._wait_for_nodes(OneNode())


def test_negatives_follow_the_sharing_mode(federation):
    federation.aggregate([federation.check_reply(11, _content(federation, 0)),
                          federation.check_reply(12, _content(federation, 1))])
    bank = federation.state.bank
    own = ["c0-a", "c0-b"]
    own_rows = bank.rows[bank.index_of(own)]

    def sources(mode):
        federation.config = FedConfig.from_run_config({"server-run": federation.config.server_run,
                                                       "proxy-sharing": mode, "negatives-random": 1000})
        negatives = federation._negatives(own_rows, own)
        return {bank.ids[i] for i in negatives}, negatives

    public, _ = sources("public")
    assert public and all(bank.owner_of(i) is None for i in public), "public: only the server's identities"
    for mode in ("all", "dp"):
        shared, _ = sources(mode)
        assert {"c1-a", "c1-b"} <= shared and not set(own) & shared, f"{mode}: other clients' rows, never the own"
    for mode in ("none", "local-heads"):
        assert sources(mode)[1].shape == (0,), f"{mode}: no negatives at all"


def test_registration_refuses_impersonation_and_identity_clashes(federation):
    server_id = federation.state.bank.ids[0]
    assert "already served" in federation._registration_problem(1, ["c1-a", "c1-b"])  # node 12 serves it
    federation.node_clients.clear()
    assert federation._registration_problem(1, ["c1-a", "c1-b"]) is None
    assert "other identities" in federation._registration_problem(1, ["c1-a", "x"])
    assert "held by another client" in federation._registration_problem(7, ["c0-a", "new"])
    assert "held by another client or the server" in federation._registration_problem(7, [server_id])
    assert "duplicate" in federation._registration_problem(7, ["n", "n"])


def test_reply_counts_must_be_positive_integers(federation):
    content = _content(federation, 0)
    content[protocol.ROWS_OUT] = protocol.numpy_record(rows=np.eye(2, federation.state.bank.dim, dtype=np.float32),
                                                       counts=np.array([0, 3]))
    assert "positive integers" in federation.check_reply(11, content)


def test_without_screens_a_100x_update_drags_fedavg_but_not_the_median(federation):
    base = {k: v.clone() for k, v in federation.state.backbone.items()}
    key = next(k for k in base if base[k].abs().sum() > 0)

    def run(aggregation):
        federation.state.backbone = {k: v.clone() for k, v in base.items()}
        federation.config = FedConfig.from_run_config({"server-run": federation.config.server_run, "norm-screen": 0.0,
                                                       "backbone-aggregation": aggregation})
        replies = [federation.check_reply(11, _content(federation, 0, scale=1.01)),
                   federation.check_reply(12, _content(federation, 1, scale=1.02)),
                   federation.check_reply(13, _content(federation, 2, scale=100.0))]
        summary = federation.aggregate(replies)
        return summary, federation.state.backbone[key] / base[key].where(base[key] != 0, torch.ones(()))

    summary, ratio = run("fedavg")
    assert summary["accepted"] == 3 and ratio[base[key] != 0].mean() > 10, "plain FedAvg is dragged by the attacker"
    summary, ratio = run("median")
    assert summary["accepted"] == 3
    torch.testing.assert_close(ratio[base[key] != 0], torch.full_like(ratio[base[key] != 0], 1.02))


def test_trimmed_mean_cuts_the_extremes_per_coordinate():
    from scipy.stats import trim_mean

    from nptface.server.federation.round_loop import combine_backbones

    updates = [{"w": torch.tensor([float(v), -float(v)])} for v in (1, 2, 3, 4, 100)]
    combined = combine_backbones(updates, [1] * 5, "trimmed-mean", trim_fraction=0.2)
    expected = trim_mean(np.array([[1, -1], [2, -2], [3, -3], [4, -4], [100, -100]], float), 0.2, axis=0)
    np.testing.assert_allclose(combined["w"].numpy(), expected)
    assert combined["w"].tolist() == [3.0, -3.0]


def test_rows_longer_than_unit_are_screened_with_the_reply(federation):
    content = _content(federation, 0)
    content[protocol.ROWS_OUT] = protocol.numpy_record(
        rows=100 * np.eye(2, federation.state.bank.dim, dtype=np.float32), counts=np.array([4, 6]))
    summary = federation.aggregate([federation.check_reply(11, content),
                                    federation.check_reply(12, _content(federation, 1))])
    assert summary["rejected_nodes"] == [11] and "c0-a" not in federation.state.bank.ids


def test_dp_clients_get_no_clean_rows_back_and_are_told_the_noise(federation, tmp_path):
    config = FedConfig.from_run_config({"server-run": federation.config.server_run, "out-dir": str(tmp_path / "dp"),
                                        "central-eval-identities": 10, "central-eval-images": 3,
                                        "proxy-sharing": "dp", "dp-epsilon": 4.0, "num-rounds": 3})
    dp = Federation(config)
    dp.node_clients, dp.state.registry = dict(federation.node_clients), dict(federation.state.registry)
    dp.aggregate([dp.check_reply(11, _content(dp, 0)), dp.check_reply(12, _content(dp, 1))])
    content = dp.train_content(11, 2, ArrayRecord(dp.state.backbone), set(dp.state.bank.ids))
    record = content[protocol.CONFIG]
    assert list(record["own_ids"]) == [] and content[protocol.OWN_ROWS]["rows"].numpy().shape[0] == 0
    assert content[protocol.NEGATIVES]["rows"].numpy().shape[0] > 0
    assert record[protocol.KEEP_ROWS] is True and record[protocol.DP_CLIP] == 1.0
    assert record[protocol.DP_NOISE] == dp.row_privacy.noise_multiplier > 1.0
    assert dp.row_privacy.epsilon <= 4.0
    spent = [dp._privacy_spent(r)["dp/epsilon"] for r in (1, 2, 3)]
    assert spent == sorted(spent) and spent[-1] == dp.row_privacy.epsilon


def test_a_backbone_with_non_finite_outputs_scores_chance_and_is_flagged(federation):
    from nptface.server.federation.round_loop import evaluate_backbone

    model = federation.model()
    batch_norm = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    batch_norm.running_var.fill_(-1.0)  # what an averaged-in noise update can leave behind
    metrics = evaluate_backbone(model, federation._eval_sets)
    assert metrics["client-domain/non-finite"] == 1.0 and metrics["client-domain/accuracy"] == 0.5
    healthy = evaluate_backbone(federation.model(), federation._eval_sets)
    assert "client-domain/non-finite" not in healthy and healthy["client-domain/accuracy"] > 0.5
