"""A server-side hook: what the clients of a round were sent, handed to observers after the round.

Measurements that watch the federation from outside (the simulation's proxy-linkage attack plays
an honest-but-curious client) need exactly what a client can see: the settings and the global
backbone of the round, and the bank rows each sampled client was sent as negatives. The round
loop passes that :class:`RoundView` to every observer once the round is done and records the
metrics they return in the round's history; the production ServerApp installs none.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from nptface.client.protocol import ClientSettings


@dataclass(frozen=True)
class ClientView:
    """What one sampled client was sent besides the backbone: its negatives, by bank identity."""

    node: int
    partition: int
    negative_ids: list[str]
    negative_rows: np.ndarray  # [m, d], as sent


@dataclass(frozen=True)
class RoundView:
    round: int
    settings: ClientSettings  # as sent to every client (image size, model, partition plan)
    backbone: dict[str, torch.Tensor]  # the global backbone the clients were sent (never mutated afterwards)
    clients: list[ClientView]  # the sampled clients, by node id


RoundObserver = Callable[[RoundView], dict[str, float]]
