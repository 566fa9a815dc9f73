"""The Gaussian mechanism on bank rows, applied on the client before a row leaves it (``dp`` sharing).

A proxy row is a face template: close to the mean embedding of one person's photos. In ``dp`` mode
each row is clipped to L2 norm ``clip`` (the mechanism's sensitivity when one identity's row is added
or removed) and ``N(0, (z * clip)^2 I)`` is added, then the result is renormalised — renormalising
is post-processing and costs no privacy. The client keeps its clean rows to train on; only the
noised copy reaches the server and, through it, other clients. Flower's DP helpers clip and noise
whole model updates averaged over many clients; a bank row has exactly one owner, so there is no
average to hide in and the noise has to be added where the row is made.
"""

from __future__ import annotations

import numpy as np

from nptface.core.verification import unit_rows


def clip_rows(rows: np.ndarray, clip: float) -> np.ndarray:
    """Scale every row whose L2 norm exceeds ``clip`` down to ``clip`` (others unchanged)."""
    if clip <= 0:
        raise ValueError(f"clip must be > 0, got {clip}")
    rows = np.asarray(rows, dtype=np.float64)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows * np.minimum(1.0, clip / np.maximum(norms, 1e-12))


def gaussian_mechanism(rows: np.ndarray, clip: float, noise_multiplier: float, rng: np.random.Generator) -> np.ndarray:
    """Clip, then add Gaussian noise of std ``noise_multiplier * clip`` to every coordinate (float64)."""
    if noise_multiplier <= 0:
        raise ValueError(f"noise_multiplier must be > 0, got {noise_multiplier}")
    clipped = clip_rows(rows, clip)
    return clipped + rng.normal(0.0, noise_multiplier * clip, size=clipped.shape)


def noised_rows(rows: np.ndarray, clip: float, noise_multiplier: float, rng: np.random.Generator) -> np.ndarray:
    """What leaves a ``dp`` client: the Gaussian mechanism's output renormalised (float32)."""
    return unit_rows(gaussian_mechanism(rows, clip, noise_multiplier, rng), name="noised rows")
