"""``nptface fed simulate``: many clients on one machine with Flower's simulation engine (Ray).

The ServerApp and ClientApp run the same handlers and round loop that ``flwr run .`` and real
SuperNodes use; only the transport differs, and the harness of the run (:class:`Harness`) is
wrapped around them here: faults and attackers as client mods, the linkage attack as a round
observer. Each simulated client gets one CPU (on a 2-core machine the default of two would run
clients one at a time). The harness is recorded in the output directory, so a run is only ever
resumed under the faults and attacks it started with.
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from dataclasses import asdict
from pathlib import Path

from flwr.app import Context
from flwr.clientapp.typing import Mod
from flwr.serverapp import Grid, ServerApp

from nptface.core.atomic import atomic_write_json
from nptface.server.federation.config import FedConfig
from nptface.server.federation.observer import RoundObserver
from nptface.server.federation.round_loop import run_federation
from nptface.server.federation.state import latest_state
from nptface.simulation.attacks.faults import FailingClients, Straggler
from nptface.simulation.attacks.linkage import LinkageAttack
from nptface.simulation.attacks.poison import Poisoners, parse_poison
from nptface.simulation.config import Harness, SimulationConfig

logger = logging.getLogger(__name__)

HARNESS_FILE = "harness.json"


def client_mods(harness: Harness) -> list[Mod]:
    """The harness's client mods, outermost first: a failing client fails before it would sleep or attack."""
    mods: list[Mod] = []
    if harness.failure_rate:
        mods.append(FailingClients(harness.failure_rate))
    if harness.straggler:
        mods.append(Straggler(harness.slow_partition, harness.slow_seconds))
    if harness.poison:
        mods.append(Poisoners(parse_poison(harness.poison)))
    return mods


def round_observers(harness: Harness) -> list[RoundObserver]:
    return [LinkageAttack(harness.attack_partition)] if harness.attack_linkage else []


def server_app(config: FedConfig, observers: list[RoundObserver]) -> ServerApp:
    """A ServerApp bound to ``config`` (Flower's Python simulation entry point has no run config)."""
    bound = ServerApp()

    @bound.main()
    def _main(grid: Grid, context: Context) -> None:
        run_federation(grid, config, observers)

    return bound


def pin_harness(out_dir: Path, harness: Harness) -> None:
    """Record the harness of a new run; refuse to resume a run under another one."""
    path = out_dir / HARNESS_FILE
    wanted = asdict(harness)
    if path.is_file():
        recorded = json.loads(path.read_text())
        if recorded != wanted:
            raise RuntimeError(f"{path} records another harness ({recorded}, not {wanted}); use another out-dir")
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, wanted)


def simulate(config: SimulationConfig, cpus_per_client: float = 1.0, verbose: bool = False) -> float:
    """Run (or resume) the federation in ``config.fed.out_dir``; returns the wall time in seconds."""
    os.environ.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")  # never pull a CUDA torch
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    from flwr.simulation import run_simulation

    from nptface.client.client_app import make_client_app

    fed = config.fed
    pin_harness(Path(fed.out_dir), config.harness)
    if not verbose:
        # Flower logs every actor and message at INFO/DEBUG and warns that this entry point is
        # deprecated (it is the one that takes a Python config; `flwr run .` is supported too);
        # our own round log reports failures and rejected updates.
        logging.getLogger("flwr").setLevel(logging.ERROR)
        warnings.filterwarnings("ignore", message=".*Ray will no longer override accelerator", category=FutureWarning)
    started = time.perf_counter()
    run_simulation(
        server_app=server_app(fed, round_observers(config.harness)),
        client_app=make_client_app(client_mods(config.harness)),
        num_supernodes=fed.client.num_clients,
        backend_config={"client_resources": {"num_cpus": cpus_per_client, "num_gpus": 0.0},
                        "init_args": {"logging_level": logging.WARNING, "log_to_driver": verbose}},
        verbose_logging=verbose,
    )
    state = latest_state(Path(fed.out_dir))
    if state is None or state.round < fed.num_rounds:
        done = "no round" if state is None else f"round {state.round}"
        raise RuntimeError(f"the federated run stopped after {done} of {fed.num_rounds}; see the log above "
                           f"(re-running the same command resumes from {fed.out_dir})")
    return time.perf_counter() - started
