"""The proxy-linkage attack: can a client tie a bank row it was sent to a person's photo?

An honest-but-curious client receives rows of the bank (negatives). A row is close to the mean
embedding of one identity, so the client embeds a gallery of face photos with the backbone it
was sent, and names each row by its nearest gallery photo (rank-1 identification, the rows as
probes). Rank-1 success = that photo shows the row's identity. The gallery holds held-out photos
of every client identity, so chance is one over the number of gallery identities. This is the
privacy test of ``proxy-sharing``: a mode that claims privacy should bring rank-1 to chance;
``all`` shows what raw rows give away. The gallery comes from the simulation's partition plan — a
measurement harness, not something a deployed server can or does build — so the attack watches
the round loop through its observer hook (:class:`LinkageAttack`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from nptface.client.protocol import ClientSettings
from nptface.core.datasets import materialize
from nptface.core.embedding import embed_dataset
from nptface.core.mobilefacenet import MobileFaceNet, MobileFaceNetConfig
from nptface.core.partitions import client_datasets
from nptface.core.verification import rank1_identification, unit_rows
from nptface.server.federation.observer import RoundView

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Gallery:
    embeddings: np.ndarray  # [n, d] unit rows
    identities: list[str]  # per photo

    @property
    def num_identities(self) -> int:
        return len(set(self.identities))


@dataclass(frozen=True)
class LinkageResult:
    rows: int  # client rows the attacker received (its own and public rows excluded)
    hits: int
    chance: float

    @property
    def rank1(self) -> float:
        return self.hits / self.rows if self.rows else float("nan")

    def to_metrics(self) -> dict[str, float]:
        """History fields (strict JSON: no rank-1 at all when there was nothing to link)."""
        out = {"attack/rows": float(self.rows), "attack/chance": self.chance}
        return {**out, "attack/rank1": self.rank1} if self.rows else out


def build_gallery(model: nn.Module, held_out_sets: list[Any]) -> Gallery | None:
    """Every client's held-out photos embedded, named as the clients register them; None when the
    backbone embeds a photo as NaN/inf (a poisoned aggregate can), which leaves nothing to link by."""
    embeddings, identities = [], []
    for data in held_out_sets:
        if data is None or len(data) == 0:
            continue
        embeddings.append(embed_dataset(model, data))
        identities.extend(data.class_names[int(label)] for label in np.asarray(data.labels))
    if not embeddings:
        raise ValueError("the linkage attack needs held-out photos (eval-images >= 1)")
    stacked = np.concatenate(embeddings)
    if not np.isfinite(stacked).all():
        return None
    return Gallery(unit_rows(stacked, name="gallery embeddings"), identities)


def linkage_attack(rows: np.ndarray, row_ids: list[str], gallery: Gallery) -> LinkageResult:
    """Rank-1 linkage of each row to the gallery by cosine; rows of identities outside the gallery are not attacked."""
    known = set(gallery.identities)
    keep = [i for i, identity in enumerate(row_ids) if identity in known]
    chance = 1.0 / gallery.num_identities
    if not keep:
        return LinkageResult(0, 0, chance)
    rank1 = rank1_identification(
        gallery.embeddings, np.asarray(gallery.identities), np.asarray(rows)[keep], np.asarray(row_ids)[keep]
    )
    return LinkageResult(len(keep), round(rank1 * len(keep)), chance)


def held_out_sets(settings: ClientSettings) -> list[Any]:
    """Every client's held-out photos (None for a client without any), from the partition plan."""
    plan = settings.plan()
    return [
        materialize(held, progress=False) if held is not None else None
        for held in (
            client_datasets(plan, c.partition_id, settings.image_size, seed=settings.partition_seed)[1]
            for c in plan.clients
        )
    ]


class LinkageAttack:
    """Round observer: the attack from ``partition``'s view of every round that partition is sampled in."""

    def __init__(self, partition: int) -> None:
        self.partition = partition
        self._held_out: list[Any] | None = None  # built once, on the first round the attacker is sampled

    def __call__(self, view: RoundView) -> dict[str, float]:
        attacker = next((c for c in view.clients if c.partition == self.partition), None)
        if attacker is None:
            return {}
        if self._held_out is None:
            self._held_out = held_out_sets(view.settings)
        model = MobileFaceNet(MobileFaceNetConfig(**json.loads(view.settings.model_json)))
        model.load_state_dict(view.backbone, strict=False)
        gallery = build_gallery(model.eval(), self._held_out)
        if gallery is None:
            logger.warning("round %d: the backbone embeds gallery photos as NaN/inf; linkage not measured", view.round)
            return {}
        return linkage_attack(attacker.negative_rows, attacker.negative_ids, gallery).to_metrics()
