"""The end-to-end main job on the embedded synthetic data: render, train, evaluate, report.

Runs the trainer with the ``synthetic-quick`` config (a half-width MobileFaceNet at 64x64 on 300
synthetic server identities) and evaluates on held-out identities never trained on, both before
training (same architecture and seed, random weights) and after, so the reader sees that
training is what made the difference. Sized to finish in minutes on two CPU cores. Re-running
it resumes an interrupted run, or only re-evaluates and rewrites the report of a finished one.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from nptface.core.atomic import atomic_write_bytes, atomic_write_json
from nptface.core.evaluation import EvaluationResult
from nptface.server.training.config import TrainConfig, load_config
from nptface.server.training.trainer import FitResult, Trainer

logger = logging.getLogger(__name__)

QUICKSTART_CONFIG = "synthetic-quick"


@dataclass
class QuickstartResult:
    run_dir: Path
    untrained: dict[str, EvaluationResult]
    fit: FitResult

    @property
    def trained(self) -> dict[str, EvaluationResult]:
        return self.fit.final_eval


def quickstart_config(overrides: list[str] | tuple[str, ...] = (), name: str = "quickstart",
                      runs_root: str | Path = "runs") -> TrainConfig:
    # JSON strings are TOML basic strings, so names and paths survive quoting.
    return load_config(QUICKSTART_CONFIG, [f"run.name={json.dumps(name)}",
                                           f"run.output_dir={json.dumps(Path(runs_root).as_posix())}", *overrides])


def run_quickstart(config: TrainConfig) -> QuickstartResult:
    trainer = Trainer(config)
    try:
        untrained = trainer.evaluate()  # before restore/fit: the seeded random initialisation
        fit = trainer.fit(resume="auto")
    finally:
        trainer.close()
    result = QuickstartResult(fit.run_dir, untrained, fit)
    _add_untrained_to_outputs(result)
    return result


def _add_untrained_to_outputs(result: QuickstartResult) -> None:
    """The untrained baseline goes into the run's metrics and at the top of its report."""
    metrics_path = result.run_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text())
    metrics["untrained"] = {name: r.to_dict() for name, r in result.untrained.items()}
    atomic_write_json(metrics_path, metrics)
    lines = ["## Before training (same architecture and seed, random weights)", ""]
    for name, evaluation in result.untrained.items():
        trained = result.trained[name].verification.accuracy.mean
        lines.append(f"`{name}`: 10-fold accuracy (cosine) {evaluation.verification.accuracy.mean * 100:.2f}% "
                     f"untrained vs {trained * 100:.2f}% trained; untrained details:")
        lines += [""] + [f"- {line}" for line in evaluation.summary_lines()] + [""]
    report_path = result.run_dir / "report.md"
    report = report_path.read_text().split("\n")
    atomic_write_bytes(report_path, "\n".join(report[:4] + lines + report[4:]).encode())  # after the summary
