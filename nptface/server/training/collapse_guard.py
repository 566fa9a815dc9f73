"""Watching a run for dimensional collapse: how many directions the batch's embeddings span.

A collapsed face model squeezes every face into a few directions of its embedding space. From a
random start the exact hardest-negative NPT loss (and ArcFace/CosFace at small budgets) does
this: held-out embeddings end with an effective rank of 2-3 out of 128 and the FAR=1e-2
threshold climbs to cosine 0.99, so thresholds and int8 export become fragile. The mean cosine
between different identities in a batch cannot see it: the embedding layer ends in BatchNorm,
which centres every training batch, so that mean stays near 0 collapsed or not. The spread
measured here is the participation ratio of the batch's unit embeddings Z [B, d],
``(Σσ²)² / Σσ⁴ = B² / ‖ZᵀZ‖²_F`` (σ its singular values): the number of directions the batch
spreads its energy over, 1 for one line and min(B, d) for an even spread. It is a [B, d] x [d, B]
product per step, summed on the device and read only when the trainer logs (no host sync).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

ACTIONS = ("warn", "stop", "off")
REMEDIES = (
    'train with semi-hard negatives (head.params.negatives = "semihard", the shipped recipe) instead of the '
    "exact hardest ones; or use more images per identity, a lower optim.lr, or a model fine-tuned from a "
    'trained one; guard.action = "off" silences this check'
)


class CollapseError(RuntimeError):
    """The run's embeddings collapsed and ``guard.action = "stop"`` asked to stop."""


def batch_spread(embeddings: torch.Tensor) -> torch.Tensor:
    """The participation ratio ``B² / ‖ZᵀZ‖²_F`` of the unit rows of ``embeddings`` (a 0-d tensor).

    In [1, min(B, d)]: 1 when every row lies on one line, min(B, d) for rows spread evenly.
    Computed in float32 without gradient, through the smaller of the two Gram matrices.
    """
    with torch.no_grad():
        unit = F.normalize(embeddings.detach().float(), dim=1)
        batch, dim = unit.shape
        gram = unit @ unit.T if batch <= dim else unit.T @ unit
        return batch * batch / gram.square().sum()


class SpreadMeter:
    """Per-step batch spread summed on the device; :meth:`read` gives the window mean and resets."""

    def __init__(self, device: torch.device) -> None:
        self._sum = torch.zeros((), dtype=torch.float64, device=device)
        self._steps = 0

    def add(self, embeddings: torch.Tensor) -> None:
        self._sum += batch_spread(embeddings).double()
        self._steps += 1

    def read(self) -> float | None:
        """The mean spread since the last read (a host sync), or None when no step was added."""
        if not self._steps:
            return None
        value = float(self._sum.item()) / self._steps
        self._sum.zero_()
        self._steps = 0
        return value


@dataclass
class CollapseGuard:
    """Decides, once per log window, whether the window's mean batch spread is collapse.

    ``threshold``: the spread below which a window counts as collapsed. ``patience``: consecutive
    collapsed windows before acting (one noisy window is not a verdict). ``after_epochs``: epochs
    to ignore at the start (healthy runs dip while the embedding space forms, before epoch 0.5).
    ``action``: "warn" returns a warning when a collapse starts (and again if it returns after
    recovering), for the trainer to log and show; "stop" raises :class:`CollapseError` (the run keeps the checkpoints it wrote),
    "off" does nothing.
    """

    threshold: float = 2.5
    patience: int = 3
    after_epochs: float = 1.0
    action: str = "warn"
    _streak: int = 0

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"guard.action must be one of {ACTIONS}, got {self.action!r}")

    def observe(self, spread: float, epoch: float, step: int) -> str | None:
        """The warning for this window when a collapse is declared, else None; raises when told to stop."""
        if self.action == "off" or epoch < self.after_epochs:
            return None
        self._streak = self._streak + 1 if spread < self.threshold else 0
        if self._streak != self.patience:
            return None
        message = (
            f"EMBEDDING COLLAPSE at step {step} (epoch {epoch:.2f}): the training batches' embeddings span "
            f"only {spread:.2f} directions (batch_spread < guard.threshold = {self.threshold} for "
            f"{self._streak} log windows), so faces of different people end up close together. "
            f"Remedies: {REMEDIES}."
        )
        if self.action == "stop":
            raise CollapseError(
                message + ' Stopped because guard.action = "stop"; the checkpoints written so far are kept.'
            )
        return message
