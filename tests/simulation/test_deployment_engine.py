"""Flower's deployment engine on localhost: a SuperLink and two SuperNodes run two real rounds.

Each SuperNode starts a fresh ClientApp process per message (as on real machines), so this is
the slowest federated test (minutes; its budget is its own); it runs the same script users run
(scripts/fed_deploy_localhost.sh), which picks free ports and waits for the SuperLink to answer.
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


def test_superlink_and_two_supernodes_complete_two_rounds(tiny_run, tmp_path):
    out = tmp_path / "deploy"
    env = {
        **os.environ,
        "SERVER_RUN": str(tiny_run),
        "N": "2",
        "ROUNDS": "2",
        "OUT": str(out),
        "VENV_BIN": str(Path(sys.executable).parent),
    }
    extra = (
        "client-identities=6 images-per-identity=4 few-shot-share=0.0 batch-size=8 k=3 "
        "central-eval-identities=20 central-eval-images=4"
    )
    result = subprocess.run(["bash", str(SCRIPT), extra], env=env, capture_output=True, text=True, timeout=1500)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    state = latest_state(out)
    assert state is not None and [h["round"] for h in state.history] == [0, 1, 2]
    assert all(h["accepted"] == 2 for h in state.history[1:])
    assert "deployment engine: 2 of 2 rounds completed" in result.stdout
