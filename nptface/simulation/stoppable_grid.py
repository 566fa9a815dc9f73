"""A Grid that gives up once the simulation engine has stopped, so a failed engine cannot keep the process alive.

Flower's simulation runs the ServerApp in a non-daemon thread and the engine (Ray) beside it. When
the engine fails to start — Ray's GCS overloaded, an actor pool that does not fit — Flower raises
"Ending simulation." in the main thread, but the ServerApp thread goes on waiting for replies that
will never come (up to ``round-timeout-s`` per message batch, round after round), and Python
waits for that thread before it exits: the command hangs. Wrapped in :class:`StoppableGrid`, the
round loop's waits poll a ``stopped`` event that ``simulate`` sets when the engine returns or
fails, and end with :class:`SimulationStopped` within one poll interval.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Any

from flwr.app import Message

POLL_SECONDS = 0.1  # Flower's own pull interval


class SimulationStopped(RuntimeError):
    """The simulation engine stopped while the server was still waiting on it."""


class StoppableGrid:
    """The round loop's view of Flower's Grid (``get_node_ids``, ``send_and_receive``), ended by ``stopped``."""

    def __init__(self, grid: Any, stopped: threading.Event) -> None:
        self.grid = grid
        self.stopped = stopped

    def _check(self) -> None:
        if self.stopped.is_set():
            raise SimulationStopped("the simulation engine has stopped; the server stops too")

    def get_node_ids(self) -> Iterable[int]:
        self._check()
        return self.grid.get_node_ids()

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        """Flower's push-then-pull loop, checking ``stopped`` between pulls."""
        self._check()
        pending = set(self.grid.push_messages(messages))
        deadline = None if timeout is None else time.monotonic() + timeout
        replies: list[Message] = []
        while pending:  # pulls at least once, so replies that are in when the deadline passes are kept
            self._check()
            received = list(self.grid.pull_messages(pending))
            replies.extend(received)
            pending.difference_update(message.metadata.reply_to_message_id for message in received)
            if not pending or (deadline is not None and time.monotonic() >= deadline):
                break
            self.stopped.wait(POLL_SECONDS)
        return replies
