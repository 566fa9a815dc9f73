"""The paper's optimiser recipe: every parameter in one group, with the layer-wise weight decay."""

from __future__ import annotations

import torch
from torch import nn

from nptface.core.mobilefacenet import MobileFaceNet
from nptface.core.optim_recipe import PROXY_GROUP, WeightDecay, parameter_groups


def test_groups_follow_the_paper_recipe_and_hold_every_parameter_once():
    model = MobileFaceNet(width=0.25, input_size=32, embedding_dim=16)
    proxies = nn.Parameter(torch.randn(10, 16))
    groups = {g["name"]: g for g in parameter_groups(model, proxies)}
    assert list(groups) == ["backbone", "embedding", "no_decay", PROXY_GROUP]
    assert groups[PROXY_GROUP]["weight_decay"] == 5e-4 and groups[PROXY_GROUP]["params"] == [proxies]
    assert groups["embedding"]["weight_decay"] == 1e-4
    assert groups["backbone"]["weight_decay"] == 1e-5
    assert groups["no_decay"]["weight_decay"] == 0.0
    prelu = {id(p) for m in model.modules() if isinstance(m, nn.PReLU) for p in m.parameters()}
    batch_norm = {id(p) for m in model.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters()}
    assert prelu | batch_norm <= {id(p) for p in groups["no_decay"]["params"]}
    assert {id(p) for p in model.embedding[0].parameters()} <= {id(p) for p in groups["embedding"]["params"]}
    every = [id(p) for g in groups.values() for p in g["params"]]
    assert len(every) == len(set(every)) == len(list(model.parameters())) + 1


def test_other_decays_reach_their_groups():
    model = MobileFaceNet(width=0.25, input_size=32, embedding_dim=16)
    decay = WeightDecay(proxies=1.0, embedding=2.0, backbone=3.0)
    groups = {g["name"]: g["weight_decay"] for g in parameter_groups(model, nn.Parameter(torch.ones(2, 16)), decay)}
    assert groups == {"backbone": 3.0, "embedding": 2.0, "no_decay": 0.0, PROXY_GROUP: 1.0}
