"""The end-to-end main job on the embedded synthetic data: train, fine-tune federated, export.

Stage 1 runs the trainer with the ``synthetic-quick`` config (a half-width MobileFaceNet at 64x64
on 300 synthetic server identities) and evaluates on held-out identities never trained on, both
before training (same architecture and seed, random weights) and after, so the reader sees that
training is what made the difference. Stage 2 lets 8 clients in another imaging domain fine-tune
that model with a shared proxy bank (Flower simulation), next to its baselines. Stage 3 exports
the last model to ONNX, TFLite and Core ML behind the parity gate, and the job ends with the
command that serves it to a browser. Sized to finish in minutes on two CPU cores. Re-running it
resumes an interrupted training run, or only re-evaluates and rewrites the report of a finished one.
The federated and export stages need the ``fl`` and ``export`` extras, so they import them lazily.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from nptface.core.atomic import atomic_write_bytes, atomic_write_json
from nptface.core.evaluation import EvaluationResult
from nptface.server.training.config import TrainConfig, load_config
from nptface.server.training.report import ReportSection
from nptface.server.training.trainer import FitResult, Trainer

if TYPE_CHECKING:
    from nptface.edge_export.pipeline import ExportResult

QUICKSTART_CONFIG = "synthetic-quick"
FEDERATED_ROUNDS = 5
Say = Callable[[str], None]


@dataclass(frozen=True)
class QuickstartOptions:
    """Where the stages write, which run, and which stages run: what ``nptface quickstart`` takes."""

    runs: Path = Path("runs")
    bundles: Path = Path("bundles")
    name: str = "quickstart"
    overrides: tuple[str, ...] = ()  # KEY=VALUE over the synthetic-quick config
    progress: bool = True
    federated: bool = True
    export: bool = True
    command: tuple[str, ...] = ("nptface", "quickstart")  # recorded in the bundle's manifest

    @property
    def federated_dir(self) -> Path:
        return self.runs / f"{self.name}-federated"

    @property
    def bundle_dir(self) -> Path:
        return self.bundles / self.name


@dataclass
class TrainingOutcome:
    """Stage 1: the run directory and held-out evaluations before and after training."""

    run_dir: Path
    untrained: dict[str, EvaluationResult]
    fit: FitResult

    @property
    def trained(self) -> dict[str, EvaluationResult]:
        return self.fit.final_eval


@dataclass
class QuickstartResult:
    """What each stage left: the trained run, the federated run (None if skipped), the bundle (None if skipped)."""

    training: TrainingOutcome
    federated_dir: Path | None
    export: ExportResult | None


def quickstart_config(
    overrides: Sequence[str] = (), name: str = "quickstart", runs_root: str | Path = "runs"
) -> TrainConfig:
    # JSON strings are TOML basic strings, so names and paths survive quoting.
    return load_config(
        QUICKSTART_CONFIG,
        [f"run.name={json.dumps(name)}", f"run.output_dir={json.dumps(Path(runs_root).as_posix())}", *overrides],
    )


def run_quickstart(options: QuickstartOptions, say: Say = print) -> QuickstartResult:
    """All stages in order; ``say`` receives the tables and lines a person reads."""
    overrides = [*options.overrides, *([] if options.progress else ["log.progress=false"])]
    training = train_stage(quickstart_config(overrides, options.name, options.runs))
    for line in training_summary(training):
        say(line)
    final_run = training.run_dir
    federated_dir = None
    if options.federated:
        federated_dir = final_run = federated_stage(training.run_dir, options.federated_dir, say)
    export = export_stage(final_run, options.bundle_dir, options.command, say) if options.export else None
    return QuickstartResult(training, federated_dir, export)


def train_stage(config: TrainConfig) -> TrainingOutcome:
    """Stage 1: evaluate the seeded random initialisation, train (or resume), and report both."""
    trainer = Trainer(config)
    try:
        untrained = trainer.evaluate()  # before restore/fit: the seeded random initialisation
        fit = trainer.fit(resume="auto")
        outcome = TrainingOutcome(fit.run_dir, untrained, fit)
        report = trainer.report(fit.final_eval)
    finally:
        trainer.close()
    report.sections.insert(0, _untrained_section(outcome))  # right after the run's summary
    atomic_write_bytes(outcome.run_dir / "report.md", report.markdown().encode())
    metrics_path = outcome.run_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text())
    metrics["untrained"] = {name: r.to_dict() for name, r in untrained.items()}
    atomic_write_json(metrics_path, metrics)
    return outcome


def _untrained_section(outcome: TrainingOutcome) -> ReportSection:
    blocks = []
    for name, evaluation in outcome.untrained.items():
        trained = outcome.trained[name].verification.accuracy.mean
        blocks.append(
            f"`{name}`: 10-fold accuracy (cosine) {evaluation.verification.accuracy.mean * 100:.2f}% "
            f"untrained vs {trained * 100:.2f}% trained; untrained details:"
        )
        blocks.append("\n".join(f"- {line}" for line in evaluation.summary_lines()))
    return ReportSection("Before training (same architecture and seed, random weights)", blocks)


def training_summary(outcome: TrainingOutcome) -> list[str]:
    lines = [""]
    for name, trained in outcome.trained.items():
        untrained = outcome.untrained[name].verification.accuracy.mean
        lines += [
            f"{name}: 10-fold verification accuracy (cosine) on identities never trained on",
            f"  untrained network: {untrained * 100:.2f}%",
            f"  after NPT training: {trained.verification.accuracy.mean * 100:.2f}%",
        ]
        lines += [f"  {line}" for line in trained.summary_lines()[1:]]
    fit = outcome.fit
    resumed = f", resumed from step {fit.resumed_from}" if fit.resumed_from is not None else ""
    lines.append(
        f"run directory: {outcome.run_dir} (report.md, metrics.json, roc.png, model.safetensors); "
        f"training wall time this process {fit.seconds / 60:.1f} min{resumed}"
    )
    return lines


def federated_stage(server_run: Path, out: Path, say: Say = print) -> Path:
    """Stage 2: 8 clients in another imaging domain fine-tune with a shared proxy bank; returns the run."""
    from nptface.server.federation.config import FedConfig
    from nptface.simulation.config import SimulationConfig
    from nptface.simulation.experiment import run_experiment

    config = FedConfig.from_run_config(
        {"server-run": str(server_run), "out-dir": str(out), "num-rounds": FEDERATED_ROUNDS}
    )
    say(
        f"\nfederated fine-tuning: {config.client.num_clients} clients holding {config.client.client_identities} "
        f"new identities in the '{config.client.domains}' domain, {config.num_rounds} rounds (Flower simulation) "
        "+ baselines ..."
    )
    result = run_experiment(SimulationConfig(config))
    say(result.table)
    say(f"federated report: {out / 'report.md'} (curves {out / 'federated.png'})")
    return out


def export_stage(
    run_dir: Path, out: Path, command: Sequence[str] = ("nptface", "quickstart"), say: Say = print
) -> ExportResult:
    """Stage 3: the model as a parity-gated bundle for devices, then how to try it.

    Partial bundles are accepted here (a rejected variant is reported, not fatal): the quickstart
    shows what ships and what the gate refused; ``nptface export`` is strict by default.
    """
    from nptface.edge_export.pipeline import ExportOptions, export_run
    from nptface.on_device.face_detection import bundled_detector

    say(
        f"\nexporting {run_dir} to ONNX, TFLite and Core ML (fp32/fp16/int8), each checked against the fp32 "
        "reference on held-out identities ..."
    )
    result = export_run(
        run_dir,
        out,
        options=ExportOptions(allow_partial=True, overwrite=True, detector=bundled_detector()),
        command=list(command),
    )
    say(result.table)
    rejected = ", ".join(v.name if v.built else f"{v.name} (not built)" for v in result.rejected) or "none"
    say(
        f"bundle: {result.bundle_dir} ({len(result.shipped)} variants shipped, rejected: {rejected}; "
        f"model card in {result.bundle_dir / 'README.md'})"
    )
    say(demo_hint(result.bundle_dir))
    return result


def demo_hint(bundle_dir: Path) -> str:
    return (
        f"try it on-device (the browser runs the model): nptface demo serve --bundle {bundle_dir.as_posix()}"
        f"  then open http://127.0.0.1:8765/ ; or nptface enroll/verify/identify --bundle {bundle_dir.as_posix()} ..."
    )
