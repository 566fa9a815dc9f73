"""The Flower ServerApp: reads the run config and hands the grid to the federation's round loop."""

from __future__ import annotations

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from nptface.server.federation.config import FedConfig
from nptface.server.federation.round_loop import run_federation

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    run_federation(grid, FedConfig.from_run_config(dict(context.run_config)))
