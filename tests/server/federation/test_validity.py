"""Validity: a backbone is usable only with finite weights and BatchNorm statistics that a batch can have."""

from __future__ import annotations

import torch

from nptface.server.federation.validity import backbone_problems, summarise

HEALTHY = {
    "conv.weight": torch.randn(4, 3),
    "bn.running_mean": torch.zeros(4),
    "bn.running_var": torch.ones(4),
    "bn.num_batches_tracked": torch.tensor(7),
}


def test_a_healthy_backbone_has_no_problems():
    assert backbone_problems(HEALTHY) == []
    assert backbone_problems({**HEALTHY, "bn.running_var": torch.zeros(4)}) == [], "a zero variance is reachable"


def test_non_finite_weights_and_negative_variances_are_named_per_tensor():
    broken = {
        **HEALTHY,
        "conv.weight": torch.tensor([1.0, float("inf")]),
        "bn.running_var": torch.tensor([1.0, -0.5]),
        "bn.running_mean": torch.tensor([float("nan")]),
    }
    problems = backbone_problems(broken)
    assert problems == [
        "conv.weight has NaN/inf values",
        "bn.running_mean has NaN/inf values",
        "bn.running_var has negative variances (min -0.5)",
    ]


def test_a_batch_count_must_be_a_non_negative_integer():
    assert "must be a non-negative integer count" in backbone_problems({"bn.num_batches_tracked": torch.tensor(-1)})[0]
    assert backbone_problems({"bn.num_batches_tracked": torch.tensor(2.0)})


def test_a_long_list_of_problems_is_summarised_for_one_log_line():
    assert summarise(["a", "b"]) == "a; b"
    assert summarise(["a", "b", "c", "d", "e"]) == "a; b; c (and 2 more)"
