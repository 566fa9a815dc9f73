"""The server's grid gives up once the simulation engine has stopped, instead of waiting for replies forever."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest

from nptface.simulation.stoppable_grid import SimulationStopped, StoppableGrid


class SilentGrid:
    """Flower's Grid contract with clients that answer only the messages listed in ``answered``."""

    def __init__(self, answered: set[str], on_pull=lambda: None) -> None:
        self.answered = answered
        self.on_pull = on_pull
        self.pulls = 0

    def get_node_ids(self) -> list[int]:
        return [1, 2]

    def push_messages(self, messages) -> list[str]:
        return list(messages)

    def pull_messages(self, ids) -> list[SimpleNamespace]:
        self.pulls += 1
        self.on_pull()
        return [SimpleNamespace(metadata=SimpleNamespace(reply_to_message_id=i)) for i in set(ids) & self.answered]


def test_replies_are_collected_until_every_message_is_answered():
    grid = StoppableGrid(SilentGrid({"a", "b"}), threading.Event())
    replies = grid.send_and_receive(["a", "b"], timeout=600)
    assert sorted(r.metadata.reply_to_message_id for r in replies) == ["a", "b"] and grid.grid.pulls == 1


def test_a_round_timeout_returns_the_replies_that_arrived():
    grid = StoppableGrid(SilentGrid({"a"}), threading.Event())
    assert [r.metadata.reply_to_message_id for r in grid.send_and_receive(["a", "b"], timeout=0.3)] == ["a"]


def test_a_stopped_engine_ends_a_wait_for_replies_that_will_never_come():
    stopped = threading.Event()
    grid = StoppableGrid(SilentGrid(set(), on_pull=stopped.set), stopped)  # the engine stops during the wait
    with pytest.raises(SimulationStopped, match="engine has stopped"):
        grid.send_and_receive(["a"], timeout=None)
    with pytest.raises(SimulationStopped):
        grid.get_node_ids()
