"""The NPT loss at million-identity scale: stream the proxies, backpropagate through B·(k+1) rows.

NPT (Khalid et al., TPAMI 2023, arXiv 2103.03503; see :mod:`nptface.core.losses`) reads only two
things from each row of the cosine matrix: the target cosine and the k largest non-target ones.
So the ``[B, C]`` matrix never has to exist. :func:`streamed_topk_cosines` walks the proxies in
chunks of classes under ``no_grad``, keeping a running top-k of negatives per sample (working
memory ``O((B + d) * chunk_size)`` however large C is), and :func:`nearest_proxy_cosines` then
recomputes, with autograd, only the selected ``B * (k + 1)`` cosines from the gathered rows. The loss
is :func:`~nptface.core.losses.npt_loss` itself, applied to that ``[B, 1 + k]`` matrix, so the
hinge, its reduction and its argument checks exist once.

Why this is exact, not an approximation: on the region where the top-k set does not change, the
full loss is a function of the selected cosines alone, and the selection (an arg-top-k) is
piecewise constant, so it has zero derivative almost everywhere; the full loss and this one
therefore have the same value and the same gradient, for the embeddings and for every proxy row
(zero on rows that are no sample's positive or top-k negative). Two caveats, both about ties:
where negatives tie at the k-th place either choice gives the same value, but the gradient goes
to whichever tied row was chosen (the same row as ``torch.topk`` on the full matrix picks only by
chance); and the chunked and the full matrix products may round a cosine differently in the last
bit, so two negatives closer than that can swap places, changing the loss by at most that
rounding error.

The proxy gradient is dense by default: gathering ``proxies[index]`` under autograd
backpropagates as an ``index_put_`` with accumulation into a zero ``[C, d]`` tensor, which lands
in ``proxies.grad`` like any other parameter's, so plain SGD works. With ``lazy_rows`` (a
:class:`LazyRows`, kept by an optimiser that writes only the rows a step touched, such as the
trainer's ``LazyRowSGD``) the search reads every row through it as it is *now* (the optimiser
catches untouched rows up on the fly, chunk by chunk, without writing them), the selected rows
are brought up to date in place, and they are gathered by ``F.embedding(..., sparse=True)``:
``proxies.grad`` is then a sparse COO tensor of the B·(k+1) touched rows, the same values without
the ``[C, d]`` zeros.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F

from nptface.core.losses import (
    Negatives,
    Reduction,
    TopK,
    check_label_range,
    check_negatives,
    cosine_from_semihard_key,
    npt_loss,
    resolve_k,
    semihard_key,
)

DEFAULT_CHUNK_SIZE = 65536


class LazyRows(Protocol):
    """Proxy rows an optimiser updates lazily: read them as they are now, or bring some up to date."""

    def read(self, rows: slice | torch.Tensor) -> torch.Tensor:
        """The current values of ``proxies[rows]``, not to be written to (nothing is written back)."""
        ...

    def refresh(self, rows: torch.Tensor) -> None:
        """Write the current values of ``proxies[rows]`` into the parameter (before autograd reads them)."""
        ...


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # The top-k and the hinge are too coarse in 8 mantissa bits (as in losses.py): at least fp32.
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def _check_problem(
    embeddings: torch.Tensor, proxies: torch.Tensor, labels: torch.Tensor, k: TopK, chunk_size: int
) -> int:
    """Validate the arguments shared by both public functions; returns the number of negatives."""
    if proxies.ndim != 2:
        raise ValueError(f"proxies must be a 2-D [classes, dim] matrix, got shape {tuple(proxies.shape)}")
    num_classes, dim = proxies.shape
    if embeddings.ndim != 2 or embeddings.shape[1] != dim:
        raise ValueError(f"embeddings must have shape [batch, {dim}] (the proxies' dim), got {tuple(embeddings.shape)}")
    if labels.ndim != 1 or labels.shape[0] != embeddings.shape[0]:
        raise ValueError(
            f"labels must be a 1-D tensor of length {embeddings.shape[0]} (the batch size), "
            f"got shape {tuple(labels.shape)}"
        )
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise TypeError(f"labels must be an integer tensor, got {labels.dtype}")
    check_label_range(labels, num_classes, "the number of proxies")
    if k == "all":
        raise ValueError(
            "k='all' touches every proxy, so streaming saves nothing; use npt_loss on the "
            "full cosine matrix (NPTHead / ProxyTripletHead) instead"
        )
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    return resolve_k(k, num_classes)


def _exclude_targets(cosines: torch.Tensor, labels: torch.Tensor, start: int) -> None:
    """Set each row's own class to -inf where it falls in this chunk (columns ``start..``).

    One scatter of B values instead of comparing all B x n columns with the labels; rows whose
    class lies outside the chunk write back their own value. Fixed shapes throughout (no boolean
    indexing), so a torch.compile graph does not break in every chunk.
    """
    local = labels[:, None] - start
    inside = (local >= 0) & (local < cosines.shape[1])
    index = local.clamp(0, cosines.shape[1] - 1)
    kept = cosines.gather(1, index)
    cosines.scatter_(1, index, torch.where(inside, torch.full_like(kept, float("-inf")), kept))


@torch.no_grad()
def streamed_topk_cosines(
    embeddings_normalised: torch.Tensor,
    proxies: torch.Tensor,
    labels: torch.Tensor,
    k: int,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    negatives: Negatives = "hardest",
    lazy_rows: LazyRows | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The k largest non-target cosines of each sample, without materialising ``[B, C]``.

    ``embeddings_normalised`` must already be L2-normalised; each chunk of ``chunk_size`` proxies
    is normalised on the fly. Returns ``(neg_values [B, k], neg_indices [B, k], pos_values [B])``
    with the negatives in descending order, no gradient, in at least float32.
    ``negatives="semihard"`` returns the k semi-hard negatives instead (a running top-k of
    :func:`~nptface.core.losses.semihard_key`, exact for the same reason), semi-hard ones first.
    With ``lazy_rows`` every row is read through it (see the module docstring).
    """
    n_neg = _check_problem(embeddings_normalised, proxies, labels, k, chunk_size)
    check_negatives(negatives)
    dtype = _compute_dtype(torch.promote_types(embeddings_normalised.dtype, proxies.dtype))
    queries = embeddings_normalised.to(dtype)
    read = proxies.__getitem__ if lazy_rows is None else lazy_rows.read
    positive = F.normalize(read(labels).to(dtype), dim=1)
    pos_values = (queries * positive).sum(dim=1)
    batch = queries.shape[0]
    best_values = queries.new_full((batch, n_neg), float("-inf"))
    # Placeholders never survive: there are at least k finite negatives, all above -inf.
    best_indices = torch.full((batch, n_neg), -1, dtype=torch.long, device=queries.device)
    for start in range(0, proxies.shape[0], chunk_size):
        chunk = read(slice(start, start + chunk_size)).to(dtype)
        # Scale the [B, n] product by 1/|w| rather than normalising the [n, d] chunk: half the
        # divisions (B < d here), the same cosines up to rounding (F.normalize's eps kept).
        cosines = queries @ chunk.t()
        cosines.mul_(torch.linalg.vector_norm(chunk, dim=1).clamp_min_(1e-12).reciprocal_())
        _exclude_targets(cosines, labels, start)
        if negatives == "semihard":
            cosines = semihard_key(cosines, pos_values[:, None], out=cosines)
        chunk_best = cosines.topk(min(n_neg, chunk.shape[0]), dim=1)
        merged = torch.cat([best_values, chunk_best.values], dim=1).topk(n_neg, dim=1)
        best_values = merged.values
        best_indices = torch.cat([best_indices, chunk_best.indices + start], dim=1).gather(1, merged.indices)
    if negatives == "semihard":
        best_values = cosine_from_semihard_key(best_values)
    return best_values, best_indices, pos_values


@torch.no_grad()
def candidate_topk_indices(
    embeddings_normalised: torch.Tensor,
    proxies: torch.Tensor,
    labels: torch.Tensor,
    k: int,
    candidates: torch.Tensor,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    negatives: Negatives = "hardest",
    lazy_rows: LazyRows | None = None,
) -> torch.Tensor:
    """Indices ``[B, k]`` of the k nearest negatives found among ``candidates`` (an approximation).

    The search pool is ``candidates`` plus the batch's own labels (so every positive can be
    excluded by position). Negatives outside the pool are missed, so the selected cosines are at
    most the true top-k and the loss can only be underestimated; keeping each class's previous
    top-k in the pool (see :class:`~nptface.core.heads.ScalableNPTHead`) keeps the hard ones in.
    Under ``torch.compile`` this is where the graph breaks (the exact search traces whole): the
    deduplicated pool's size is known only once ``unique`` has run.
    """
    pool = torch.cat([candidates.to(labels.device).long(), labels.long()]).unique()
    if pool.numel() - 1 < k:
        raise ValueError(f"the candidate pool holds {pool.numel()} classes; k={k} negatives need at least {k + 1}")
    local_labels = torch.searchsorted(pool, labels.long())
    _, local_negatives, _ = streamed_topk_cosines(
        embeddings_normalised,
        proxies[pool] if lazy_rows is None else lazy_rows.read(pool),
        local_labels,
        k,
        chunk_size,
        negatives,
    )
    return pool[local_negatives]


def nearest_proxy_cosines(
    embeddings: torch.Tensor,
    proxies: torch.Tensor,
    labels: torch.Tensor,
    k: TopK = 6,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    candidates: torch.Tensor | None = None,
    negatives: Negatives = "hardest",
    lazy_rows: LazyRows | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``[B, 1 + k]`` cosines NPT reads, with autograd, and the proxy rows they came from.

    Column 0 is each sample's positive (its own proxy), columns 1..k its k nearest negative
    proxies in descending order. ``embeddings`` need not be normalised. The gradient flows into
    ``embeddings`` and into the gathered rows of ``proxies`` only. With ``candidates`` (class
    ids) the negatives are searched among those only: see :func:`candidate_topk_indices`.
    ``negatives="semihard"`` selects semi-hard negatives (see :func:`streamed_topk_cosines`).
    With ``lazy_rows`` the search reads rows through it, the selected rows are brought up to date
    before autograd reads them, and the proxies' gradient is a sparse COO tensor of those rows.
    """
    n_neg = _check_problem(embeddings, proxies, labels, k, chunk_size)
    dtype = _compute_dtype(torch.promote_types(embeddings.dtype, proxies.dtype))
    queries = F.normalize(embeddings.to(dtype), dim=1)
    if candidates is None:
        _, neg_indices, _ = streamed_topk_cosines(
            queries.detach(), proxies, labels, n_neg, chunk_size, negatives, lazy_rows
        )
    else:
        neg_indices = candidate_topk_indices(
            queries.detach(), proxies, labels, n_neg, candidates, chunk_size, negatives, lazy_rows
        )
    index = torch.cat([labels[:, None].long(), neg_indices], dim=1)
    if lazy_rows is None:
        rows = proxies[index]
    else:
        lazy_rows.refresh(index)
        rows = F.embedding(index, proxies, sparse=True)
    gathered = F.normalize(rows.to(dtype), dim=2)
    cosines = torch.bmm(gathered, queries[:, :, None]).squeeze(2)
    return cosines, index


def scalable_npt_loss(
    embeddings: torch.Tensor,
    proxies: torch.Tensor,
    labels: torch.Tensor,
    k: TopK = 6,
    delta: float = 1.0,
    r: float = 1.0,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    reduction: Reduction = "mean",
    negatives: Negatives = "hardest",
) -> torch.Tensor:
    """:func:`~nptface.core.losses.npt_loss` on the cosines of ``embeddings`` and ``proxies``.

    Same value and gradients as ``npt_loss(normalize(embeddings) @ normalize(proxies).T, ...)``
    (up to ties and last-bit rounding, see the module docstring), in ``O((B + d) * chunk_size)``
    memory beyond the dense proxy gradient. ``k="all"`` is refused: it would gather every proxy.
    """
    cosines, _ = nearest_proxy_cosines(embeddings, proxies, labels, k, chunk_size, negatives=negatives)
    return selected_npt_loss(cosines, delta, r, reduction)


def selected_npt_loss(cosines: torch.Tensor, delta: float, r: float, reduction: Reduction) -> torch.Tensor:
    # With the positive in column 0 and exactly k other columns, npt_loss over "all" negatives is
    # the hinge over the k selected ones.
    target = torch.zeros(cosines.shape[0], dtype=torch.long, device=cosines.device)
    return npt_loss(cosines, target, k="all", delta=delta, r=r, reduction=reduction)
