"""Weight-space mixing of a fine-tuned model with the model it started from (WiSE-FT).

Wortsman et al. (2022, "Robust fine-tuning of zero-shot models") showed that the straight line
between a model and its fine-tuned copy keeps most of the fine-tuning gain at a fraction of the
loss on the original domain. Federated fine-tuning forgets the server's domain in the same way, and
mixing needs no retraining, so the federation's export and the one-owner benchmark both use it.
"""

from __future__ import annotations

import torch


def interpolate_state(
    start: dict[str, torch.Tensor], tuned: dict[str, torch.Tensor], alpha: float
) -> dict[str, torch.Tensor]:
    """``start + alpha * (tuned - start)`` for every float tensor (weights and BatchNorm statistics alike).

    Integer entries (BatchNorm's batch counters) are taken from ``tuned``.
    """
    if start.keys() != tuned.keys():
        raise ValueError(f"the two models' state differs in {sorted(start.keys() ^ tuned.keys())[:5]}")
    return {
        key: start[key] + alpha * (value - start[key]) if value.is_floating_point() else value
        for key, value in tuned.items()
    }
