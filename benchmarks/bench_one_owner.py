"""Claim: with one owner per phone the shared proxy bank beats local heads and backbone-only FedAvg.

Runs every method of ``nptface.simulation.one_owner`` (shared bank, none, dp, local heads, backbone
only, centralised; opt-in: fedprox, with --set local-epochs=N) for each seed from the same server
model, resumable per (method, seed), and writes ``one-owner.md`` / ``.json`` / ``.png`` under ``--out``
(also ``nptface fed bench one-owner``, the same options):

    .venv/bin/python benchmarks/bench_one_owner.py --server-run runs/quickstart --devices 100 --seeds 3 \\
        --out runs/bench-one-owner
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from machine import describe  # noqa: E402

from nptface.simulation.one_owner import main  # noqa: E402

if __name__ == "__main__":
    print(describe())
    main()
