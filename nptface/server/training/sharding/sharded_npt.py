"""NPT with the proxy matrix sharded by class across DDP ranks: top-k merged, not logits gathered.

Each rank holds the rows ``[start, start + C_r)`` of the proxies. The batch's embeddings are
all-gathered (with autograd); each rank streams its shard for the k nearest negatives of every
sample (:func:`~nptface.core.scalable_npt.streamed_topk_cosines`), the ranks all-gather only
those ``(value, index)`` pairs — ``W * B * k`` numbers instead of ``B * C`` logits — and every
rank picks the same global top-k. Each rank then computes, with autograd, the selected cosines of
the rows it owns (zeros elsewhere) and an autograd all-reduce sums them into the full
``[B, 1 + k]`` matrix, on which :func:`~nptface.core.scalable_npt.selected_npt_loss` runs.

Gradients: every rank computes the same global loss L. Backpropagating ``L / W`` on each rank
gives every shard row exactly dL/dW_row (the all-reduce's backward sums the W identical upstream
gradients) and every rank's local embeddings exactly dL/de; DDP then *averages* the backbone's
gradients over ranks where the global loss needs their *sum*, so the caller multiplies backbone
gradients by W after backward (``backbone_grad_scale``). Tests check all of it against the
single-process loss on the full matrix.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from nptface.core.losses import Reduction
from nptface.core.scalable_npt import DEFAULT_CHUNK_SIZE, LazyRows, selected_npt_loss, streamed_topk_cosines


class _AllGather(torch.autograd.Function):
    """Concatenate every rank's ``x`` along dim 0; backward sums each slice's gradient over ranks."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        world = dist.get_world_size()
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous())
        ctx.rank, ctx.size = dist.get_rank(), x.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.size : (ctx.rank + 1) * ctx.size]


class _AllReduceSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        out = x.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        out = grad.clone()
        dist.all_reduce(out)
        return out


def backbone_grad_scale() -> float:
    """Multiply backbone gradients by this after backward (DDP averages; the global loss sums)."""
    return float(dist.get_world_size())


def sharded_selected_cosines(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    shard: torch.Tensor,
    shard_start: int,
    num_classes: int,
    k: int = 6,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    lazy_rows: LazyRows | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``[W * B, 1 + k]`` cosines NPT reads for the whole global batch, and their proxy rows.

    Identical on every rank: rows are the ranks' local batches in rank order, column 0 each
    sample's positive, columns 1..k its k nearest negatives over all shards (descending). The
    cosines carry autograd into ``embeddings`` and ``shard`` (see the module doc for the scale).
    ``embeddings``/``labels`` are this rank's local batch (labels are global class ids);
    ``shard`` holds proxy rows ``shard_start .. shard_start + len(shard)`` of ``num_classes``.
    Every rank must pass the same local batch size. ``lazy_rows`` (the shard's rows, by local
    index) is as in :func:`~nptface.core.scalable_npt.nearest_proxy_cosines`.
    """
    world = dist.get_world_size()
    if not 0 < k < num_classes:
        raise ValueError(f"k must be in [1, {num_classes - 1}], got {k}")
    if shard.shape[0] < k + 1:
        raise ValueError(f"a shard of {shard.shape[0]} rows cannot supply k={k} negatives; shards need >= k + 1 rows")
    queries = F.normalize(_AllGather.apply(embeddings.float()), dim=1)
    all_labels = _gather_ints(labels.long())
    size = shard.shape[0]
    with torch.no_grad():
        # A dummy row at position `size` stands for "the positive lives on another rank", so the
        # streamed search can exclude each sample's positive by position; one extra candidate per
        # sample makes up for the dummy when it is picked, and it is masked out below.
        local = all_labels - shard_start
        owned = (local >= 0) & (local < size)
        search_labels = torch.where(owned, local, torch.full_like(local, size))
        current = shard.detach() if lazy_rows is None else lazy_rows.read(slice(None))
        padded = torch.cat([current.float(), shard.new_zeros(1, shard.shape[1]).float()])
        values, indices, _ = streamed_topk_cosines(
            queries.detach(), padded, search_labels, min(k + 1, size), chunk_size
        )
        values = values.masked_fill(indices == size, float("-inf"))
        gathered_values = [torch.empty_like(values) for _ in range(world)]
        gathered_indices = [torch.empty_like(indices) for _ in range(world)]
        dist.all_gather(gathered_values, values.contiguous())
        dist.all_gather(gathered_indices, (indices + shard_start).contiguous())
        merged = torch.cat(gathered_values, dim=1).topk(k, dim=1)
        negatives = torch.cat(gathered_indices, dim=1).gather(1, merged.indices)
    index = torch.cat([all_labels[:, None], negatives], dim=1)
    mine = (index >= shard_start) & (index < shard_start + size)
    # Cells whose row lives on another rank read local row 0 and are masked: a zero gradient there.
    local_index = torch.where(mine, index - shard_start, torch.zeros_like(index))
    if lazy_rows is None:
        gathered = shard[local_index]
    else:
        lazy_rows.refresh(local_index)
        gathered = F.embedding(local_index, shard, sparse=True)
    rows = F.normalize(gathered.float(), dim=2)
    partial = torch.bmm(rows, queries[:, :, None]).squeeze(2) * mine
    return _AllReduceSum.apply(partial), index


def sharded_npt_loss(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    shard: torch.Tensor,
    shard_start: int,
    num_classes: int,
    k: int = 6,
    delta: float = 1.0,
    r: float = 1.0,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """This rank's share of the global NPT loss (already divided by the world size; see module doc).

    Arguments as :func:`sharded_selected_cosines`.
    """
    cosines, _ = sharded_selected_cosines(embeddings, labels, shard, shard_start, num_classes, k, chunk_size)
    return selected_npt_loss(cosines, delta, r, reduction) / dist.get_world_size()


def _gather_ints(values: torch.Tensor) -> torch.Tensor:
    parts = [torch.empty_like(values) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, values.contiguous())
    return torch.cat(parts)
