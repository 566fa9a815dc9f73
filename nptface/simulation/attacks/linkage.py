"""The proxy-linkage attack: can a client tie a bank row it was sent to a person's photo?

An honest-but-curious client receives rows of the bank (negatives). A row is close to the mean
embedding of one identity, so the client embeds a gallery of face photos with the backbone it
was sent, and names each row by its nearest gallery photo. Rank-1 success = that photo shows the
row's identity. The gallery holds held-out photos of every client identity, so chance is one over
the number of gallery identities. This is the privacy test of ``proxy-sharing``: a mode that
claims privacy should bring rank-1 to chance; ``all`` shows what raw rows give away. The gallery
comes from the simulation's partition plan — a measurement harness, not something a deployed
server can or does build.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nptface.core.embedding import embed_dataset


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


def build_gallery(model: nn.Module, held_out_sets: list[Any]) -> Gallery:
    """Embed every client's held-out photos; identities named as the clients register them."""
    embeddings, identities = [], []
    for data in held_out_sets:
        if data is None or len(data) == 0:
            continue
        embeddings.append(embed_dataset(model, data))
        identities.extend(data.class_names[int(label)] for label in np.asarray(data.labels))
    if not embeddings:
        raise ValueError("the linkage attack needs held-out photos (eval-images >= 1)")
    unit = F.normalize(torch.as_tensor(np.concatenate(embeddings)), dim=1).numpy()
    return Gallery(unit, identities)


def linkage_attack(rows: np.ndarray, row_ids: list[str], gallery: Gallery) -> LinkageResult:
    """Rank-1 linkage of each row to the gallery by cosine; rows of identities outside the gallery are not attacked."""
    known = set(gallery.identities)
    keep = [i for i, identity in enumerate(row_ids) if identity in known]
    chance = 1.0 / gallery.num_identities
    if not keep:
        return LinkageResult(0, 0, chance)
    queries = np.asarray(rows, dtype=np.float32)[keep]
    queries = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
    nearest = np.argmax(queries @ gallery.embeddings.T, axis=1)
    hits = sum(gallery.identities[int(j)] == row_ids[i] for i, j in zip(keep, nearest, strict=True))
    return LinkageResult(len(keep), int(hits), chance)
