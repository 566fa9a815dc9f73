"""``nptface fed simulate``: many clients on one machine with Flower's simulation engine (Ray).

The ServerApp and ClientApp are the same ones ``flwr run .`` and real SuperNodes use; only the
transport differs. Each simulated client gets one CPU (on a 2-core machine the default of two
would run clients one at a time). Settings come from :class:`FedConfig`, built from the same
kebab-case keys as ``[tool.flwr.app.config]``.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from pathlib import Path

from nptface.server.federation.config import FedConfig
from nptface.server.federation.state import latest_state

logger = logging.getLogger(__name__)


def simulate(config: FedConfig, cpus_per_client: float = 1.0, verbose: bool = False) -> float:
    """Run (or resume) the federation in ``config.out_dir``; returns the wall time in seconds."""
    os.environ.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")  # never pull a CUDA torch
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    from flwr.simulation import run_simulation

    from nptface.client.client_app import app as client_app
    from nptface.server.federation.server_app import make_server_app

    if not verbose:
        # Flower logs every actor and message at INFO/DEBUG and warns that this entry point is
        # deprecated (it is the one that takes a Python config; `flwr run .` is supported too);
        # our own round log reports failures and rejected updates.
        logging.getLogger("flwr").setLevel(logging.ERROR)
        warnings.filterwarnings("ignore", message=".*Ray will no longer override accelerator", category=FutureWarning)
    started = time.perf_counter()
    run_simulation(
        server_app=make_server_app(config),
        client_app=client_app,
        num_supernodes=config.client.num_clients,
        backend_config={"client_resources": {"num_cpus": cpus_per_client, "num_gpus": 0.0},
                        "init_args": {"logging_level": logging.WARNING, "log_to_driver": verbose}},
        verbose_logging=verbose,
    )
    state = latest_state(Path(config.out_dir))
    if state is None or state.round < config.num_rounds:
        done = "no round" if state is None else f"round {state.round}"
        raise RuntimeError(f"the federated run stopped after {done} of {config.num_rounds}; see the log above "
                           f"(re-running the same command resumes from {config.out_dir})")
    return time.perf_counter() - started
