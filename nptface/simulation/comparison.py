"""Several federated runs side by side: the privacy table (sharing modes) and the robustness table.

``nptface fed simulate --proxy-sharing all,public,none,dp --attack linkage`` runs one federation per
mode from the same server model and partition plan and tabulates, per mode: held-out TAR@FAR=1e-2
and accuracy (client domain), the change against ``all``, the proxy-linkage attack's rank-1 pooled
over rounds with its chance level, how many client rows the attacker was sent, and epsilon for
``dp``. ``nptface fed simulate --poison scale:0,noise:1,flip:2`` runs the clean federation, the
poisoned one with every optional defence off, and the poisoned one with the robust options, and
tabulates the damage against the clean run. No run turns off the checks that keep the global model
usable (unusable replies are rejected, an unusable aggregate is rolled back): the table counts both.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from nptface.core.atomic import atomic_write_bytes
from nptface.core.metrics_json import write_metrics_json
from nptface.core.tables import markdown_table, percent
from nptface.server.federation.state import latest_state
from nptface.simulation.config import Harness, SimulationConfig

TAR = "client-domain/tar@far=1e-2"
ACC = "client-domain/accuracy"


@dataclass
class Comparison:
    table: str
    rows: dict[str, dict[str, Any]]
    out_dir: Path


def sharing_configs(base: SimulationConfig, modes: list[str], attack: bool) -> dict[str, SimulationConfig]:
    harness = replace(base.harness, attack_linkage=attack or base.harness.attack_linkage)
    return {
        mode: SimulationConfig(
            replace(base.fed, proxy_sharing=mode, out_dir=str(Path(base.fed.out_dir) / f"sharing-{mode}")), harness
        )
        for mode in modes
    }


def robustness_configs(base: SimulationConfig, poison: str, robust: list[str]) -> dict[str, SimulationConfig]:
    """Clean run, poisoned run with every defence off, and per robust aggregator the clean and the poisoned run."""
    out = Path(base.fed.out_dir)
    clean, poisoned = replace(base.harness, poison=""), replace(base.harness, poison=poison)

    def run(harness: Harness, name: str, **fed: Any) -> SimulationConfig:
        return SimulationConfig(replace(base.fed, out_dir=str(out / name), **fed), harness)

    configs = {
        "clean (FedAvg + norm screens)": run(clean, "clean"),
        "poisoned, no defence (plain FedAvg)": run(
            poisoned,
            "poisoned-undefended",
            norm_screen=0.0,
            row_norm_limit=0.0,
            update_norm_limit=0.0,
            backbone_aggregation="fedavg",
        ),
    }
    for method in (m for m in robust if m != "fedavg"):  # what the aggregator costs by itself, without attackers
        configs[f"clean, norm screens + {method}"] = run(clean, f"clean-{method}", backbone_aggregation=method)
    for method in robust:
        configs[f"poisoned, norm screens + {method}"] = run(poisoned, f"poisoned-{method}", backbone_aggregation=method)
    return configs


def run_comparison(
    configs: dict[str, SimulationConfig], out_dir: Path, kind: str, cpus_per_client: float = 1.0
) -> Comparison:
    from nptface.simulation.run import simulate

    rows: dict[str, dict[str, Any]] = {}
    for label, config in configs.items():
        state = latest_state(Path(config.fed.out_dir))
        if state is None or state.round < config.fed.num_rounds:  # finished runs are reused; unfinished ones resume
            simulate(config, cpus_per_client)
            state = latest_state(Path(config.fed.out_dir))
        assert state is not None
        rows[label] = summarise(state.history, config)
    table = privacy_table(rows) if kind == "privacy" else robustness_table(rows)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_metrics_json(
        out_dir / f"{kind}.json", {"rows": rows, "configs": {k: c.to_run_config() for k, c in configs.items()}}
    )
    atomic_write_bytes(out_dir / f"{kind}.md", (f"# {kind.capitalize()} comparison\n\n{table}\n").encode())
    return Comparison(table, rows, out_dir)


def summarise(history: list[dict[str, Any]], config: SimulationConfig) -> dict[str, Any]:
    """Final held-out metrics, the attack pooled over all rounds, epsilon spent, rejected updates."""
    final = history[-1]
    rounds = [h for h in history if h.get("round", 0) > 0]
    attacked = sum(h.get("attack/rows", 0.0) for h in rounds)
    hits = sum(h.get("attack/rank1", 0.0) * h.get("attack/rows", 0.0) for h in rounds)
    attack, sharing = config.harness.attack_linkage, config.fed.proxy_sharing
    return {
        "mode": sharing,
        "tar": final.get(TAR),
        "accuracy": final.get(ACC),
        "server_tar": final.get("server-domain/tar@far=1e-2"),
        "attack_rows": attacked if attack else None,
        "attack_rank1": hits / attacked if attack and attacked else None,
        "attack_per_round": [h.get("attack/rank1") for h in rounds] if attack else None,
        "attack_chance": next((h["attack/chance"] for h in rounds if "attack/chance" in h), None),
        "epsilon": final.get("dp/epsilon"),
        "delta": config.fed.dp_delta if sharing == "dp" else None,
        "noise_multiplier": final.get("dp/noise_multiplier"),
        "rejected": int(sum(h.get("rejected", 0) for h in rounds)),
        "rolled_back": sum(1 for h in rounds if h.get("rolled_back")),
        "start_tar": history[0].get(TAR),
        "start_accuracy": history[0].get(ACC),
    }


def privacy_table(rows: dict[str, dict[str, Any]]) -> str:
    reference = rows.get("all", {}).get("tar")
    header = [
        "sharing",
        "TAR@FAR=1e-2",
        "vs all (points)",
        "10-fold acc",
        "linkage rank-1 (pooled)",
        "chance",
        "rank-1 per round",
        "client rows sent to attacker",
        "epsilon (delta)",
        "goal",
    ]
    cells = []
    for mode, r in rows.items():
        delta_pts = None if reference is None or r["tar"] is None else (r["tar"] - reference) * 100
        goal = "reference" if mode == "all" else _goal(r, delta_pts)
        rank1 = "no rows to link" if r["attack_rows"] == 0 else percent(r["attack_rank1"])
        cells.append(
            [
                mode,
                percent(r["tar"]),
                _signed(delta_pts),
                percent(r["accuracy"]),
                rank1,
                percent(r["attack_chance"]),
                _per_round(r.get("attack_per_round")),
                _int(r["attack_rows"]),
                _epsilon_cell(mode, r),
                goal,
            ]
        )
    return markdown_table(header, cells)


def _goal(r: dict[str, Any], delta_pts: float | None) -> str:
    """The privacy goal for a private mode: attack rank-1 <= chance + 5 points at <= 2 points TAR loss vs all."""
    missed = []
    if (
        r["attack_rank1"] is not None
        and r["attack_chance"] is not None
        and r["attack_rank1"] > r["attack_chance"] + 0.05
    ):
        missed.append("attack > chance + 5")
    if delta_pts is not None and delta_pts < -2.0:
        missed.append("TAR loss > 2 points")
    return "missed: " + ", ".join(missed) if missed else "met"


def _epsilon_cell(mode: str, r: dict[str, Any]) -> str:
    if r["epsilon"] is not None:
        return f"{r['epsilon']:.2f} ({r['delta']:g}), noise z = {r['noise_multiplier']:.3f}"
    if mode == "all":
        return "∞ (raw rows)"
    if mode in ("public", "none", "local-heads"):
        return "no client row reaches a client"
    return "n/a"


def robustness_table(rows: dict[str, dict[str, Any]]) -> str:
    clean = next(iter(rows.values()))
    header = [
        "run",
        "TAR@FAR=1e-2",
        "vs clean (points)",
        "10-fold acc",
        "vs clean (points)",
        "updates rejected",
        "rounds rolled back",
    ]
    table = markdown_table(
        header,
        [
            [
                label,
                percent(r["tar"]),
                _signed(_diff(r["tar"], clean["tar"])),
                percent(r["accuracy"]),
                _signed(_diff(r["accuracy"], clean["accuracy"])),
                r["rejected"],
                r["rolled_back"],
            ]
            for label, r in rows.items()
        ],
    )
    return (
        f"{table}\n\nServer model before federation: TAR {percent(clean['start_tar'])}, "
        f"acc {percent(clean['start_accuracy'])}."
    )


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else (a - b) * 100


def _signed(points: float | None) -> str:
    return "—" if points is None else f"{points:+.2f}"


def _per_round(values: list[float | None] | None) -> str:
    """``–/78/81`` in percent; a dash where the attacker was sent no client row that round."""
    if not values:
        return "—"
    return "/".join("–" if v is None else f"{v * 100:.0f}" for v in values)


def _int(value: float | None) -> str:
    return "—" if value is None else str(int(value))
