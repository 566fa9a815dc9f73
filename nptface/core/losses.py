"""Loss functions on the cosine matrix between embeddings and identity proxies.

The NPT loss (Khalid et al., "NPT-Loss: Demystifying face recognition losses with Nearest
Proxies Triplet", TPAMI 2023, arXiv 2103.03503) is a triplet loss whose anchor is an embedding
z_i, whose positive is its identity's proxy W_{y_i} and whose negatives are the k proxies of
other identities nearest to z_i, all on a hypersphere of radius r::

    L_i = 2 r^2 * sum_{j in top-k negatives of i} max(0, cos_ij - cos_{i,y_i} + delta / (2 r^2))

(the squared-distance triplet ||rz - rW_y||^2 - ||rz - rW_j||^2 + delta rewritten in cosines).
r only scales the gradient; delta = r^2 (a cosine margin of 0.5) is the paper's best value.

Unlike the authors' released code, which zeroes the target cosine and then takes the top-k of
the whole row (so the positive can act as a negative of cosine 0 whenever fewer than k
negatives have a positive cosine), the target column here is *excluded* from the negatives.

The margin-softmax baselines the paper compares with (normalised softmax, CosFace, ArcFace)
share one function, as insightface's CombinedMarginLoss does: the target logit is
``s * (cos(theta + angular_margin) - cosine_margin)`` and the others ``s * cos(theta)``.

Every function takes the [B, C] cosine matrix and the [B] labels, computes in at least float32
(a bf16 cosine matrix is upcast: the hinge and the top-k are too coarse in 8 mantissa bits) and
returns a scalar or per-sample tensor according to ``reduction``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

Reduction = Literal["mean", "sum", "none"]
TopK = int | Literal["all"]
Negatives = Literal["hardest", "semihard"]
NEGATIVES: tuple[str, ...] = ("hardest", "semihard")


def _check_inputs(cos: torch.Tensor, labels: torch.Tensor) -> None:
    """Shape and dtype checks always; the label range only in eager mode (see :func:`check_label_range`)."""
    if cos.ndim != 2:
        raise ValueError(f"cos must be a 2-D [batch, classes] matrix, got shape {tuple(cos.shape)}")
    if labels.ndim != 1 or labels.shape[0] != cos.shape[0]:
        raise ValueError(
            f"labels must be a 1-D tensor of length {cos.shape[0]} (the batch size of cos), "
            f"got shape {tuple(labels.shape)}"
        )
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise TypeError(f"labels must be an integer tensor, got {labels.dtype}")
    check_label_range(labels, cos.shape[1], "the number of classes of cos")


def check_label_range(labels: torch.Tensor, num_classes: int, what: str) -> None:
    """Raise ``ValueError`` unless every label lies in ``[0, num_classes)``; eager mode only.

    Reading ``labels.min()`` back to Python would break a ``torch.compile`` graph (and sync a GPU)
    on every step, so a compiled train step skips it: its labels come from a dataset whose
    ``num_classes`` sized the head, and an out-of-range label still fails in the gather or
    indexing that reads it. ``what`` names where ``num_classes`` comes from, for the message.
    """
    if torch.compiler.is_compiling() or not labels.numel():
        return
    if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        raise ValueError(
            f"labels must lie in [0, {num_classes - 1}] ({what}), "
            f"got values in [{int(labels.min())}, {int(labels.max())}]"
        )


def _reduce(per_sample: torch.Tensor, reduction: Reduction) -> torch.Tensor:
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    if reduction == "none":
        return per_sample
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _upcast(cos: torch.Tensor) -> torch.Tensor:
    return cos if cos.dtype in (torch.float32, torch.float64) else cos.float()


def resolve_k(k: TopK, num_classes: int) -> int:
    """The number of negatives NPT sums over: ``k`` itself, or every other class for ``"all"``."""
    if k == "all":
        if num_classes < 2:
            raise ValueError(f"k='all' needs at least 2 classes, got {num_classes}")
        return num_classes - 1
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"k must be an int or 'all', got {k!r}")
    if not 1 <= k <= num_classes - 1:
        raise ValueError(
            f"k must lie in [1, {num_classes - 1}] (classes minus the target), got k={k} with {num_classes} classes"
        )
    return k


def semihard_key(cos: torch.Tensor, positive: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """A ranking key whose top-k are each row's k semi-hard negatives.

    Semi-hard negatives (FaceNet, Schroff et al. 2015) are the nearest negatives that do *not*
    beat the positive: cosines below ``positive`` keep their value (in [-1, 1)), cosines at or
    above it map to ``-3 - cos`` (in [-4, -2], so below every semi-hard one, the mildest violator
    first). A row with fewer than k negatives under its positive is thus topped up with the
    violators nearest to the positive. ``-inf`` (an excluded column) stays ``-inf``. Invert with
    :func:`cosine_from_semihard_key`. ``out=cos`` writes the key over the cosines (the streamed
    search's chunk: one [B, n] allocation fewer in its hottest loop).
    """
    if out is None:
        return torch.where(cos < positive, cos, -3.0 - cos)
    return torch.where(cos < positive, cos, -3.0 - cos, out=out)


def cosine_from_semihard_key(key: torch.Tensor) -> torch.Tensor:
    return torch.where(key > -1.5, key, -3.0 - key)


def check_negatives(negatives: str) -> None:
    if negatives not in NEGATIVES:
        raise ValueError(f"negatives must be one of {NEGATIVES}, got {negatives!r}")


def reachable_margin_limit(num_classes: int | None) -> float:
    """The largest NPT cosine margin ``delta / (2 r^2)`` that every class can satisfy.

    Training drives each hinge ``cos_neg - cos_pos + margin`` to zero, which needs, for every
    class y, an embedding z whose cosine with the proxy W_y beats its cosine with every other
    proxy by the margin. For unit z, ``min_j z.(W_y - W_j) <= |W_y - mean_{j!=y} W_j|``, and
    averaging ``|W_y - mean_{j!=y} W_j|^2 = (C^2 - 2C W_y.S + |S|^2) / (C-1)^2`` (S the sum of
    the proxies) over the C classes gives ``(C^2 - |S|^2) / (C-1)^2 <= C^2 / (C-1)^2``. So some
    class can never beat the margin ``C / (C-1)``; the regular simplex (proxies with pairwise
    cosine -1/(C-1), embeddings on their proxies) attains it exactly. With ``num_classes`` unknown
    the limit over all C >= 2 is 2: cosines lie in [-1, 1].
    """
    if num_classes is None:
        return 2.0
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    return num_classes / (num_classes - 1)


def check_npt_margin(delta: float, r: float, num_classes: int | None = None) -> None:
    """Refuse a margin no arrangement of proxies can meet (:func:`reachable_margin_limit`).

    The limit itself is reached only by a perfect simplex with every embedding on its proxy, so
    the margin must lie strictly below it.
    """
    if r <= 0:
        raise ValueError(f"r (the hypersphere radius) must be > 0, got {r}")
    if delta < 0:
        raise ValueError(f"delta (the triplet margin) must be >= 0, got {delta}")
    margin, limit = delta / (2.0 * r * r), reachable_margin_limit(num_classes)
    if margin >= limit:
        among = f"{num_classes} classes" if num_classes is not None else "any number of classes"
        raise ValueError(
            f"delta = {delta} with r = {r} asks for the cosine margin delta/(2r^2) = {margin:g}, which no embedding "
            f"can reach among {among} (the limit is C/(C-1) = {limit:g}); choose delta < {2 * r * r * limit:g} "
            f"(the paper uses delta = r^2, a margin of 0.5)"
        )


def npt_loss(
    cos: torch.Tensor,
    labels: torch.Tensor,
    k: TopK = 6,
    delta: float = 1.0,
    r: float = 1.0,
    reduction: Reduction = "mean",
    negatives: Negatives = "hardest",
) -> torch.Tensor:
    """The Nearest Proxies Triplet loss over the k nearest negative proxies of each sample.

    ``cos`` holds cosines between L2-normalised embeddings and L2-normalised proxies. The target
    column is excluded from the negatives (see the module docstring). ``k="all"`` sums over every
    negative: the plain proxy-triplet loss, which the paper shows collapses.

    ``negatives="semihard"`` hinges the k nearest negatives *below* the positive instead (see
    :func:`semihard_key`; the selection reads the positive without gradient). From a random start
    the hardest negatives reward moving every embedding away from all proxies at once, which
    collapses the embedding space to a few dimensions; semi-hard ones keep the negative term near
    the margin wherever the embeddings go, so only pulling towards the positive lowers the loss.
    Once a sample's positive beats every negative, both choices are the same k negatives.
    """
    _check_inputs(cos, labels)
    check_negatives(negatives)
    if r <= 0:
        raise ValueError(f"r (the hypersphere radius) must be > 0, got {r}")
    if delta < 0:
        raise ValueError(f"delta (the triplet margin) must be >= 0, got {delta}")
    cos = _upcast(cos)
    n_neg = resolve_k(k, cos.shape[1])
    target = F.one_hot(labels, cos.shape[1]).bool()
    positive = cos.gather(1, labels[:, None])
    margin = delta / (2.0 * r * r)
    if n_neg == cos.shape[1] - 1:
        hinge = (cos - positive + margin).clamp_min(0.0).masked_fill(target, 0.0)
    else:
        masked = cos.masked_fill(target, float("-inf"))
        if negatives == "semihard":
            chosen = cos.gather(1, semihard_key(masked, positive.detach()).topk(n_neg, dim=1).indices)
        else:
            chosen = masked.topk(n_neg, dim=1).values
        hinge = (chosen - positive + margin).clamp_min(0.0)
    return _reduce(2.0 * r * r * hinge.sum(dim=1), reduction)


def margin_softmax_loss(
    cos: torch.Tensor,
    labels: torch.Tensor,
    s: float = 64.0,
    angular_margin: float = 0.0,
    cosine_margin: float = 0.0,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """Softmax cross-entropy with the target logit ``s * (cos(theta + m_a) - m_c)``.

    (m_a, m_c) = (0, 0) is the normalised softmax, (0, 0.35) CosFace, (0.5, 0) ArcFace.
    Where ``theta + m_a`` would pass pi, cos stops being monotonic in theta and a larger angle
    would earn a *larger* logit; there the target logit falls back to the linear
    ``cos(theta) - sin(pi - m_a) * m_a`` (insightface's rule), which is monotonic and continuous.
    """
    _check_inputs(cos, labels)
    if s <= 0:
        raise ValueError(f"s (the logit scale) must be > 0, got {s}")
    if not 0.0 <= angular_margin < math.pi:
        raise ValueError(f"angular_margin must lie in [0, pi), got {angular_margin}")
    cos = _upcast(cos)
    target_cos = cos.gather(1, labels[:, None])
    target_logit = target_cos
    if angular_margin:
        # Clamping keeps acos' gradient finite at |cos| = 1; it moves the value by < 1e-6.
        eps = 1e-12 if cos.dtype == torch.float64 else 1e-6
        theta = target_cos.clamp(-1.0 + eps, 1.0 - eps).acos()
        beyond_pi = theta > math.pi - angular_margin
        linear = target_cos - math.sin(math.pi - angular_margin) * angular_margin
        target_logit = torch.where(beyond_pi, linear, torch.cos(theta + angular_margin))
    logits = cos.scatter(1, labels[:, None], target_logit - cosine_margin) * s
    return _reduce(F.cross_entropy(logits, labels, reduction="none"), reduction)
