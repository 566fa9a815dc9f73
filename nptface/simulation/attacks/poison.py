"""Malicious clients for robustness tests: what a poisoned update looks like, injected on purpose.

``poison = "scale:0,noise:1,flip:2"`` makes partition 0 send its backbone update and rows scaled
x100 (a boosting attack), partition 1 send Gaussian noise in place of its update (as large per
tensor as the global weights), and partition 2 train on deranged labels (every identity's photos
under another identity's name: label flipping). The server is not told; the robust options
(norm screens, median / trimmed-mean aggregation) have to catch them.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

KINDS = ("scale", "noise", "flip")
SCALE = 100.0


def parse_poison(spec: str) -> dict[int, str]:
    """``"scale:0,flip:2"`` → ``{0: "scale", 2: "flip"}``; a clear error for anything else."""
    out: dict[int, str] = {}
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        kind, _, partition = item.partition(":")
        if kind not in KINDS or not partition.strip().isdigit():
            raise ValueError(f"poison: expected KIND:PARTITION with KIND in {KINDS}, got {item!r}")
        if int(partition) in out:
            raise ValueError(f"poison: partition {partition} is listed twice")
        out[int(partition)] = kind
    return out


class FlippedLabels(Dataset):
    """The same images with identity labels permuted so that no identity keeps its own photos."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        n = dataset.num_classes
        order = np.random.default_rng(seed).permutation(n)
        self.mapping = np.empty(n, dtype=np.int64)
        self.mapping[order] = np.roll(order, 1)  # a cyclic shift of a random order: a derangement for n > 1
        self.labels = self.mapping[np.asarray(dataset.labels)]
        self.num_classes = n
        self.class_names = dataset.class_names

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):  # type: ignore[no-untyped-def]
        image, label = self.dataset[index]
        return image, int(self.mapping[int(label)])


def poison_update(kind: str, weights: dict[str, torch.Tensor], global_weights: dict[str, torch.Tensor],
                  rows: np.ndarray, seed: int) -> tuple[dict[str, torch.Tensor], np.ndarray]:
    """What a ``scale`` or ``noise`` attacker sends instead of its honest ``weights`` and ``rows``."""
    if kind == "scale":
        boosted = {k: global_weights[k] + SCALE * (w - global_weights[k]) for k, w in weights.items()}
        return boosted, rows * SCALE
    if kind == "noise":
        generator = torch.Generator().manual_seed(seed)
        noise = {k: torch.randn(w.shape, generator=generator) * global_weights[k].float().std().clamp_min(1e-3)
                 for k, w in weights.items()}
        rng = np.random.default_rng(seed)
        random_rows = rng.normal(size=rows.shape)
        return noise, (random_rows / np.linalg.norm(random_rows, axis=1, keepdims=True)).astype(np.float32)
    raise ValueError(f"poison_update handles scale and noise, not {kind!r}")
