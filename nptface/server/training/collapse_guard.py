"""Watching a run for embedding collapse: the batch's different-identity cosine, cheaply.

A collapsed face model maps every face into a narrow cone: accuracy may still look passable,
but the verification threshold climbs towards cosine 1 and any rounding (int8 export, another
camera) flips decisions. Hardest-negative mining from a random start is the classic way to get
there (FaceNet, §3.2). The signal is the mean cosine between the batch's embeddings of
*different* identities. It comes for free from sums the step already has on the device:
for unit rows z_i, Σ_{i≠j} z_i·z_j = ‖Σ z_i‖² − B, and the same-identity part is the same
identity per class, so the step adds O(B·d) work and no host sync; the trainer reads the sums
only when it logs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

REMEDIES = (
    "search negatives in a candidate pool first (head.negatives = \"curriculum\", the default) or set "
    "head.candidate_rate > 0; lower optim.lr or lengthen optim.warmup_epochs; use more images per identity"
)


class CollapseError(RuntimeError):
    """The run's embeddings collapsed and ``guard.action = "stop"`` asked to stop."""


def different_identity_cosine_sums(embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``[sum of cosines, number of pairs]`` over ordered pairs (i, j), i ≠ j, of different labels.

    Exact for any batch (labels may repeat); computed in float64 without the [B, B] matrix.
    """
    unit = F.normalize(embeddings.detach().double(), dim=1)
    total = unit.sum(dim=0)
    all_pairs = total.dot(total) - unit.shape[0]
    classes, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    per_class = torch.zeros(len(classes), unit.shape[1], dtype=unit.dtype, device=unit.device)
    per_class.index_add_(0, inverse, unit)
    same_pairs = (per_class * per_class).sum() - unit.shape[0]
    n = unit.shape[0]
    pairs = n * n - (counts.double() * counts.double()).sum()
    return torch.stack((all_pairs - same_pairs, pairs))


@dataclass
class CollapseGuard:
    """Decides, once per log window, whether the windows' mean different-identity cosine is collapse.

    ``threshold``: the mean cosine above which a window counts as collapsed. ``patience``:
    consecutive collapsed windows before acting (a single noisy window is not a verdict).
    ``after_step``: steps to ignore at the start (an untrained network's outputs are correlated
    before the first updates spread them). ``action``: "warn" logs a warning every time, "stop"
    raises :class:`CollapseError` (the run keeps its checkpoints), "off" does nothing.
    """

    threshold: float = 0.9
    patience: int = 3
    after_step: int = 0
    action: str = "warn"
    _streak: int = 0

    def observe(self, mean_cosine: float, step: int) -> str | None:
        """The warning for this window, or None; raises CollapseError when asked to stop."""
        if self.action == "off" or step < self.after_step:
            return None
        self._streak = self._streak + 1 if mean_cosine > self.threshold else 0
        if self._streak < self.patience:
            return None
        message = (f"EMBEDDING COLLAPSE: mean cosine between different identities in the batch is "
                   f"{mean_cosine:.3f} (> {self.threshold}) for {self._streak} log windows at step {step}; "
                   f"the model maps all faces close together. Remedies: {REMEDIES}")
        if self.action == "stop":
            raise CollapseError(message + " (guard.action = \"stop\")")
        logger.warning(message)
        return message
