"""Classification heads: the proxy (class-weight) matrix plus the loss that trains it.

Every head owns a ``[num_classes, embedding_dim]`` parameter ``proxies`` and maps
``(embeddings, labels)`` to a :class:`HeadOutput` holding the loss and the cosine matrix, so
that training code, accuracy logging and the federated proxy bank treat NPT and its baselines
alike (one family behind one signature, as insightface's CombinedMarginLoss covers ArcFace and
CosFace). Both embeddings and proxies are L2-normalised before the cosine, so the loss is
invariant to the embedding norm and the proxies live on the unit hypersphere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nptface.core.losses import TopK, margin_softmax_loss, npt_loss, resolve_k


@dataclass
class HeadOutput:
    """The loss to minimise and the ``[B, C]`` cosines it was computed from (for accuracy)."""

    loss: torch.Tensor
    cosines: torch.Tensor


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
            raise ValueError(
                f"embeddings must have shape [batch, {self.embedding_dim}], got {tuple(embeddings.shape)}"
            )
        proxies = self.proxies
        if embeddings.dtype != proxies.dtype:
            embeddings = embeddings.to(proxies.dtype)
        return F.normalize(embeddings, dim=1) @ F.normalize(proxies, dim=1).t()

    def loss(self, cosines: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> HeadOutput:
        cosines = self.cosines(embeddings)
        return HeadOutput(loss=self.loss(cosines, labels), cosines=cosines)

    def hparams(self) -> dict[str, Any]:
        """The head's loss settings, for configs, checkpoints and reports."""
        return {}


class NPTHead(ProxyHead):
    """Nearest Proxies Triplet: hinge against the k nearest negative proxies (the paper's loss)."""

    name = "npt"

    def __init__(
        self, num_classes: int, embedding_dim: int, k: TopK = 6, delta: float = 1.0, r: float = 1.0
    ) -> None:
        super().__init__(num_classes, embedding_dim)
        resolve_k(k, num_classes)
        self.k, self.delta, self.r = k, delta, r

    def loss(self, cosines: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return npt_loss(cosines, labels, k=self.k, delta=self.delta, r=self.r)

    def hparams(self) -> dict[str, Any]:
        return {"k": self.k, "delta": self.delta, "r": self.r}


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


HEADS: dict[str, type[ProxyHead]] = {
    cls.name: cls for cls in (NPTHead, ProxyTripletHead, NormSoftmaxHead, CosFaceHead, ArcFaceHead)
}


def build_head(name: str, num_classes: int, embedding_dim: int, **hparams: Any) -> ProxyHead:
    """Construct a head by its name (``npt``, ``arcface``, ``cosface``, ``normsoftmax``, ``proxytriplet``)."""
    try:
        cls = HEADS[name]
    except KeyError:
        raise ValueError(f"unknown head {name!r}; expected one of {sorted(HEADS)}") from None
    return cls(num_classes, embedding_dim, **hparams)
