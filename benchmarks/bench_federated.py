"""Claims: Flower's overhead per round, memory of 100 simulated clients, and start-up time.

1. Overhead: the steady-state training phase of a federated round (send -> all replies) against
   the same clients' local training run back to back in this process without Flower (same data,
   settings, seeds; 2 torch threads, as the simulation's 2 actors x 1 CPU). Ratio goal <= 1.25.
2. Memory: 100 small simulated clients (2 rounds); peak PSS summed over the process tree (driver
   + Ray workers), sampled every 0.5 s. Goal <= 8 GiB.
3. Start-up: wall time from the simulate() call to the end of round 1, and round 1 vs later rounds.

    .venv/bin/python benchmarks/bench_federated.py [--server-run runs/quickstart] [--rounds 4]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import numpy as np  # noqa: E402
import torch  # noqa: E402
from machine import describe  # noqa: E402

from nptface.client.local_training import LocalConfig, fine_tune  # noqa: E402
from nptface.core.checkpoint import load_backbone, load_proxies  # noqa: E402
from nptface.core.imprinting import imprint  # noqa: E402
from nptface.core.partitions import client_datasets  # noqa: E402
from nptface.server.federation.config import FedConfig  # noqa: E402
from nptface.server.federation.state import latest_state  # noqa: E402
from nptface.simulation.config import SimulationConfig  # noqa: E402
from nptface.simulation.one_owner import tree_pss_bytes  # noqa: E402


def local_only_seconds(config: FedConfig) -> float:
    """One round's local training for every client, sequentially, without Flower."""
    model0, _ = load_backbone(config.server_run)
    settings = replace(config.client, image_size=model0.config.input_size)
    plan = settings.plan()
    negatives = load_proxies(config.server_run).numpy()
    rng = np.random.default_rng(0)
    total = 0.0
    for client in plan.clients:
        model, _ = load_backbone(config.server_run)
        data, _ = client_datasets(plan, client.partition_id, settings.image_size, seed=settings.partition_seed)
        negs = negatives[
            rng.choice(
                len(negatives), size=min(config.negatives_random + 4 * data.num_classes, len(negatives)), replace=False
            )
        ]
        started = time.perf_counter()
        fine_tune(
            model,
            imprint(model, data),
            negs,
            data,
            LocalConfig(
                epochs=settings.local_epochs,
                lr=settings.lr,
                batch_size=settings.batch_size,
                k=settings.k,
                delta=settings.delta,
            ),
        )
        total += time.perf_counter() - started
    return total


def memory_of_100_clients(server_run: str, out: Path) -> tuple[float, float]:
    values = {
        "server-run": server_run,
        "out-dir": str(out),
        "num-rounds": 2,
        "num-clients": 100,
        "client-identities": 300,
        "images-per-identity": 4,
        "few-shot-share": 0.0,
        "min-nodes": 100,
        "central-eval-identities": 30,
        "central-eval-images": 4,
        "batch-size": 8,
    }
    script = (
        "from nptface.simulation.config import SimulationConfig; from nptface.simulation.run import simulate; "
        f"simulate(SimulationConfig.from_run_config({values!r}))"
    )
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    peak = 0
    while process.poll() is None:
        peak = max(peak, tree_pss_bytes(process.pid))
        time.sleep(0.5)
    if process.returncode != 0:
        raise RuntimeError(f"the 100-client run failed with exit code {process.returncode}")
    return peak / 2**30, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--server-run", default="runs/quickstart")
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    if not Path(args.server_run).is_dir():
        raise SystemExit(f"{args.server_run} is not a run directory: run ./dev quickstart first")
    print(describe())
    os.environ["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] = "1"
    from nptface.simulation.run import simulate

    with tempfile.TemporaryDirectory() as tmp:
        config = FedConfig.from_run_config(
            {"server-run": args.server_run, "out-dir": f"{tmp}/fed", "num-rounds": args.rounds}
        )
        started = time.time()
        simulate(SimulationConfig(config))
        history = latest_state(Path(config.out_dir)).history[1:]
        steady = statistics.median(h["train_seconds"] for h in history[1:])
        torch.set_num_threads(2)
        local = statistics.median(local_only_seconds(config) for _ in range(2))
        print(
            f"\n1. {config.client.num_clients} clients, {args.rounds} rounds: steady-state round training phase "
            f"{steady:.2f} s (median of rounds 2..{args.rounds}) vs the same local training without Flower "
            f"{local:.2f} s -> ratio {steady / local:.2f} (goal <= 1.25)"
        )
        print(
            f"   per round: train {[round(h['train_seconds'], 2) for h in history]} s, central eval "
            f"{[round(h['eval_seconds'], 2) for h in history]} s, aggregate+spread "
            f"{[round(h['aggregate_seconds'], 2) for h in history]} s"
        )
        print(
            f"3. start-up: simulate() to end of round 1 {history[0]['ended_unix'] - started:.1f} s; round 1 "
            f"{history[0]['seconds']:.1f} s vs later rounds median {statistics.median(h['seconds'] for h in history[1:]):.1f} s"
        )
        pss, wall = memory_of_100_clients(args.server_run, Path(tmp) / "fed100")
        print(
            f"2. 100 simulated clients, 2 rounds: peak PSS of the process tree {pss:.2f} GiB (goal <= 8), "
            f"wall {wall:.0f} s"
        )


if __name__ == "__main__":
    main()
