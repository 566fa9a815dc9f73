"""Training plots: written as PNGs without touching matplotlib's global state."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from nptface.core.verification import roc_curve
from nptface.server.training.report import plot_roc, plot_training

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_importing_and_plotting_leave_pyplot_and_the_backend_alone(tmp_path):
    code = (
        "import sys, matplotlib; matplotlib.use('svg'); "
        "from nptface.server.training.report import plot_training; "
        "plot_training([{'epoch': 1, 'loss': 1.0, 'lr': 0.1}], __import__('pathlib').Path(sys.argv[1])); "
        "print(matplotlib.get_backend(), 'matplotlib.pyplot' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "t.png")], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["svg", "False"]


def test_training_curves_and_roc_are_written_as_png(tmp_path):
    history = [
        {"epoch": 1, "loss": 2.0, "lr": 0.1, "heldout/accuracy": 0.6},
        {"epoch": 2, "loss": 1.0, "lr": 0.01, "heldout/accuracy": 0.8},
    ]
    plot_training(history, tmp_path / "training.png")
    roc = roc_curve(np.array([0.9, 0.1, 0.8, 0.2, 0.7]), np.array([True, False, True, False, False]))
    plot_roc({"heldout": roc}, tmp_path / "roc.png")
    for name in ("training.png", "roc.png"):
        assert (tmp_path / name).read_bytes().startswith(PNG_SIGNATURE)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["roc.png", "training.png"], "no temporary files left"
