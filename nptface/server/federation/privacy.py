"""Privacy accounting for ``dp`` sharing: Flower's RDP accountant (Google's dp-accounting underneath).

Each round a client takes part in, it releases every one of its rows once through the Gaussian
mechanism (:mod:`nptface.client.row_privacy`). The privacy unit is one identity's row: neighbouring
federations differ by one identity's photos (add-or-remove; sensitivity = the clip norm). We claim
no amplification from client sampling (a client may be picked every round), so the bound below is
the composition of ``rounds`` plain Gaussian releases. The noise multiplier is the smallest one
whose composition over all planned rounds stays within the target epsilon at the target delta.
What the bound does not cover (the backbone update, which row ids exist) is stated in README
"Privacy".
"""

from __future__ import annotations

from dataclasses import dataclass

from flwr.supercore.privacy_accounting import (
    GaussianPrivacyEvent,
    NeighboringRelation,
    PrivacyConfig,
    SamplingMethod,
)
from flwr.supercore.privacy_accounting.rdp_accountant import RdpAccountant


@dataclass(frozen=True)
class RowPrivacy:
    noise_multiplier: float
    clip: float
    delta: float
    rounds: int
    epsilon: float  # after all ``rounds`` releases


def epsilon_after(noise_multiplier: float, releases: int, delta: float) -> float:
    """Epsilon of ``releases`` Gaussian releases with the given noise multiplier (no sampling amplification)."""
    if releases <= 0:
        return 0.0
    accountant = RdpAccountant(
        PrivacyConfig(
            target_delta=delta,
            population_size=1,
            neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
            sampling_method=SamplingMethod.NO_AMPLIFICATION,
        )
    )
    accountant.compose(GaussianPrivacyEvent(noise_multiplier, 1, 1), count=releases)
    return float(accountant.get_epsilon(delta))


def calibrate(epsilon: float, delta: float, rounds: int, clip: float, tolerance: float = 1e-3) -> RowPrivacy:
    """The smallest noise multiplier (to ``tolerance``) whose ``rounds`` releases stay within ``epsilon``."""
    low, high = 1e-2, 1.0
    while epsilon_after(high, rounds, delta) > epsilon:
        high *= 2
        if high > 1e4:
            raise ValueError(
                f"dp-epsilon = {epsilon} over {rounds} rounds at delta {delta} needs more noise than 1e4 x clip"
            )
    while high - low > tolerance:
        middle = (low + high) / 2
        low, high = (middle, high) if epsilon_after(middle, rounds, delta) > epsilon else (low, middle)
    return RowPrivacy(high, clip, delta, rounds, epsilon_after(high, rounds, delta))
