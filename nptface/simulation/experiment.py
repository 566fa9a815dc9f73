"""``nptface fed simulate``: the federated run and its three baselines, measured the same way.

(a) the server model without fine-tuning (round 0 of the federated run's history);
(b) centralised fine-tuning on the union of the clients' training images — the upper bound
    no federation can beat, with the same local recipe for as many epochs as the federation
    runs rounds x local epochs, and the server's proxies as negatives; its model is saved as the
    run directory ``baseline-centralised/``, so it can be exported and compared like any run;
(c) FedAvg with per-client local heads only (FedPer-like): the same rounds, but no negatives
    are shared and no spread-out runs, so each client separates only its own identities.
All are evaluated on the same held-out identities (client domain and server domain). The report
has per-round curves (PNG), a table, and ``results.json``; "FL recovers X% of the centralised
gain" is (FL − server) / (centralised − server) on client-domain TAR@FAR=1e-2. With
``final-mix`` < 1 a method's row scores the model it exports (the mix), next to its last round.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import ConcatDataset

from nptface.core.atomic import atomic_write_bytes
from nptface.core.checkpoint import CheckpointMeta, load_backbone, load_proxies, save_checkpoint
from nptface.core.metrics_json import null_non_finite, write_metrics_json
from nptface.core.tables import markdown_table, percent
from nptface.server.federation.config import FedConfig
from nptface.server.federation.state import latest_state
from nptface.simulation.config import SimulationConfig

PRIMARY = "client-domain/tar@far=1e-2"


@dataclass
class ExperimentResult:
    out_dir: Path
    rows: dict[str, dict[str, float | None]]  # method -> metrics (None: not measurable on these sets)
    history: list[dict[str, Any]]
    fedper_history: list[dict[str, Any]]
    recovered_share: float | None
    table: str
    seconds: dict[str, float]


class _Labelled(ConcatDataset):
    """Client datasets stacked with labels offset so identities stay distinct."""

    def __init__(self, parts: list[Any]) -> None:
        super().__init__(parts)
        offsets = np.cumsum([0] + [p.num_classes for p in parts])
        self.labels = np.concatenate([np.asarray(p.labels) + o for p, o in zip(parts, offsets, strict=False)])
        self.num_classes = int(offsets[-1])
        self.class_names = [name for p in parts for name in p.class_names]
        self._offsets = offsets

    def __getitem__(self, index: int):  # type: ignore[no-untyped-def]
        part = int(np.searchsorted(self.cumulative_sizes, index, side="right"))
        image, label = super().__getitem__(index)
        return image, int(label) + int(self._offsets[part])


def centralised_baseline(config: FedConfig, out_dir: Path) -> dict[str, float | None]:
    """Fine-tune the server model on the union of the clients' images, save it as the run directory
    ``out_dir`` (exportable like any run) and return its evaluation."""
    from nptface.client.local_training import LocalConfig, fine_tune
    from nptface.core.imprinting import imprint
    from nptface.core.partitions import client_datasets

    model, _ = load_backbone(config.server_run)
    settings = replace(config.client, image_size=model.config.input_size)
    plan = settings.plan()
    union = _Labelled(
        [
            client_datasets(plan, c.partition_id, settings.image_size, seed=settings.partition_seed)[0]
            for c in plan.clients
        ]
    )
    negatives = load_proxies(config.server_run).numpy() if config.proxy_sharing != "local-heads" else np.zeros((0, 1))
    local = LocalConfig(
        epochs=config.num_rounds * settings.local_epochs,
        lr=settings.lr,
        batch_size=settings.batch_size,
        k=settings.k,
        delta=settings.delta,
        bn_frozen=settings.bn_mode == "frozen",
        seed=config.seed,
    )
    result = fine_tune(model, imprint(model, union), negatives, union, local)
    meta = CheckpointMeta(
        model=model.config.to_dict(),
        head="npt",
        head_hparams={"k": local.k, "delta": local.delta, "r": local.r},
        class_names=list(union.class_names),
        extra={
            "run": "centralised fine-tuning baseline",
            "init": {"path": config.server_run},
            "epochs": local.epochs,
            "training_data": _training_data(plan.source, union),
        },
    )
    save_checkpoint(out_dir, model, torch.from_numpy(result.rows), meta)
    return _held_out(model, config)


def _held_out(model: Any, config: FedConfig) -> dict[str, float | None]:
    """A model's metrics on the federation's held-out sets, as each round's record has them."""
    from nptface.server.federation.evaluation import central_eval_sets, evaluate_backbone

    return null_non_finite(evaluate_backbone(model, central_eval_sets(config, model.config.input_size)))


def _training_data(source: str, union: _Labelled) -> dict[str, Any]:
    """The clients' training images, described as the trainer describes its own (the model card reads it)."""
    kind = "synthetic" if source == "synthetic" else "imagefolder"
    return {
        "kind": kind,
        "path": "" if kind == "synthetic" else source,
        "domain": None,
        "identities": union.num_classes,
        "images": len(union),
    }


def run_experiment(
    config: SimulationConfig, baselines: bool = True, cpus_per_client: float = 1.0, progress: bool = True
) -> ExperimentResult:
    from nptface.simulation.run import simulate

    out = Path(config.fed.out_dir)
    seconds: dict[str, float] = {}
    seconds["federated"] = simulate(config, cpus_per_client, progress=progress)
    history = _history(out, config.fed.num_rounds)
    rows = {"server model, no fine-tuning": _metrics(history[0])}
    rows.update(_final_rows("federated, shared proxy bank", config.fed, out, history[-1]))
    fedper_history: list[dict[str, Any]] = []
    if baselines:
        fedper = replace(
            config, fed=replace(config.fed, proxy_sharing="local-heads", out_dir=str(out / "baseline-fedper"))
        )
        seconds["fedper"] = simulate(fedper, cpus_per_client, progress=progress)
        fedper_history = _history(Path(fedper.fed.out_dir), config.fed.num_rounds)
        rows.update(
            _final_rows("FedAvg + local heads (FedPer-like)", fedper.fed, Path(fedper.fed.out_dir), fedper_history[-1])
        )
        started = time.perf_counter()
        rows["centralised fine-tuning (upper bound)"] = centralised_baseline(config.fed, out / "baseline-centralised")
        seconds["centralised"] = time.perf_counter() - started
    recovered = _recovered(rows)
    table = _table(rows, recovered)
    _write_report(out, config, rows, history, fedper_history, recovered, table, seconds)
    return ExperimentResult(out, rows, history, fedper_history, recovered, table, seconds)


def _history(out: Path, num_rounds: int) -> list[dict[str, Any]]:
    """Rounds 0..num_rounds of the run in ``out``; a longer earlier run there is refused, not misread."""
    state = latest_state(out)
    if state is None or state.round != num_rounds:
        found = "nothing" if state is None else f"{state.round} rounds"
        raise RuntimeError(f"{out} holds {found}, expected exactly {num_rounds}; use a fresh out-dir")
    return state.history


def _final_rows(name: str, config: FedConfig, out: Path, final: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """The method's row: the model it exports. With ``final-mix`` < 1 that is the mix of the server's
    and the last round's backbone, which no round evaluated, so it is evaluated here on the same
    held-out sets; the last round's (unmixed) numbers follow in a row of their own."""
    if config.final_mix == 1.0:
        return {name: _metrics(final)}
    model, _ = load_backbone(out)
    return {
        f"{name}, exported (final-mix {config.final_mix:g})": {
            **_held_out(model, config),
            "clients-local/accuracy": None,
        },
        f"{name}, last round (unmixed)": _metrics(final),
    }


def _metrics(record: dict[str, Any]) -> dict[str, float | None]:
    """The held-out metrics of a history record (already strict: an unmeasurable one is None)."""
    return {
        k: None if v is None else float(v)
        for k, v in record.items()
        if k.startswith(("client-domain/", "server-domain/")) or k == "clients-local/accuracy"
    }


def _recovered(rows: dict[str, dict[str, float | None]]) -> float | None:
    """The share of the centralised gain FL recovers; None when a term is unmeasured or there is no gain."""
    server = rows["server model, no fine-tuning"].get(PRIMARY)
    central = rows.get("centralised fine-tuning (upper bound)", {}).get(PRIMARY)
    name = next(n for n in rows if n.startswith("federated, shared proxy bank"))  # the exported model's row
    federated = rows[name].get(PRIMARY)
    if server is None or central is None or federated is None or not central - server > 1e-9:
        return None
    return (federated - server) / (central - server)


def _table(rows: dict[str, dict[str, float | None]], recovered: float | None) -> str:
    header = [
        "method",
        "client-domain TAR@FAR=1e-2",
        "client-domain 10-fold acc",
        "server-domain TAR@FAR=1e-2",
        "server-domain acc",
        "clients' own held-out acc",
    ]
    table = markdown_table(
        header,
        [
            [
                name,
                percent(m.get("client-domain/tar@far=1e-2")),
                percent(m.get("client-domain/accuracy")),
                percent(m.get("server-domain/tar@far=1e-2")),
                percent(m.get("server-domain/accuracy")),
                percent(m.get("clients-local/accuracy")),
            ]
            for name, m in rows.items()
        ],
    )
    if recovered is not None:
        table += f"\n\nFL recovers {recovered * 100:.0f}% of the centralised gain (client-domain TAR@FAR=1e-2)."
    return table


def _write_report(
    out: Path,
    config: SimulationConfig,
    rows: dict[str, dict[str, float | None]],
    history: list[dict[str, Any]],
    fedper: list[dict[str, Any]],
    recovered: float | None,
    table: str,
    seconds: dict[str, float],
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for label, runs in (("shared bank", history), ("local heads", fedper)):
        if not runs:
            continue
        rounds = [h["round"] for h in runs]
        for ax, key in zip(
            axes, ("client-domain/tar@far=1e-2", "server-domain/tar@far=1e-2", "min_sq_distance"), strict=True
        ):
            ax.plot(rounds, [_plotted(h.get(key)) for h in runs], marker="o", label=label)
    central = rows.get("centralised fine-tuning (upper bound)")
    for ax, key in zip(axes[:2], ("client-domain/tar@far=1e-2", "server-domain/tar@far=1e-2"), strict=True):
        if central and central.get(key) is not None:
            ax.axhline(central[key], ls="--", c="k", label="centralised")
    axes[2].axhline(config.fed.client.delta, ls=":", c="r", label="margin Δ")
    titles = (
        "client-domain held-out TAR@FAR=1e-2",
        "server-domain held-out TAR@FAR=1e-2 (forgetting)",
        "min squared distance between proxies",
    )
    for ax, title in zip(axes, titles, strict=True):
        ax.set_title(title)
        ax.set_xlabel("round")
        ax.legend()
    fig.tight_layout()
    png = out / "federated.png"
    fig.savefig(png.with_suffix(".tmp.png"), dpi=100)
    plt.close(fig)
    png.with_suffix(".tmp.png").replace(png)
    write_metrics_json(
        out / "results.json",
        {
            "config": config.to_run_config(),
            "methods": rows,
            "history": history,
            "fedper_history": fedper,
            "recovered_share": recovered,
            "seconds": seconds,
        },
    )
    report = [
        f"# Federated fine-tuning ({config.fed.client.num_clients} clients, {config.fed.num_rounds} rounds)",
        "",
        table,
        "",
        "![curves](federated.png)",
        "",
        *(["Centralised baseline model: `baseline-centralised/` (a run directory).", ""] if central else []),
        f"Wall time (s): {json.dumps({k: round(v, 1) for k, v in seconds.items()})}",
    ]
    atomic_write_bytes(out / "report.md", ("\n".join(report) + "\n").encode())


def _plotted(value: float | None) -> float:
    """An unmeasured point is a gap in the curve."""
    return float("nan") if value is None else value
