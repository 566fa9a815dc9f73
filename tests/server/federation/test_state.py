"""The federated server's round checkpoints: committed whole, versioned, and resumable after a kill."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from nptface.server.federation.proxy_bank import ProxyBank
from nptface.server.federation.state import KEEP_ROUNDS, STATE_FILE, FedState, FedStateError, latest_state, save_state


def _state(round_number: int) -> FedState:
    rows = np.eye(3, 4, dtype=np.float32)
    backbone = {"conv.weight": torch.full((2, 2), float(round_number))}
    return FedState(
        round_number,
        backbone,
        ProxyBank.from_rows(["a", "b", "c"], rows, public=True),
        {"client-0": ["a"]},
        [{"round": r} for r in range(round_number + 1)],
        "hash-1",
    )


def test_the_newest_round_is_resumed_with_everything_it_saved(tmp_path):
    for round_number in range(4):
        save_state(tmp_path, _state(round_number))
    resumed = latest_state(tmp_path)
    assert resumed.round == 3 and resumed.registry == {"client-0": ["a"]} and resumed.config_hash == "hash-1"
    assert resumed.history == [{"round": r} for r in range(4)] and resumed.bank.ids == ["a", "b", "c"]
    assert torch.equal(resumed.backbone["conv.weight"], torch.full((2, 2), 3.0))
    kept = sorted(p.name for p in (tmp_path / "rounds").iterdir() if p.name.startswith("round-"))
    assert kept == [f"round-{r:04d}" for r in range(4 - KEEP_ROUNDS, 4)]


def test_a_round_interrupted_while_writing_is_ignored(tmp_path, monkeypatch):
    save_state(tmp_path, _state(1))

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed while saving the bank")

    monkeypatch.setattr(ProxyBank, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        save_state(tmp_path, _state(2))
    assert latest_state(tmp_path).round == 1
    assert latest_state(tmp_path / "fresh") is None


def test_a_state_file_of_another_format_or_version_is_refused_by_name(tmp_path):
    directory = save_state(tmp_path, _state(1))
    meta = json.loads((directory / STATE_FILE).read_text())
    assert (meta["format"], meta["version"]) == ("nptface-fed-state", 1)
    # Rewrite it as a newer version, keeping the size its commit marker recorded.
    text = (directory / STATE_FILE).read_text().replace('"version": 1', '"version": 9')
    (directory / STATE_FILE).write_text(text)
    with pytest.raises(FedStateError, match=r"round-0001/state.json: field 'version' must be 1, got 9"):
        latest_state(tmp_path)
