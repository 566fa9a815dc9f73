"""What a training run leaves for people to read: plots and a short Markdown report.

Plots are written with matplotlib's non-interactive backend (no display on servers) and, like
every output, to a temporary name first and then renamed into place. The report is kept as
parts (:class:`RunReport`) until it is written, so a job built on the trainer (the quickstart)
adds its own section by name and position instead of editing the rendered text.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

from nptface.core.atomic import atomic_write_bytes  # noqa: E402
from nptface.core.verification import RocCurve  # noqa: E402


def _save_figure(figure: plt.Figure, path: Path) -> None:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    atomic_write_bytes(path, buffer.getvalue())


@dataclass
class ReportSection:
    """A ``## heading`` (none for a trailing figure) and its Markdown blocks: paragraphs, lists, tables, images."""

    heading: str | None
    blocks: list[str] = field(default_factory=list)


@dataclass
class RunReport:
    """A run's report.md as a title, a summary paragraph and sections, rendered in that order."""

    title: str
    summary: str
    sections: list[ReportSection] = field(default_factory=list)

    def markdown(self) -> str:
        parts = [f"# {self.title}", self.summary]
        for section in self.sections:
            parts += ([f"## {section.heading}"] if section.heading else []) + section.blocks
        return "\n\n".join(parts) + "\n"


def plot_roc(curves: dict[str, RocCurve], path: Path) -> None:
    """ROC curves on a log FAR axis, where face verification operating points live."""
    figure, axis = plt.subplots(figsize=(5, 4))
    for label, roc in curves.items():
        keep = roc.fpr > 0
        axis.plot(roc.fpr[keep], roc.tpr[keep], label=label)
    axis.set_xscale("log")
    axis.set_xlabel("false accept rate (impostor pairs accepted)")
    axis.set_ylabel("true accept rate")
    axis.set_title("ROC, cosine similarity, held-out identities")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(loc="lower right")
    _save_figure(figure, path)


def plot_training(history: Sequence[Mapping[str, Any]], path: Path) -> None:
    """Loss, learning rate and each evaluation set's 10-fold accuracy, per epoch."""
    epochs = [r["epoch"] for r in history]
    figure, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    axes[0].plot(epochs, [r["loss"] for r in history], marker="o")
    axes[0].set_title("training loss")
    axes[1].plot(epochs, [r["lr"] for r in history], marker="o")
    axes[1].set_yscale("log")
    axes[1].set_title("learning rate (end of epoch)")
    names = sorted({key.removesuffix("/accuracy") for r in history for key in r if key.endswith("/accuracy")})
    for name in names:
        accuracy = [100 * r[f"{name}/accuracy"] if f"{name}/accuracy" in r else float("nan") for r in history]
        axes[2].plot(epochs, accuracy, marker="o", label=name)
    if names:
        axes[2].legend(loc="lower right")
    axes[2].set_title("verification 10-fold accuracy (%)")
    for axis in axes:
        axis.set_xlabel("epoch")
        axis.grid(True, alpha=0.3)
    _save_figure(figure, path)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
