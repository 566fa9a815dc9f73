"""What a simulated run wraps around the production apps, and that it resumes only under the same harness."""

from __future__ import annotations

import subprocess
import sys

import pytest

from nptface.simulation.attacks.faults import FailingClients, Straggler
from nptface.simulation.attacks.linkage import LinkageAttack
from nptface.simulation.attacks.poison import Poisoners
from nptface.simulation.config import Harness
from nptface.simulation.run import client_mods, pin_harness, round_observers


def test_a_clean_harness_adds_nothing_to_the_production_apps():
    assert client_mods(Harness()) == [] and round_observers(Harness()) == []


def test_a_failing_client_fails_before_it_would_sleep_or_attack():
    mods = client_mods(Harness(failure_rate=0.2, slow_partition=1, slow_seconds=3.0, poison="scale:0"))
    assert mods == [FailingClients(0.2), Straggler(1, 3.0), Poisoners({0: "scale"})]


def test_the_linkage_attack_watches_from_the_chosen_partition():
    [observer] = round_observers(Harness(attack_linkage=True, attack_partition=2))
    assert isinstance(observer, LinkageAttack) and observer.partition == 2


def test_a_run_resumes_only_under_the_harness_it_started_with(tmp_path):
    pin_harness(tmp_path / "run", Harness(poison="flip:2"))
    pin_harness(tmp_path / "run", Harness(poison="flip:2"))
    with pytest.raises(RuntimeError, match="harness.json records another harness"):
        pin_harness(tmp_path / "run", Harness())


@pytest.mark.slow
def test_fed_simulate_exits_with_a_clear_error_when_ray_fails_to_start(tiny_run, tmp_path):
    # Flower starts the ServerApp thread before Ray; before the fix that thread kept the process alive.
    script = (
        "import sys, ray\n"
        "def overloaded(*args, **kwargs):\n"
        "    raise RuntimeError('GCS has become overloaded')\n"
        "ray.init = overloaded\n"
        "from nptface.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    settings = {
        "server-run": str(tiny_run),
        "out-dir": str(tmp_path / "fed"),
        "num-clients": 2,
        "num-rounds": 1,
        "client-identities": 6,
        "images-per-identity": 4,
        "central-eval-identities": 20,
        "central-eval-images": 4,
        "wait-nodes-s": 600.0,
        "round-timeout-s": 600.0,
    }
    args = [
        arg
        for key, value in settings.items()
        for arg in ("--set", f"{key}={value!r}" if isinstance(value, str) else f"{key}={value}")
    ]
    result = subprocess.run(
        [sys.executable, "-c", script, "fed", "simulate", "--no-baselines", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1, result.stderr[-2000:]
    assert (
        "nptface: error: Flower's simulation engine (Ray) failed: RuntimeError: GCS has become overloaded"
        in result.stderr
    )
