"""Failing and slow clients, injected as Flower client mods around the production ClientApp.

``FailingClients(rate)`` makes a client raise instead of training, drawn per (round seed,
partition), so a rerun fails the same clients; Flower turns the exception into an error reply,
which the server counts as a failed client while the round goes on. ``Straggler(partition,
seconds)`` makes one partition sleep before training, but only after the warm-up round: in round 1
the simulation engine starts its workers and every client imports torch and builds its data, time
that must not count against the round timeout if the test is to drop exactly the straggler.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from flwr.app import Context, Message, MessageType
from flwr.clientapp.typing import ClientAppCallable

from nptface.client import protocol
from nptface.client.client_app import partition_of

WARM_UP_ROUNDS = 1  # rounds in which the straggler answers promptly


@dataclass(frozen=True)
class FailingClients:
    """Client mod: a train request fails with probability ``rate`` (per round and partition)."""

    rate: float

    def __call__(self, msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        if msg.metadata.message_type == MessageType.TRAIN:
            partition = partition_of(context)
            seed = msg.content[protocol.CONFIG]["seed"]
            if random.Random(f"{seed}-{partition}").random() < self.rate:
                raise RuntimeError(f"injected failure (failure-rate={self.rate}) on partition {partition}")
        return call_next(msg, context)


@dataclass(frozen=True)
class Straggler:
    """Client mod: ``partition`` sleeps ``seconds`` before every train request after the warm-up round(s)."""

    partition: int
    seconds: float

    def __call__(self, msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        if (
            msg.metadata.message_type == MessageType.TRAIN
            and partition_of(context) == self.partition
            and int(msg.content[protocol.CONFIG]["round"]) > WARM_UP_ROUNDS
        ):
            time.sleep(self.seconds)
        return call_next(msg, context)
