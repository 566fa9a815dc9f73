"""Classification heads: the proxy (class-weight) matrix plus the loss that trains it.

Every head owns a ``[num_classes, embedding_dim]`` parameter ``proxies`` and maps
``(embeddings, labels)`` to a :class:`HeadOutput` holding the loss and the cosine matrix, so
that training code, accuracy logging and the federated proxy bank treat NPT and its baselines
alike (one family behind one signature, as insightface's CombinedMarginLoss covers ArcFace and
CosFace). Both embeddings and proxies are L2-normalised before the cosine, so the loss is
invariant to the embedding norm and the proxies live on the unit hypersphere.
"""

from __future__ import annotations

import inspect
import math
import types
import typing
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nptface.core.losses import (
    Negatives,
    TopK,
    check_negatives,
    margin_softmax_loss,
    npt_loss,
    resolve_k,
)
from nptface.core.scalable_npt import (
    DEFAULT_CHUNK_SIZE,
    LazyRows,
    nearest_proxy_cosines,
    selected_npt_loss,
)


@dataclass
class HeadOutput:
    """The loss to minimise, the cosines it read, and each sample's nearest proxy.

    ``cosines`` is the full ``[B, C]`` matrix for the plain heads; a head that never builds it
    (the scalable NPT head) returns the ``[B, 1 + k]`` cosines it selected. ``predictions`` is the
    index of the nearest proxy of every sample in either case, so accuracy is counted alike.
    """

    loss: torch.Tensor
    cosines: torch.Tensor
    predictions: torch.Tensor


class ProxyHead(nn.Module):
    """Base class: owns the proxies and computes cosines; subclasses define ``loss``."""

    name: str = ""

    def __init__(self, num_classes: int, embedding_dim: int) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if embedding_dim < 1:
            raise ValueError(f"embedding_dim must be >= 1, got {embedding_dim}")
        self.num_classes = num_classes
        self.embedding_dim = embedding_dim
        # Unit-norm random proxies: in high dimension they start nearly orthogonal, which is
        # already the spread NPT's Property 2 asks for.
        self.proxies = nn.Parameter(F.normalize(torch.randn(num_classes, embedding_dim), dim=1))

    def cosines(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Cosine of every embedding with every proxy, ``[B, C]``."""
        if embeddings.ndim != 2 or embeddings.shape[1] != self.embedding_dim:
            raise ValueError(f"embeddings must have shape [batch, {self.embedding_dim}], got {tuple(embeddings.shape)}")
        proxies = self.proxies
        if embeddings.dtype != proxies.dtype:
            embeddings = embeddings.to(proxies.dtype)
        return F.normalize(embeddings, dim=1) @ F.normalize(proxies, dim=1).t()

    def loss(self, cosines: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> HeadOutput:
        cosines = self.cosines(embeddings)
        return HeadOutput(loss=self.loss(cosines, labels), cosines=cosines, predictions=cosines.detach().argmax(1))

    def hparams(self) -> dict[str, Any]:
        """The head's loss settings, for configs, checkpoints and reports."""
        return {}


class NPTHead(ProxyHead):
    """Nearest Proxies Triplet: hinge against the k nearest negative proxies (the paper's loss).

    ``negatives="semihard"`` hinges the k nearest negatives below the positive instead (see
    :func:`~nptface.core.losses.npt_loss`); a training loop may switch the attribute between
    steps, e.g. semi-hard while the embedding space forms, then the paper's hardest negatives.
    """

    name = "npt"

    def __init__(
        self,
        num_classes: int,
        embedding_dim: int,
        k: TopK = 6,
        delta: float = 1.0,
        r: float = 1.0,
        negatives: Negatives = "hardest",
    ) -> None:
        super().__init__(num_classes, embedding_dim)
        resolve_k(k, num_classes)
        check_negatives(negatives)
        self.k, self.delta, self.r, self.negatives = k, delta, r, negatives

    def loss(self, cosines: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return npt_loss(cosines, labels, k=self.k, delta=self.delta, r=self.r, negatives=self.negatives)

    def hparams(self) -> dict[str, Any]:
        params: dict[str, Any] = {"k": self.k, "delta": self.delta, "r": self.r}
        if self.negatives != "hardest":
            params["negatives"] = self.negatives
        return params


class ProxyTripletHead(NPTHead):
    """NPT over *all* negatives: the plain proxy-triplet loss the paper shows collapses."""

    name = "proxytriplet"

    def __init__(self, num_classes: int, embedding_dim: int, delta: float = 1.0, r: float = 1.0) -> None:
        super().__init__(num_classes, embedding_dim, k="all", delta=delta, r=r)

    def hparams(self) -> dict[str, Any]:
        return {"delta": self.delta, "r": self.r}


class MarginSoftmaxHead(ProxyHead):
    """Softmax with an angular and/or cosine margin on the target logit (ArcFace/CosFace family)."""

    name = "marginsoftmax"

    def __init__(
        self,
        num_classes: int,
        embedding_dim: int,
        s: float = 64.0,
        angular_margin: float = 0.0,
        cosine_margin: float = 0.0,
    ) -> None:
        super().__init__(num_classes, embedding_dim)
        self.s, self.angular_margin, self.cosine_margin = s, angular_margin, cosine_margin

    def loss(self, cosines: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return margin_softmax_loss(
            cosines, labels, s=self.s, angular_margin=self.angular_margin, cosine_margin=self.cosine_margin
        )

    def hparams(self) -> dict[str, Any]:
        return {"s": self.s, "angular_margin": self.angular_margin, "cosine_margin": self.cosine_margin}


class NormSoftmaxHead(MarginSoftmaxHead):
    """Softmax on scaled cosines without margin (NormFace)."""

    name = "normsoftmax"

    def __init__(self, num_classes: int, embedding_dim: int, s: float = 64.0) -> None:
        super().__init__(num_classes, embedding_dim, s=s)

    def hparams(self) -> dict[str, Any]:
        return {"s": self.s}


class CosFaceHead(MarginSoftmaxHead):
    """CosFace: additive cosine margin m on the target logit."""

    name = "cosface"

    def __init__(self, num_classes: int, embedding_dim: int, s: float = 64.0, m: float = 0.35) -> None:
        super().__init__(num_classes, embedding_dim, s=s, cosine_margin=m)

    def hparams(self) -> dict[str, Any]:
        return {"s": self.s, "m": self.cosine_margin}


class ArcFaceHead(MarginSoftmaxHead):
    """ArcFace: additive angular margin m, with a monotonic fallback where theta + m > pi."""

    name = "arcface"

    def __init__(self, num_classes: int, embedding_dim: int, s: float = 64.0, m: float = 0.5) -> None:
        super().__init__(num_classes, embedding_dim, s=s, angular_margin=m)

    def hparams(self) -> dict[str, Any]:
        return {"s": self.s, "m": self.angular_margin}


class PartialFCArcFaceHead(ArcFaceHead):
    """ArcFace over a random share of the classes each step (Partial FC, An et al. 2021).

    Every class present in the batch is kept, the rest drawn at random up to ``sample_rate`` of
    all classes: the softmax's cost and proxy gradient shrink by that share, the way margin
    softmax is trained at 100k+ identities. ``predictions`` are the nearest sampled proxy.
    """

    name = "partialfc_arcface"

    def __init__(
        self, num_classes: int, embedding_dim: int, s: float = 64.0, m: float = 0.5, sample_rate: float = 0.1
    ) -> None:
        super().__init__(num_classes, embedding_dim, s=s, m=m)
        if not 0.0 < sample_rate <= 1.0:
            raise ValueError(f"sample_rate must lie in (0, 1], got {sample_rate}")
        self.sample_rate = sample_rate

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> HeadOutput:
        if not self.training:
            return super().forward(embeddings, labels)
        with torch.no_grad():
            priority = torch.rand(self.num_classes, device=labels.device)
            priority[labels] = 2.0  # above every random draw, so the batch's classes are always kept
            count = int(self.sample_rate * self.num_classes)
            if count < labels.numel():
                # Only then can the batch's distinct classes outnumber the share. Counting them
                # (unique) has a data-dependent shape that breaks torch.compile, so only here.
                count = max(count, len(labels.unique()))
            sampled = priority.topk(count).indices.sort().values
        cosines = F.normalize(embeddings.to(self.proxies.dtype), dim=1) @ F.normalize(self.proxies[sampled], dim=1).t()
        loss = self.loss(cosines, torch.searchsorted(sampled, labels))
        return HeadOutput(loss=loss, cosines=cosines, predictions=sampled[cosines.detach().argmax(1)])

    def hparams(self) -> dict[str, Any]:
        return {**super().hparams(), "sample_rate": self.sample_rate}


class ScalableNPTHead(ProxyHead):
    """NPT for very many identities: streamed top-k, gradient through B·(k+1) proxy rows.

    Trains exactly like :class:`~nptface.core.heads.NPTHead` but never builds the ``[B, C]``
    cosine matrix. Its :class:`HeadOutput` ``cosines`` are the ``[B, 1 + k]`` selected ones
    (positive first, negatives descending) and ``predictions`` the nearest proxy of each sample
    (the positive when it beats the best negative; a tie counts as wrong).
    :meth:`ProxyHead.cosines` still gives the full matrix for evaluation at small scale.
    ``candidate_rate > 0`` trades exactness for speed: in training, negatives are searched only
    among a random ``candidate_rate`` share of the classes plus each batch class's previous top-k.
    ``negatives="semihard"`` selects semi-hard negatives as :class:`NPTHead` does; the nearest
    proxy for ``predictions`` then takes a second (gradient-free) search for the single hardest.
    ``lazy_rows`` (an attribute, set by the trainer's ``optim.sparse_proxies``: how the proxies
    are stored and updated, not what is learnt) is the optimiser's
    :class:`~nptface.core.scalable_npt.LazyRows` view: the head then reads every row through it
    and ``proxies.grad`` is a sparse COO tensor of the touched rows.
    """

    name = "scalable_npt"
    lazy_rows: LazyRows | None = None

    def __init__(
        self,
        num_classes: int,
        embedding_dim: int,
        k: TopK = 6,
        delta: float = 1.0,
        r: float = 1.0,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        candidate_rate: float = 0.0,
        negatives: Negatives = "hardest",
    ) -> None:
        super().__init__(num_classes, embedding_dim)
        check_negatives(negatives)
        self.negatives = negatives
        if k == "all":
            raise ValueError("ScalableNPTHead does not support k='all' (it gathers every proxy); use ProxyTripletHead")
        resolve_k(k, num_classes)
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
        if delta < 0:
            raise ValueError(f"delta (the triplet margin) must be >= 0, got {delta}")
        if r <= 0:
            raise ValueError(f"r (the hypersphere radius) must be > 0, got {r}")
        self.k, self.delta, self.r, self.chunk_size = k, delta, r, chunk_size
        if not 0.0 <= candidate_rate <= 1.0:
            raise ValueError(f"candidate_rate must lie in [0, 1] (0 = exact search), got {candidate_rate}")
        self.candidate_rate = candidate_rate
        if candidate_rate:
            # Each class's k nearest negatives when it was last in a batch: hard negatives that a
            # random sample would usually miss stay in the next search pool.
            self.register_buffer("neighbours", torch.full((num_classes, k), -1, dtype=torch.long))

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> HeadOutput:
        candidates = self._candidates(labels) if self.training and self.candidate_rate else None
        cosines, index = nearest_proxy_cosines(
            embeddings,
            self.proxies,
            labels,
            self.k,
            self.chunk_size,
            candidates,
            self.negatives,
            self.lazy_rows,
        )
        if candidates is not None:
            self.neighbours[labels] = index[:, 1:].detach()
        loss = selected_npt_loss(cosines, self.delta, self.r, "mean")
        # The nearest proxy is the positive when it beats the best negative (a tie counts as wrong).
        selected, nearest = cosines.detach(), index
        if self.negatives != "hardest":
            with torch.no_grad():
                selected, nearest = nearest_proxy_cosines(
                    embeddings, self.proxies, labels, 1, self.chunk_size, candidates, lazy_rows=self.lazy_rows
                )
        predictions = torch.where(selected[:, 0] > selected[:, 1], labels, nearest[:, 1])
        return HeadOutput(loss=loss, cosines=cosines, predictions=predictions)

    def hparams(self) -> dict[str, Any]:
        params = {
            "k": self.k,
            "delta": self.delta,
            "r": self.r,
            "chunk_size": self.chunk_size,
            "candidate_rate": self.candidate_rate,
        }
        if self.negatives != "hardest":
            params["negatives"] = self.negatives
        return params

    def _candidates(self, labels: torch.Tensor) -> torch.Tensor:
        """A Partial-FC-style random sample of classes plus the batch classes' previous top-k."""
        sampled = torch.randint(
            0, self.num_classes, (max(1, int(self.candidate_rate * self.num_classes)),), device=labels.device
        )
        previous = self.neighbours[labels]
        # A class never seen yet has no top-k (-1): stand its own label in, which the search pool
        # holds anyway, rather than drop the -1s (a data-dependent shape that breaks torch.compile).
        previous = torch.where(previous >= 0, previous, labels[:, None].to(previous.dtype))
        return torch.cat([sampled, previous.flatten()])


HEADS: dict[str, type[ProxyHead]] = {
    cls.name: cls
    for cls in (
        NPTHead,
        ProxyTripletHead,
        NormSoftmaxHead,
        CosFaceHead,
        ArcFaceHead,
        PartialFCArcFaceHead,
        ScalableNPTHead,
    )
}


def _head_class(name: str) -> type[ProxyHead]:
    try:
        return HEADS[name]
    except KeyError:
        raise ValueError(f"unknown head {name!r}; expected one of {sorted(HEADS)}") from None


def _settings(name: str) -> dict[str, inspect.Parameter]:
    """The head's own settings: its constructor's parameters after num_classes and embedding_dim."""
    parameters = inspect.signature(_head_class(name).__init__).parameters
    return {key: p for key, p in parameters.items() if key not in ("self", "num_classes", "embedding_dim")}


def head_defaults(name: str) -> dict[str, Any]:
    """Every setting of the named head with its default value (what ``head.params`` starts from)."""
    return {key: parameter.default for key, parameter in _settings(name).items()}


def _fits(value: Any, annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, option) for option in typing.get_args(annotation))
    if origin is typing.Literal:
        return value in typing.get_args(annotation)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, annotation) if isinstance(annotation, type) else True


def _describe(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(option) for option in typing.get_args(annotation))
    if origin is typing.Literal:
        return " or ".join(repr(option) for option in typing.get_args(annotation))
    return {float: "a finite number", int: "an integer"}.get(
        annotation, getattr(annotation, "__name__", str(annotation))
    )


def check_head_params(name: str, params: dict[str, Any]) -> None:
    """Raise ``ValueError`` naming the parameter unless every one of ``params`` is a setting of the
    named head with a value of its type (what :func:`build_head` would otherwise reject late, or not at all)."""
    settings = _settings(name)
    unknown = sorted(set(params) - set(settings))
    if unknown:
        raise ValueError(f"head {name!r} has no parameter(s) {unknown}; expected some of {sorted(settings)}")
    hints = typing.get_type_hints(_head_class(name).__init__)
    for key, value in params.items():
        if not _fits(value, hints[key]):
            raise ValueError(f"{key} = {value!r} does not fit head {name!r}: expected {_describe(hints[key])}")


def build_head(name: str, num_classes: int, embedding_dim: int, **hparams: Any) -> ProxyHead:
    """Construct a head by name: ``npt``, ``scalable_npt``, ``arcface``, ``partialfc_arcface``, ``cosface``,
    ``normsoftmax``, ``proxytriplet``."""
    return _head_class(name)(num_classes, embedding_dim, **hparams)
