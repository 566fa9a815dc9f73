"""One client's local round: fine-tune the shared backbone and its own identities' proxies with NPT.

The client sees the global backbone, the bank rows of the identities it holds (its "own rows",
trainable) and a set of negative proxies chosen by the server (fixed). NPT compares each sample
with its own proxy and the k nearest other proxies among own rows + negatives, so a client's
identities are pushed away both from each other and from the identities elsewhere in the
federation that the server let it see. Rows for identities the bank has never seen are imprinted
(:func:`nptface.core.imprinting.imprint`) before this round starts. A client with one identity and
no negatives (a phone that holds only its owner, under ``none`` or ``local-heads``) has no proxy to
push away from; its samples are hinged against an orthogonal virtual negative (cosine 0), which
makes NPT the positive-only loss ``max(0, margin - cos(x, own row))`` of FedAwS (Yu et al., 2020):
the server's spread-out of the rows is then the only source of separation.

Optionally FedProx's proximal term ``mu/2 * ||w - w_global||^2`` (Li et al., 2020, "Federated
Optimization in Heterogeneous Networks") keeps the local model near the one the server sent, the
remedy for drift when every client trains on very different data (one owner per phone). It covers
the backbone and the own rows, which are shared too: the server's bank holds them and sends them
back. It is applied as its gradient ``mu * (w - w_global)``, added before each optimiser step
against a detached copy of the received weights: no extra autograd graph, and the reported loss
stays the NPT loss, comparable across ``mu``. With one local step per round ``w = w_global`` at
that step and the term does nothing; ``mu = 0`` skips it (the plain update, bit for bit).
BatchNorm running statistics are updated locally and averaged by the server like the weights;
the integer batch counters are not sent. With ``bn_frozen`` BatchNorm runs as at inference during
local training instead: every batch is normalised by the received running statistics, which come
back unchanged. A phone's batch holds one person in one capture domain; normalising by its own
statistics trains the backbone in a regime it never runs in, and averaging those statistics over
rounds moves the server's normalisation towards the clients' domains (forgetting). Frozen
statistics also let a device train on a single image.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from nptface.core.losses import npt_loss
from nptface.core.optim_recipe import WeightDecay, parameter_groups
from nptface.core.preprocess import normalize


@dataclass(frozen=True)
class LocalConfig:
    epochs: int = 1
    lr: float = 0.01
    batch_size: int = 32
    momentum: float = 0.9
    k: int = 6
    delta: float = 1.0
    r: float = 1.0
    fedprox_mu: float = 0.0  # FedProx's mu; 0: off
    bn_frozen: bool = False  # BatchNorm normalises with the received running statistics and leaves them unchanged
    weight_decay: WeightDecay = WeightDecay()  # the central recipe's layer-wise decay
    seed: int = 0


@dataclass
class LocalResult:
    weights: dict[str, torch.Tensor]  # float tensors of the backbone's state_dict
    rows: np.ndarray  # [n_own, d] updated own rows (unit length)
    counts: np.ndarray  # [n_own] training images behind each row
    metrics: dict[str, float] = field(default_factory=dict)


def float_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """What the federation exchanges: every float tensor of the state_dict (not BN's batch counters)."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if v.is_floating_point()}


def _anchored(params: list[nn.Parameter]) -> list[tuple[nn.Parameter, torch.Tensor]]:
    """Each parameter with a detached copy of its value now: the global weights FedProx pulls towards."""
    return [(param, param.detach().clone()) for param in params]


def add_proximal_gradient(anchored: list[tuple[nn.Parameter, torch.Tensor]], mu: float) -> None:
    """Add ``mu * (w - w_global)``, the gradient of FedProx's ``mu/2 * ||w - w_global||^2``, to each gradient.

    A parameter without a gradient this step is left alone: the optimiser does not move it either.
    """
    with torch.no_grad():
        for param, anchor in anchored:
            if param.grad is not None:
                param.grad.add_(param - anchor, alpha=mu)


def fine_tune(
    model: nn.Module,
    own_rows: np.ndarray,
    negatives: np.ndarray,
    dataset: Dataset,
    config: LocalConfig,
    fail_on_nonfinite: bool = True,
) -> LocalResult:
    """Train ``model`` (in place) and the own rows on ``dataset``; negatives stay fixed.

    Labels of ``dataset`` index ``own_rows``. Returns the float weights, the new rows (unit
    length), the per-row image counts and the loss before/after.
    """
    if own_rows.shape[0] != dataset.num_classes:
        raise ValueError(f"{own_rows.shape[0]} own rows for a dataset of {dataset.num_classes} identities")
    torch.manual_seed(config.seed)
    started = time.perf_counter()
    proxies = nn.Parameter(torch.as_tensor(own_rows, dtype=torch.float32).clone())
    anchored = _anchored([*model.parameters(), proxies]) if config.fedprox_mu else []
    fixed = F.normalize(torch.as_tensor(negatives, dtype=torch.float32).reshape(-1, proxies.shape[1]), dim=1)
    optimizer = torch.optim.SGD(
        parameter_groups(model, proxies, config.weight_decay), lr=config.lr, momentum=config.momentum
    )
    n_classes = proxies.shape[0] + fixed.shape[0]
    virtual_negative = n_classes == 1
    k = max(1, min(config.k, n_classes - 1 + virtual_negative))
    generator = torch.Generator().manual_seed(config.seed)
    loader = DataLoader(
        dataset,
        batch_size=config.batch_size,
        shuffle=True,
        generator=generator,
        drop_last=len(dataset) > config.batch_size,
    )
    model.train()
    if config.bn_frozen:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
    losses: list[float] = []
    for _ in range(config.epochs):
        for images, labels in loader:
            if len(labels) < 2 and not config.bn_frozen:
                continue  # BatchNorm cannot train on a single image's batch statistics
            embeddings = F.normalize(model(normalize(images)), dim=1)
            bank = torch.cat([F.normalize(proxies, dim=1), fixed])
            cos = embeddings @ bank.T
            if virtual_negative:
                cos = torch.cat([cos, cos.new_zeros(len(labels), 1)], dim=1)
            loss = npt_loss(cos, labels, k=k, delta=config.delta, r=config.r)
            if fail_on_nonfinite and not torch.isfinite(loss):
                raise FloatingPointError(f"local loss became {loss.item()} after {len(losses)} steps")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if anchored:
                add_proximal_gradient(anchored, config.fedprox_mu)
            optimizer.step()
            losses.append(loss.item())
    model.eval()
    counts = np.bincount(np.asarray(dataset.labels), minlength=proxies.shape[0]).astype(np.int64)
    rows = F.normalize(proxies.detach(), dim=1).numpy()
    metrics = {
        "steps": float(len(losses)),
        "samples": float(len(dataset)),
        "seconds": time.perf_counter() - started,
        "loss_first": losses[0] if losses else float("nan"),
        "loss_last": losses[-1] if losses else float("nan"),
        "k": float(k),
    }
    return LocalResult(float_state(model), rows, counts, metrics)
