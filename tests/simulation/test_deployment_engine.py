"""Flower's deployment engine on localhost: a SuperLink and two SuperNodes, each on its own folder of faces.

Each SuperNode starts a fresh ClientApp process per message (as on real machines), so this is
the slowest federated test (minutes; its budget is its own); it runs the same script users run
(scripts/fed_deploy_localhost.sh), which picks free ports, waits for the SuperLink to answer and
ends non-zero unless Flower reports the run completed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from nptface.server.federation.state import latest_state

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]
SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "fed_deploy_localhost.sh"


def _deploy(tmp_path: Path, server_run: Path, extra: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    variables = {
        **os.environ,
        "SERVER_RUN": str(server_run),
        "N": "2",
        "ROUNDS": "2",
        "OUT": str(tmp_path / "deploy"),
        "VENV_BIN": str(Path(sys.executable).parent),
        **env,
    }
    return subprocess.run(["bash", str(SCRIPT), extra], env=variables, capture_output=True, text=True, timeout=1500)


def test_two_supernodes_each_train_on_their_own_folder_for_two_rounds(tiny_run, tmp_path, face_folder):
    site = face_folder(tmp_path / "site-0", {"alice": 5, "bob": 5})
    phone = face_folder(tmp_path / "phone-1", {"owner": 4}, seed=1)  # one owner: imprinted in round 1
    result = _deploy(
        tmp_path,
        tiny_run,
        "batch-size=8 k=3 central-eval-identities=20 central-eval-images=4",
        DATA_PATHS=f"{site} {phone}",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-20000:]  # the SuperLink log comes first
    state = latest_state(tmp_path / "deploy")
    assert state is not None and [h["round"] for h in state.history] == [0, 1, 2]
    assert state.registry == {
        "partition-0": ["partition-0/alice", "partition-0/bob"],
        "partition-1": ["partition-1/owner"],
    }
    assert {"partition-0/alice", "partition-0/bob", "partition-1/owner"} <= set(state.bank.ids)
    assert state.history[1]["rows_imprinted"] == 3 and state.history[2]["rows_imprinted"] == 0
    assert all(h["accepted"] == 2 for h in state.history[1:])
    assert "deployment engine: 2 of 2 rounds completed" in result.stdout


def test_a_failing_server_app_makes_the_script_fail_with_flowers_run_status(tmp_path):
    result = _deploy(tmp_path, tmp_path / "not-a-run", N="1")
    assert result.returncode == 1
    assert "ended finished:failed" in result.stderr and "is not an nptface run directory" in result.stderr
