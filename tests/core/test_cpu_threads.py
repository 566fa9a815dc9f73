"""device.cpu_threads: a set count is kept, 0 takes the idle cores, and the command line asks OpenMP to wait passively."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from nptface.core.cpu_threads import WAIT_POLICY, prefer_passive_waiting, resolve_cpu_threads


@pytest.mark.parametrize(
    "setting,cores,load,world_size,threads",
    [
        (0, 2, 0.1, 1, 2),  # an idle machine: every core
        (0, 2, 1.2, 1, 1),  # one core busy elsewhere: the other
        (0, 2, 19.4, 1, 1),  # far more work than cores: one thread, never zero
        (0, 16, 4.4, 1, 12),
        (0, 16, 0.0, 4, 4),  # ranks share the cores
        (0, 2, 0.0, 4, 1),
        (3, 2, 19.4, 1, 3),  # a set count is kept, whatever the load
        (8, 16, 0.0, 2, 4),
    ],
)
def test_threads_per_rank(setting, cores, load, world_size, threads):
    assert resolve_cpu_threads(setting, cores, load, world_size) == threads


def test_a_negative_count_names_the_setting():
    with pytest.raises(ValueError, match="device.cpu_threads must be >= 0"):
        resolve_cpu_threads(-1, 2, 0.0)


def test_passive_waiting_is_asked_for_unless_the_user_chose_a_policy():
    environ: dict[str, str] = {}
    assert prefer_passive_waiting(environ) == "PASSIVE" and environ == {WAIT_POLICY: "PASSIVE"}
    chosen = {WAIT_POLICY: "ACTIVE"}
    assert prefer_passive_waiting(chosen) == "ACTIVE" and chosen == {WAIT_POLICY: "ACTIVE"}


def test_the_command_line_sets_the_policy_before_torch_is_loaded():
    script = (
        "import os, sys\n"
        "from nptface.cli import main\n"
        "try:\n"
        "    main(['--version'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != WAIT_POLICY}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    assert result.stdout.split()[-2:] == ["PASSIVE", "False"]
