"""Central evaluation on identities nobody trains on, and the clients' pooled local accuracy."""

from __future__ import annotations

import math

import pytest
import torch
from flwr.app import MetricRecord, RecordDict

from nptface.client import protocol
from nptface.core.checkpoint import load_backbone
from nptface.server.federation.config import FedConfig
from nptface.server.federation.evaluation import (
    central_eval_sets,
    evaluate_backbone,
    pool_client_accuracy,
    read_client_evaluation,
)


@pytest.fixture(scope="module")
def eval_sets():
    return central_eval_sets(FedConfig(central_eval_identities=10, central_eval_images=5), image_size=32)


def test_central_sets_cover_both_domains_with_folds_as_large_as_each_set_allows(eval_sets):
    assert list(eval_sets) == ["client-domain", "server-domain"]
    for data, pairs in eval_sets.values():
        assert len(data) == 50 and len(set(data.labels.tolist())) == 10
        genuine = 10 * 10  # 10 identities x C(5, 2)
        assert len(pairs.is_same) == 10 * 2 * (genuine // 10) and pairs.is_same.sum() == genuine


def test_a_backbone_with_non_finite_outputs_scores_chance_and_is_flagged(tiny_run, eval_sets):
    model, _ = load_backbone(tiny_run)
    healthy = evaluate_backbone(model, eval_sets)
    assert "client-domain/non-finite" not in healthy and healthy["client-domain/accuracy"] > 0.5
    batch_norm = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    batch_norm.running_var.fill_(-1.0)  # what an averaged-in noise update can leave behind
    metrics = evaluate_backbone(model, eval_sets)
    assert metrics["client-domain/non-finite"] == 1.0 and metrics["client-domain/accuracy"] == 0.5
    assert metrics["server-domain/tar@far=1e-2"] == 0.0


def test_client_accuracies_are_pooled_by_images_and_invalid_reports_skipped():
    pooled = pool_client_accuracy([(10.0, 0.9), (30.0, 0.5), (0.0, 1.0), (5.0, float("nan")), (5.0, 1.5)])
    assert pooled == {"clients-local/accuracy": pytest.approx((9 + 15) / 40), "clients-local/replies": 2.0}
    nobody = pool_client_accuracy([])
    assert math.isnan(nobody["clients-local/accuracy"]) and nobody["clients-local/replies"] == 0.0


def test_a_client_evaluation_reply_is_read_or_refused_as_malformed():
    reply = RecordDict({protocol.METRICS: MetricRecord({"num-examples": 8.0, "accuracy": 0.75})})
    assert read_client_evaluation(reply) == (8.0, 0.75)
    no_images = RecordDict({protocol.METRICS: MetricRecord({"accuracy": 0.75})})
    with pytest.raises(KeyError):
        read_client_evaluation(no_images)
    only_count = read_client_evaluation(RecordDict({protocol.METRICS: MetricRecord({"num-examples": 0.0})}))
    assert only_count[0] == 0.0 and math.isnan(only_count[1])
