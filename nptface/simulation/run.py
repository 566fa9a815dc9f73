"""``nptface fed simulate``: many clients on one machine with Flower's simulation engine (Ray).

The ServerApp and ClientApp run the same handlers and round loop that ``flwr run .`` and real
SuperNodes use; only the transport differs, and the harness of the run (:class:`Harness`) is
wrapped around them here: faults and attackers as client mods, the linkage attack as a round
observer. Each simulated client gets one CPU (on a 2-core machine the default of two would run
clients one at a time), and Ray's workers run at normal priority (``RAY_worker_niceness=0``; Ray's
default of nice 15 starves the clients next to any other work on the machine). The harness is
recorded in the output directory, so a run is only ever resumed under the faults and attacks it
started with. When the engine fails (Ray does not start) the command ends with a
:class:`SimulationError` naming the cause instead of waiting on the server thread
(:mod:`~nptface.simulation.stoppable_grid`).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from flwr.app import Context
from flwr.clientapp.typing import Mod
from flwr.serverapp import Grid, ServerApp

from nptface.core.atomic import atomic_write_json
from nptface.server.federation.config import FedConfig
from nptface.server.federation.observer import RoundObserver
from nptface.server.federation.progress import RoundProgress
from nptface.server.federation.round_loop import run_federation
from nptface.server.federation.state import latest_state
from nptface.simulation.attacks.faults import FailingClients, Straggler
from nptface.simulation.attacks.linkage import LinkageAttack
from nptface.simulation.attacks.poison import Poisoners, parse_poison
from nptface.simulation.config import Harness, SimulationConfig
from nptface.simulation.stoppable_grid import StoppableGrid

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


class SimulationError(RuntimeError):
    """The simulation engine failed, or the federated run stopped before its last round."""


def server_app(
    config: FedConfig,
    observers: list[RoundObserver],
    stopped: threading.Event,
    errors: list[BaseException],
    progress: RoundProgress | None = None,
) -> ServerApp:
    """A ServerApp bound to ``config`` (Flower's Python simulation entry point has no run config).

    Its grid gives up once ``stopped`` is set; what the server itself raised is appended to ``errors``,
    so ``simulate`` can tell the server's own errors from the engine's.
    """
    bound = ServerApp()

    @bound.main()
    def _main(grid: Grid, context: Context) -> None:
        try:
            run_federation(StoppableGrid(grid, stopped), config, observers, progress)
        except BaseException as error:
            errors.append(error)
            raise

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


def simulate(
    config: SimulationConfig,
    cpus_per_client: float = 1.0,
    verbose: bool = False,
    observers: Sequence[RoundObserver] = (),
    progress: bool = True,
) -> float:
    """Run (or resume) the federation in ``config.fed.out_dir``; returns the wall time in seconds.

    ``observers`` watch every round besides the harness's own (a benchmark's per-round evaluation).
    Each round's phases show as a progress bar when ``progress`` is on and stdout is a terminal,
    else as plain lines on stdout.
    """
    os.environ.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")  # never pull a CUDA torch
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_worker_niceness", "0")  # Ray's default, 15, starves the clients on a busy machine
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
    stopped, server_errors = threading.Event(), []
    try:
        run_simulation(
            server_app=server_app(
                fed,
                [*round_observers(config.harness), *observers],
                stopped,
                server_errors,
                RoundProgress(fed.num_rounds, Path(fed.out_dir).name, bar=progress and sys.stdout.isatty()),
            ),
            client_app=make_client_app(client_mods(config.harness)),
            num_supernodes=fed.client.num_clients,
            backend_config={
                "client_resources": {"num_cpus": cpus_per_client, "num_gpus": 0.0},
                "init_args": {"logging_level": logging.WARNING, "log_to_driver": verbose},
            },
            verbose_logging=verbose,
        )
    except Exception as error:
        if any(error is e for e in server_errors):
            raise
        raise SimulationError(
            f"Flower's simulation engine (Ray) failed: {_root_cause(error)}; nothing after the "
            f"last saved round is lost (re-running the same command resumes from {fed.out_dir})"
        ) from error
    finally:
        stopped.set()
    state = latest_state(Path(fed.out_dir))
    if state is None or state.round < fed.num_rounds:
        done = "no round" if state is None else f"round {state.round}"
        raise SimulationError(
            f"the federated run stopped after {done} of {fed.num_rounds}; see the log above "
            f"(re-running the same command resumes from {fed.out_dir})"
        )
    return time.perf_counter() - started


def _root_cause(error: BaseException) -> str:
    """The innermost exception of a chain, as ``Type: message`` (Flower wraps the engine's error twice)."""
    while error.__cause__ is not None:
        error = error.__cause__
    return f"{type(error).__name__}: {error}"
