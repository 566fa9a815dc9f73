"""The paper's optimiser: SGD with layer-wise weight decay and a step (or cosine/poly) schedule.

The NPT recipe for MobileFaceNet decays the proxies at 5e-4, the embedding layer at 1e-4 and the
rest of the backbone at 1e-5, and nothing on PReLU slopes (decaying them pushes the activation
towards a ReLU) or BatchNorm's affine terms (which only rescale). The learning rate is a pure
function of the global step, so resuming needs no scheduler state and cannot drift.
"""

from __future__ import annotations

import math

import torch

from nptface.core.heads import ProxyHead
from nptface.core.mobilefacenet import MobileFaceNet, weight_decay_groups
from nptface.server.training.config import OptimSection
from nptface.server.training.sharding.proxy_shard import PROXY_GROUP, ShardedNPTHead


def parameter_groups(model: MobileFaceNet, head: ProxyHead | ShardedNPTHead, optim: OptimSection) -> list[dict]:
    """SGD parameter groups with the recipe's layer-wise weight decay, in a fixed order.

    A sharded head's group holds this rank's rows only: decay and momentum act row by row.
    """
    return [*weight_decay_groups(model, optim.weight_decay_backbone, optim.weight_decay_embedding),
            {"name": PROXY_GROUP, "params": [head.proxies], "weight_decay": optim.weight_decay_proxies}]


def build_optimizer(model: MobileFaceNet, head: ProxyHead | ShardedNPTHead, optim: OptimSection) -> torch.optim.SGD:
    return torch.optim.SGD(
        parameter_groups(model, head, optim), lr=optim.lr, momentum=optim.momentum, nesterov=optim.nesterov
    )


def lr_at(step: int, steps_per_epoch: int, optim: OptimSection) -> float:
    """Learning rate for the ``step``-th optimiser step (0-based) of the run."""
    epoch = step / steps_per_epoch
    if epoch < optim.warmup_epochs:
        return optim.lr * (step + 1) / math.ceil(optim.warmup_epochs * steps_per_epoch)
    if optim.schedule == "step":
        return optim.lr * 0.1 ** sum(epoch >= m for m in optim.milestones)
    progress = (epoch - optim.warmup_epochs) / (optim.epochs - optim.warmup_epochs)
    if optim.schedule == "cosine":
        return optim.lr * 0.5 * (1 + math.cos(math.pi * progress))
    if optim.schedule == "poly":
        return optim.lr * (1 - progress) ** optim.poly_power
    raise ValueError(f"optim.schedule must be step, cosine or poly, got {optim.schedule!r}")
