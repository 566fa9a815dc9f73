"""Real federated runs on Flower's simulation engine (Ray): rounds, faults, attacks, and resume after SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nptface.core.checkpoint import load_backbone, load_meta
from nptface.core.checkpoint_dirs import CheckpointDirs
from nptface.server.federation.state import latest_state
from nptface.simulation.config import SimulationConfig
from nptface.simulation.run import simulate

pytestmark = pytest.mark.slow


def _config(tiny_run: Path, out: Path, **extra: object) -> SimulationConfig:
    values = {
        "server-run": str(tiny_run),
        "out-dir": str(out),
        "num-rounds": 2,
        "num-clients": 3,
        "client-identities": 9,
        "images-per-identity": 4,
        "few-shot-share": 0.0,
        "batch-size": 8,
        "central-eval-identities": 20,
        "central-eval-images": 4,
        "k": 3,
        "min-nodes": 2,
        **extra,
    }
    return SimulationConfig.from_run_config(values)


def test_rounds_register_client_identities_and_keep_proxies_apart(tiny_run, tmp_path):
    config = _config(tiny_run, tmp_path / "fed")
    simulate(config)
    state = latest_state(tmp_path / "fed")
    assert [h["round"] for h in state.history] == [0, 1, 2]
    server_ids = load_meta(tiny_run).class_names
    assert len(state.bank) == len(server_ids) + 9
    assert sorted(sum(state.registry.values(), [])) == sorted(set(state.bank.ids) - set(server_ids))
    for record in state.history[1:]:
        assert record["accepted"] == 3 and record["failed"] == 0
        assert record["clients-local/replies"] == 3 and 0 <= record["clients-local/accuracy"] <= 1
        assert record["min_sq_distance"] >= 1.0 - 1e-3, "the spread-out step keeps Property 2 across the bank"
    model, meta = load_backbone(tmp_path / "fed")  # the federated model is a standard run directory
    assert meta.class_names == state.bank.ids and model.config.input_size == 32


def test_two_identical_seeded_simulations_end_in_byte_identical_models(tiny_run, tmp_path):
    # Ray schedules the clients and Flower draws node ids differently each run; the result must not change.
    extra = {"num-clients": 2, "client-identities": 6, "negatives-random": 4, "client-eval-every": 0}
    for name in ("a", "b"):
        simulate(_config(tiny_run, tmp_path / name, **extra))
    first, second = latest_state(tmp_path / "a"), latest_state(tmp_path / "b")
    assert [h["accepted"] for h in first.history[1:]] == [2, 2]
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()
    assert first.bank.ids == second.bank.ids


def test_crashing_clients_do_not_stop_a_round(tiny_run, tmp_path):
    config = _config(tiny_run, tmp_path / "fed", **{"num-clients": 4, "client-identities": 12, "failure-rate": 0.5})
    simulate(config)
    history = latest_state(tmp_path / "fed").history[1:]
    assert sum(h["failed"] for h in history) > 0, "with failure-rate 0.5 some clients must have crashed"
    for record in history:
        assert record["accepted"] + record["failed"] + record["timed_out"] == record["sampled"]
    assert any(h["accepted"] > 0 for h in history)


def _current_round_name(out: Path) -> str | None:
    current = CheckpointDirs(out / "rounds").current()
    return None if current is None else current.name


def test_resume_after_sigkill_loses_no_round(tiny_run, tmp_path):
    out = tmp_path / "fed"
    config = _config(tiny_run, out, **{"num-rounds": 3})
    script = (
        f"from nptface.simulation.config import SimulationConfig; from nptface.simulation.run import simulate; "
        f"simulate(SimulationConfig.from_run_config({config.to_run_config()!r}))"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script], start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 240
    try:
        # Poll what a resume reads (the pointer's complete entry), not a file inside the new round:
        # a round's folder is renamed into place a moment before the pointer moves to it.
        while _current_round_name(out) in (None, "round-0000"):
            assert process.poll() is None, "the federated run ended before round 1 was saved"
            assert time.monotonic() < deadline, "round 1 was not saved in time"
            time.sleep(0.2)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the driver and its Ray workers
        process.wait()
    before = latest_state(out)
    assert before is not None and before.round in (1, 2)
    simulate(config)
    after = latest_state(out)
    assert [h["round"] for h in after.history] == [0, 1, 2, 3]
    assert after.history[: before.round + 1] == before.history, "completed rounds are kept, not redone"


@pytest.mark.timeout(900)
def test_a_straggler_past_the_round_timeout_is_dropped_and_the_round_completes(tiny_run, tmp_path):
    # Round 1 warms the engine up (Ray starts, every client imports torch) inside the timeout, whose clock
    # starts before Ray does, with 2 workers for 3 clients on a 2-core machine: hence 150 s. From round 2
    # partition 0 sleeps longer than the timeout, so its reply cannot arrive before the server closes
    # the round, however loaded the machine is.
    config = _config(
        tiny_run,
        tmp_path / "fed",
        **{"slow-partition": 0, "slow-seconds": 155.0, "round-timeout-s": 150.0, "client-eval-every": 0},
    )
    simulate(config)
    warm_up, straggled = latest_state(tmp_path / "fed").history[1:]
    assert (warm_up["accepted"], warm_up["timed_out"]) == (3, 0)
    assert (straggled["accepted"], straggled["timed_out"], straggled["failed"]) == (2, 1, 0)


def test_dp_sharing_accounts_epsilon_and_the_attacker_sees_only_noised_rows(tiny_run, tmp_path):
    config = _config(
        tiny_run,
        tmp_path / "fed",
        **{
            "proxy-sharing": "dp",
            "dp-epsilon": 6.0,
            "attack-linkage": True,
            "negatives-random": 1000,
            "poison": "flip:2",
            "backbone-aggregation": "median",
        },
    )
    simulate(config)
    state = latest_state(tmp_path / "fed")
    rounds = state.history[1:]
    spent = [h["dp/epsilon"] for h in rounds]
    assert spent == sorted(spent) and spent[-1] <= 6.0
    assert all(h["attack/chance"] == 1 / 9 for h in rounds)
    assert rounds[0]["attack/rows"] == 0, "round 1: no client row is in the bank yet"
    others = 9 - len(state.registry["partition-0"])
    assert rounds[1]["attack/rows"] == others, "round 2: every other client's row, noised"
    assert all(h["accepted"] == 3 for h in rounds)
    assert rounds[0]["rows_imprinted"] == 9 and rounds[1]["rows_imprinted"] == 0, (
        "round 2: every client trains on the clean rows it kept in context.state, none re-imprinted"
    )
