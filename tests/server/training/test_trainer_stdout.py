"""Without progress bars the trainer still shows it is alive: a stdout line per log step and per epoch."""

from __future__ import annotations

import re

from nptface.server.training.config import load_config
from nptface.server.training.trainer import train_from_config

TINY = [
    "data.identities=8",
    "data.images_per_identity=8",
    "model.width=0.25",
    "model.input_size=32",
    "model.embedding_dim=32",
    "head.params={k=3, delta=1.0, r=1.0}",
    "optim.epochs=2",
    "optim.batch_size=16",
    "optim.milestones=[1.0]",
    "log.every_steps=2",
    "checkpoint.every_steps=1000",
    "device.cpu_threads=1",
    'eval.sets=[{kind="synthetic", name="heldout", identities=4, images_per_identity=3}]',
    'run.name="quiet"',
]


def test_a_run_without_progress_bars_prints_each_log_step_and_epoch(tmp_path, capsys):
    config = load_config("synthetic-quick", [*TINY, "log.progress=false", f'run.output_dir="{tmp_path.as_posix()}"'])
    train_from_config(config, tmp_path / "run")
    lines = capsys.readouterr().out.splitlines()
    steps = [
        line
        for line in lines
        if re.fullmatch(
            r"\[quiet\] step \d+/8 epoch [\d.]+: loss [\d.]+, lr [\d.e-]+, "
            r"\d+ img/s, batch spread [\d.]+",
            line,
        )
    ]
    assert [int(re.search(r"step (\d+)", line).group(1)) for line in steps] == [2, 4, 6, 8]
    epochs = [line for line in lines if line.startswith("[quiet] epoch ")]
    assert len(epochs) == 2 and all("heldout: accuracy 0." in line or "heldout: accuracy 1." in line for line in epochs)


def test_a_run_with_progress_bars_leaves_stdout_to_the_bar(tmp_path, capsys):
    config = load_config(
        "synthetic-quick",
        [
            *TINY,
            "log.progress=true",
            "optim.epochs=1",
            "optim.milestones=[0.5]",
            f'run.output_dir="{tmp_path.as_posix()}"',
        ],
    )
    train_from_config(config, tmp_path / "run")
    assert "[quiet]" not in capsys.readouterr().out
