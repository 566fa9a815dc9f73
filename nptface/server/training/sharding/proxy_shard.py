"""The rows of the proxy matrix one DDP rank owns when the NPT head is sharded by class.

With many identities the ``[C, d]`` proxies and their momentum dominate memory, and DDP would
all-reduce the whole ``[C, d]`` gradient every step although NPT touches only B·(k+1) rows.
Here each rank keeps the contiguous rows ``[start, stop)`` (sizes differ by at most one) as a
parameter *outside* DDP and trains them through
:func:`~nptface.server.training.sharding.sharded_npt.sharded_selected_cosines`: the loss and every gradient equal
those of the replicated head (up to fp32 rounding), because SGD's weight decay and momentum act
row by row. What leaves a rank is the full matrix only: :func:`gather_full_state` assembles the
proxies and their momentum on rank 0 in exactly the layout an unsharded run checkpoints, and
:func:`slice_full_state` cuts a rank's rows back out, so a checkpoint resumes on any number of
processes, sharded or not, and ``proxies.safetensors`` stays the full matrix export and
federation read.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from nptface.core.heads import HeadOutput, NPTHead, ProxyHead, ScalableNPTHead
from nptface.core.optim_recipe import PROXY_GROUP
from nptface.core.scalable_npt import LazyRows, selected_npt_loss
from nptface.server.training.sharding.sharded_npt import sharded_selected_cosines


def shard_bounds(num_classes: int, world_size: int, rank: int) -> tuple[int, int]:
    """Rows ``[start, stop)`` of rank ``rank``: contiguous, the first ``C mod W`` ranks one row more."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside [0, {world_size})")
    base, extra = divmod(num_classes, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


class ShardedNPTHead(nn.Module):
    """This rank's rows of an NPT head's proxies; the loss is the global batch's NPT loss over all shards.

    Built from the full head a single process would train (so every rank draws the same initial
    matrix as an unsharded run with the same seed, then keeps its rows). ``name`` and
    :meth:`hparams` are that head's: checkpoints describe the model, not how it was trained.
    ``forward`` returns this rank's share of the loss (the global loss divided by the world
    size, see :mod:`nptface.server.training.sharding.sharded_npt`: backbone gradients must then be multiplied by
    the world size) and the predictions of this rank's own samples. ``lazy_rows`` is
    :class:`~nptface.core.heads.ScalableNPTHead`'s (the trainer's ``optim.sparse_proxies``).
    """

    lazy_rows: LazyRows | None = None

    def __init__(self, source: ProxyHead, rank: int, world_size: int, chunk_size: int) -> None:
        super().__init__()
        if type(source) not in (NPTHead, ScalableNPTHead) or not isinstance(source.k, int):
            raise ValueError(
                f"only the NPT head with an integer k can be sharded (head.shard_proxies), "
                f"got the {source.name!r} head with {source.hparams()}"
            )
        if getattr(source, "candidate_rate", 0.0):
            raise ValueError(
                "head.candidate_rate > 0 samples negatives, which the sharded head does not; "
                "set head.candidate_rate = 0 or head.shard_proxies = false"
            )
        if getattr(source, "negatives", "hardest") != "hardest":
            raise ValueError(
                f"the sharded head searches the hardest negatives only, got negatives = "
                f"{source.negatives!r} (head.params); set head.shard_proxies = false"
            )
        self.num_classes, self.embedding_dim = source.num_classes, source.embedding_dim
        self.start, self.stop = shard_bounds(self.num_classes, world_size, rank)
        if self.stop - self.start < source.k + 1:
            raise ValueError(
                f"{self.num_classes} classes over {world_size} ranks leave {self.stop - self.start} "
                f"proxy rows on rank {rank}, fewer than k + 1 = {source.k + 1} "
                f"(head.params.k); use fewer ranks or head.shard_proxies = false"
            )
        self.rank, self.world_size = rank, world_size
        self.name = source.name
        self._hparams = source.hparams()
        self.k, self.delta, self.r, self.chunk_size = source.k, source.delta, source.r, chunk_size
        self.proxies = nn.Parameter(source.proxies.detach()[self.start : self.stop].clone())

    def hparams(self) -> dict[str, Any]:
        return dict(self._hparams)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> HeadOutput:
        cosines, index = sharded_selected_cosines(
            embeddings,
            labels,
            self.proxies,
            self.start,
            self.num_classes,
            self.k,
            self.chunk_size,
            self.lazy_rows,
        )
        loss = selected_npt_loss(cosines, self.delta, self.r, "mean") / self.world_size
        # The selected cosines of the whole global batch are on every rank already: the nearest
        # proxy is the positive when it beats the best negative (as ScalableNPTHead; a tie is wrong).
        mine = slice(self.rank * len(labels), (self.rank + 1) * len(labels))
        selected = cosines.detach()[mine]
        predictions = torch.where(selected[:, 0] > selected[:, 1], labels, index[mine, 1])
        return HeadOutput(loss=loss, cosines=cosines, predictions=predictions)


def gather_rows(head: ShardedNPTHead, rows: torch.Tensor) -> torch.Tensor | None:
    """The full ``[C, ...]`` tensor from every rank's ``rows`` on rank 0 (None elsewhere). Collective."""
    largest = math.ceil(head.num_classes / head.world_size)
    padded = rows.new_zeros((largest, *rows.shape[1:]))
    padded[: len(rows)] = rows.detach()
    parts = [torch.empty_like(padded) for _ in range(head.world_size)] if head.rank == 0 else None
    dist.gather(padded, parts, dst=0)
    if parts is None:
        return None
    sizes = [
        stop - start
        for start, stop in (shard_bounds(head.num_classes, head.world_size, r) for r in range(head.world_size))
    ]
    return torch.cat([part[:size] for part, size in zip(parts, sizes)])


def _proxy_state_id(optimizer_state: dict[str, Any]) -> int:
    groups = [g for g in optimizer_state["param_groups"] if g.get("name") == PROXY_GROUP]
    if len(groups) != 1 or len(groups[0]["params"]) != 1:
        raise ValueError(
            f"the optimizer needs exactly one param group named {PROXY_GROUP!r} holding the proxies, "
            f"got groups {[g.get('name') for g in optimizer_state['param_groups']]}"
        )
    return groups[0]["params"][0]


def gather_full_state(
    head: ShardedNPTHead, optimizer: torch.optim.Optimizer
) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """Head and optimizer state dicts with the full proxies and momentum, on rank 0. Collective.

    The result has the layout of an unsharded run's ``head.state_dict()`` and
    ``optimizer.state_dict()``; other ranks get None.
    """
    proxies = gather_rows(head, head.proxies)
    optimizer_state = optimizer.state_dict()
    proxy_id = _proxy_state_id(optimizer_state)
    per_param = optimizer_state["state"].get(proxy_id, {})
    full_param_state = {
        key: gather_rows(head, value) if isinstance(value, torch.Tensor) and value.ndim else value
        for key, value in per_param.items()
    }
    if head.rank != 0:
        return None
    state = dict(optimizer_state["state"])
    if per_param:
        state[proxy_id] = full_param_state
    return {"proxies": proxies}, {**optimizer_state, "state": state}


def slice_full_state(
    head: ShardedNPTHead, head_state: dict[str, torch.Tensor], optimizer_state: dict[str, Any]
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """This rank's rows of a full (any-world-size) head and optimizer state: the inverse of gathering."""
    full = head_state["proxies"]
    if tuple(full.shape) != (head.num_classes, head.embedding_dim):
        raise ValueError(
            f"the checkpoint's proxies have shape {tuple(full.shape)}, expected "
            f"{(head.num_classes, head.embedding_dim)}"
        )
    proxy_id = _proxy_state_id(optimizer_state)
    state = dict(optimizer_state["state"])
    if proxy_id in state:
        state[proxy_id] = {
            key: value[head.start : head.stop] if isinstance(value, torch.Tensor) and value.ndim else value
            for key, value in state[proxy_id].items()
        }
    return {"proxies": full[head.start : head.stop]}, {**optimizer_state, "state": state}


def clip_sharded_grad_norm_(backbone: list[nn.Parameter], head: ShardedNPTHead, max_norm: float) -> torch.Tensor:
    """``clip_grad_norm_`` over the backbone (same on every rank) and all shards together. Collective.

    The norm is the one an unsharded run clips: backbone gradients once, each proxy row once.
    """
    with_grad = [p for p in [*backbone, head.proxies] if p.grad is not None]
    backbone_norm = nn.utils.get_total_norm([p.grad for p in backbone if p.grad is not None])
    shard_square = (
        head.proxies.grad.detach().float().pow(2).sum()
        if head.proxies.grad is not None
        else backbone_norm.new_zeros(())
    )
    dist.all_reduce(shard_square)
    total = (backbone_norm.float().pow(2) + shard_square).sqrt()
    nn.utils.clip_grads_with_norm_(with_grad, max_norm, total)
    return total
