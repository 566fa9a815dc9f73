"""The trainer's optimiser: the recipe's groups with the config's decays, and the learning-rate schedules."""

from __future__ import annotations

import pytest

from nptface.core.heads import NPTHead
from nptface.core.mobilefacenet import MobileFaceNet
from nptface.server.training.config import OptimSection
from nptface.server.training.optim import build_optimizer, lr_at


def test_the_optimizer_takes_the_configs_decays_and_the_heads_proxies():
    model = MobileFaceNet(width=0.25, input_size=32, embedding_dim=16)
    head = NPTHead(10, 16)
    optim = OptimSection(
        weight_decay_proxies=1e-3,
        weight_decay_embedding=2e-3,
        weight_decay_backbone=0.0,
        momentum=0.8,
        nesterov=False,
        lr=0.5,
    )
    optimizer = build_optimizer(model, head, optim)
    groups = {g["name"]: g for g in optimizer.param_groups}
    assert groups["proxies"]["params"] == [head.proxies]
    assert [groups[n]["weight_decay"] for n in ("proxies", "embedding", "backbone", "no_decay")] == [
        1e-3,
        2e-3,
        0.0,
        0.0,
    ]
    assert all((g["lr"], g["momentum"], g["nesterov"]) == (0.5, 0.8, False) for g in optimizer.param_groups)
    assert OptimSection().weight_decay_proxies == 5e-4, "the config's defaults are the paper's"


def test_step_schedule_divides_by_ten_at_epochs_30_and_45_of_65():
    optim = OptimSection(epochs=65, milestones=[30.0, 45.0])
    assert lr_at(29 * 10 + 9, 10, optim) == pytest.approx(0.1)
    assert lr_at(30 * 10, 10, optim) == pytest.approx(0.01)
    assert lr_at(45 * 10, 10, optim) == pytest.approx(0.001)
    assert lr_at(64 * 10 + 9, 10, optim) == pytest.approx(0.001)


def test_warmup_ramps_linearly_then_hands_over_to_the_schedule():
    optim = OptimSection(epochs=10, milestones=[5.0], warmup_epochs=1.0)
    assert lr_at(0, 10, optim) == pytest.approx(0.01)
    assert lr_at(9, 10, optim) == pytest.approx(0.1)
    assert lr_at(10, 10, optim) == pytest.approx(0.1)


@pytest.mark.parametrize("schedule", ["cosine", "poly"])
def test_cosine_and_poly_decay_from_lr_to_zero(schedule):
    optim = OptimSection(epochs=10, schedule=schedule, milestones=[])
    values = [lr_at(step, 10, optim) for step in range(100)]
    assert values[0] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(values, values[1:]))
    assert values[-1] < 0.002
