"""The paper's optimiser: SGD with layer-wise weight decay and a step (or cosine/poly) schedule.

The parameter groups and their decays are the recipe of :mod:`nptface.core.optim_recipe` (shared
with federated clients), with the decays the config's ``optim`` section sets. The learning rate
is a pure function of the global step, so resuming needs no scheduler state and cannot drift.
"""

from __future__ import annotations

import math

import torch

from nptface.core.heads import ProxyHead
from nptface.core.mobilefacenet import MobileFaceNet
from nptface.core.optim_recipe import WeightDecay, parameter_groups
from nptface.server.training.config import OptimSection
from nptface.server.training.lazy_sgd import LazyRowSGD
from nptface.server.training.sharding.proxy_shard import ShardedNPTHead


def build_optimizer(
    model: MobileFaceNet, head: ProxyHead | ShardedNPTHead, optim: OptimSection, sparse_proxies: bool = False
) -> torch.optim.SGD:
    """SGD over the recipe's groups; a sharded head's group holds this rank's rows only (decay acts row by row).

    ``sparse_proxies``: :class:`~nptface.server.training.lazy_sgd.LazyRowSGD`, which takes a sparse
    proxy gradient (the head must produce one) and is torch's SGD on every dense gradient.
    """
    decay = WeightDecay(
        proxies=optim.weight_decay_proxies, embedding=optim.weight_decay_embedding, backbone=optim.weight_decay_backbone
    )
    return (LazyRowSGD if sparse_proxies else torch.optim.SGD)(
        parameter_groups(model, head.proxies, decay), lr=optim.lr, momentum=optim.momentum, nesterov=optim.nesterov
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
