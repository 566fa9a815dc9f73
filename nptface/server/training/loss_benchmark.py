"""The paper's claim, reproduced on our data: NPT against its baselines under one budget.

Trains the same MobileFaceNet with each head (NPT k=1 and k=6, ArcFace, CosFace, normalised
softmax, plain proxy-triplet) for the same steps, data and seeds, and tabulates held-out
verification (10-fold accuracy, TAR@FAR, EER) and wall time, as mean ± std over seeds. The
ablation varies NPT's margin (delta / 2r^2) and k as the paper's Tables do. Every run is an
ordinary training run directory: an interrupted benchmark resumes, reusing finished runs whose
config hash matches.
"""

from __future__ import annotations

import json
import logging
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nptface.core.atomic import atomic_write_bytes, atomic_write_json
from nptface.core.tables import markdown_table
from nptface.server.training.config import TrainConfig, load_config
from nptface.server.training.trainer import train_from_config

logger = logging.getLogger(__name__)

LOSS_VARIANTS: dict[str, list[str]] = {
    "npt-k1": ['head.name="npt"', "head.params={k=1, delta=1.0, r=1.0}"],
    "npt-k6": ['head.name="npt"', "head.params={k=6, delta=1.0, r=1.0}"],
    "arcface": ['head.name="arcface"', "head.params={s=64.0, m=0.5}"],
    "cosface": ['head.name="cosface"', "head.params={s=64.0, m=0.35}"],
    "normsoftmax": ['head.name="normsoftmax"', "head.params={s=64.0}"],
    "proxytriplet": ['head.name="proxytriplet"', "head.params={delta=1.0, r=1.0}"],
}
# The paper's ablations: the margin as a cosine margin delta / 2r^2 (r = 1), and k. Margins stop
# at 1.0: with C classes no embedding can beat a margin of C/(C-1) (core.losses.reachable_margin_limit).
MARGIN_VARIANTS = {f"npt-margin{m}": ['head.name="npt"', f"head.params={{k=6, delta={2 * m}, r=1.0}}"]
                   for m in (0.2, 0.3, 0.5, 0.75, 1.0)}
K_VARIANTS = {f"npt-k{k}": ['head.name="npt"', f"head.params={{k={json.dumps(k)}, delta=1.0, r=1.0}}"]
              for k in (1, 2, 6, 10, "all")}

# Sized for minutes per run on two CPU cores; pass --set to scale up on a GPU.
SYNTHETIC_BUDGET = [
    "data.identities=150", "data.images_per_identity=20", "optim.epochs=5", "optim.milestones=[3.0, 4.2]",
    "optim.warmup_epochs=0.3",
]
FOLDER_BUDGET = [
    'data.kind="imagefolder"', "data.heldout_identities=10", "optim.epochs=20", "optim.batch_size=32",
    "optim.milestones=[12.0, 17.0]", "optim.warmup_epochs=1.0", "eval.sets=[]",
]


@dataclass
class RunOutcome:
    variant: str
    seed: int
    accuracy: float
    tar_1e2: float | None
    tar_1e3: float | None
    eer: float
    seconds: float


def _outcome(variant: str, seed: int, metrics: dict[str, Any], seconds: float) -> RunOutcome:
    name, evaluation = next(iter(metrics["final"].items()))
    verification = evaluation["verification"]
    tars = {round(entry["far"], 6): entry["tar"] for entry in verification["tar_at_far"]}
    logger.info("%s seed %d on %s: accuracy %.4f", variant, seed, name, verification["accuracy"]["mean"])
    return RunOutcome(variant, seed, verification["accuracy"]["mean"], tars.get(0.01), tars.get(0.001),
                      verification["eer"], seconds)


def run_variant(config: TrainConfig, run_dir: Path, variant: str) -> RunOutcome:
    metrics_path = run_dir / "metrics.json"
    if metrics_path.is_file():
        metrics = json.loads(metrics_path.read_text())
        if metrics.get("config_hash") == config.hash() and metrics.get("final"):
            logger.info("reusing finished run %s", run_dir)
            return _outcome(variant, config.run.seed, metrics, metrics["benchmark_seconds"])
    result = train_from_config(config, run_dir, resume="auto")
    metrics = json.loads(metrics_path.read_text())
    metrics["benchmark_seconds"] = metrics.get("benchmark_seconds", 0.0) + result.seconds
    atomic_write_json(metrics_path, metrics)
    return _outcome(variant, config.run.seed, metrics, metrics["benchmark_seconds"])


def run_benchmark(
    variants: dict[str, list[str]],
    seeds: Sequence[int],
    out_dir: Path,
    base_overrides: Sequence[str],
    base_config: str = "synthetic-quick",
) -> list[RunOutcome]:
    outcomes = []
    for variant, overrides in variants.items():
        for seed in seeds:
            run_dir = out_dir / f"{variant}-seed{seed}"
            config = load_config(base_config, [*base_overrides, *overrides, f"run.seed={seed}",
                                               f'run.name="{variant}-seed{seed}"', "log.progress=false"])
            config.eval.every_epochs = config.optim.epochs  # evaluate once, at the end
            outcomes.append(run_variant(config, run_dir, variant))
    return outcomes


def _mean_std(values: list[float | None], scale: float = 100.0) -> str:
    present = [v for v in values if v is not None]
    if not present:
        return "n/a"
    mean = statistics.fmean(present) * scale
    std = statistics.stdev(present) * scale if len(present) > 1 else 0.0
    return f"{mean:.2f} ± {std:.2f}"


def summarise(outcomes: list[RunOutcome], title: str, out_dir: Path, stem: str) -> str:
    variants = list(dict.fromkeys(o.variant for o in outcomes))
    rows = []
    for variant in variants:
        runs = [o for o in outcomes if o.variant == variant]
        rows.append([
            f"`{variant}`", len(runs), _mean_std([o.accuracy for o in runs]), _mean_std([o.tar_1e2 for o in runs]),
            _mean_std([o.tar_1e3 for o in runs]), _mean_std([o.eer for o in runs]),
            f"{statistics.fmean(o.seconds for o in runs):.0f}",
        ])
    table = markdown_table(["head", "seeds", "10-fold acc %", "TAR@FAR=1e-2 %", "TAR@FAR=1e-3 %", "EER %",
                            "wall s / run"], rows)
    text = f"## {title}\n\nMean ± sample std over seeds; cosine similarity; held-out identities.\n\n{table}\n"
    atomic_write_bytes(out_dir / f"{stem}.md", text.encode())
    atomic_write_json(out_dir / f"{stem}.json", [o.__dict__ for o in outcomes])
    return text
