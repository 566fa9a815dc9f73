"""The paper's optimiser recipe: layer-wise weight decay and the learning-rate schedules."""

from __future__ import annotations

import pytest
import torch

from nptface.core.heads import NPTHead
from nptface.core.mobilefacenet import MobileFaceNet
from nptface.server.training.config import OptimSection
from nptface.server.training.optim import lr_at, parameter_groups


def test_weight_decay_groups_follow_the_paper_recipe():
    model = MobileFaceNet(width=0.25, input_size=32, embedding_dim=16)
    head = NPTHead(10, 16)
    groups = {g["name"]: g for g in parameter_groups(model, head, OptimSection())}
    assert groups["proxies"]["weight_decay"] == 5e-4 and groups["proxies"]["params"] == [head.proxies]
    assert groups["embedding"]["weight_decay"] == 1e-4
    assert groups["backbone"]["weight_decay"] == 1e-5
    assert groups["no_decay"]["weight_decay"] == 0.0
    prelu = {id(p) for m in model.modules() if isinstance(m, torch.nn.PReLU) for p in m.parameters()}
    assert prelu <= {id(p) for p in groups["no_decay"]["params"]}
    embedding = {id(p) for p in model.embedding[0].parameters()}
    assert embedding <= {id(p) for p in groups["embedding"]["params"]}
    every = [id(p) for g in groups.values() for p in g["params"]]
    assert len(every) == len(set(every)) == len(list(model.parameters())) + 1


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
