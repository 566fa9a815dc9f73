"""The plain training loop: the paper's recipe, and that it actually learns."""

from __future__ import annotations

import pytest
import torch

from nptface.core.datasets import SyntheticFaceDataset, materialize
from nptface.core.heads import NPTHead
from nptface.core.mobilefacenet import MobileFaceNet
from nptface.server.train import OptimConfig, lr_at, parameter_groups, train


def test_weight_decay_groups_follow_the_paper_recipe():
    model = MobileFaceNet(width=0.25, input_size=32, embedding_dim=16)
    head = NPTHead(10, 16)
    groups = {g["name"]: g for g in parameter_groups(model, head, OptimConfig())}
    assert groups["proxies"]["weight_decay"] == 5e-4 and groups["proxies"]["params"] == [head.proxies]
    assert groups["embedding"]["weight_decay"] == 1e-4
    assert groups["backbone"]["weight_decay"] == 1e-5
    assert groups["no_decay"]["weight_decay"] == 0.0
    prelu = {id(p) for m in model.modules() if isinstance(m, torch.nn.PReLU) for p in m.parameters()}
    assert prelu <= {id(p) for p in groups["no_decay"]["params"]}
    every = [id(p) for g in groups.values() for p in g["params"]]
    assert len(every) == len(set(every)) == len(list(model.parameters())) + 1


def test_step_schedule_divides_by_ten_at_30_and_45_of_65_epochs():
    config = OptimConfig(epochs=65)
    steps_per_epoch = 10
    total = 65 * steps_per_epoch
    assert lr_at(29 * steps_per_epoch, total, config) == pytest.approx(0.1)
    assert lr_at(30 * steps_per_epoch, total, config) == pytest.approx(0.01)
    assert lr_at(45 * steps_per_epoch, total, config) == pytest.approx(0.001)


def test_warmup_ramps_linearly():
    config = OptimConfig(epochs=1, warmup_fraction=0.5)
    assert lr_at(0, 10, config) == pytest.approx(0.02)
    assert lr_at(4, 10, config) == pytest.approx(0.1)


def test_training_reduces_the_npt_loss_on_synthetic_faces():
    data = materialize(SyntheticFaceDataset(range(8), 8, "studio", seed=0, image_size=32), progress=False)
    torch.manual_seed(0)
    model = MobileFaceNet(width=0.25, input_size=32, embedding_dim=32)
    head = NPTHead(8, 32, k=3)
    history = train(model, head, data, OptimConfig(epochs=6, batch_size=16, milestones=(0.8,)), progress=False)
    assert len(history) == 6
    assert history[-1].loss < 0.7 * history[0].loss
    assert history[-1].train_accuracy > history[0].train_accuracy


def test_head_and_dataset_class_counts_must_agree():
    data = materialize(SyntheticFaceDataset(range(4), 4, image_size=32), progress=False)
    with pytest.raises(ValueError, match="head has 5 proxies but the dataset has 4 classes"):
        train(MobileFaceNet(width=0.25, input_size=32, embedding_dim=8), NPTHead(5, 8, k=2), data,
              OptimConfig(epochs=1, batch_size=4), progress=False)
